"""The language model: ``transformers.PhiForCausalLM`` built from a recipe, and a cheap LM head.

With Phi-2's 50,257-id vocabulary the LM head dominates a small model's cost (a hidden-256,
4-layer Phi spends ~4x more FLOPs in the head than in its body). Two exact savings:

* **live vocabulary**: a corpus that uses only K ids needs logits over those K only. Phi's
  ``lm_head`` has a bias, so the ids the corpus never uses are *pinned* to a very negative bias
  in the model itself: its full-vocabulary softmax then equals the K-way softmax, and the model
  stays a plain ``PhiForCausalLM`` that any ``transformers`` code can load and sample from.
* **head where the loss is**: stages 1 and 2 only score answer tokens, so the head is applied to
  those positions only (``head_logits`` with ``positions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from transformers import PhiConfig, PhiForCausalLM, PreTrainedModel

PINNED_BIAS = -1e4  # exp(-1e4) == 0 in fp32/bf16: a pinned id never wins and adds nothing to the softmax


def phi_config(spec: dict, tokenizer) -> PhiConfig:
    """A ``PhiConfig`` from the recipe's ``model`` mapping, with the tokenizer's EOS as BOS/EOS/PAD."""
    spec = dict(spec)
    eos = tokenizer.eos_token_id
    spec.setdefault("bos_token_id", eos)
    spec.setdefault("eos_token_id", eos)
    spec.setdefault("pad_token_id", eos)
    cfg = PhiConfig(**spec)
    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {cfg.vocab_size} is smaller than the tokenizer ({len(tokenizer)} ids)")
    return cfg


def embedding_table(lm: PreTrainedModel) -> torch.nn.Embedding:
    """The LM's input token embeddings (transformers annotates ``get_input_embeddings`` as any Module;
    for the causal LMs mmphi loads it is an ``nn.Embedding``, whose ``weight`` is what is used here)."""
    return cast(torch.nn.Embedding, lm.get_input_embeddings())


def count_params(cfg: PhiConfig) -> dict[str, int]:
    """Parameter counts without allocating weights (meta device)."""
    with torch.device("meta"):
        model = PhiForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    embed = embedding_table(model).weight.numel()
    head = sum(p.numel() for p in model.get_output_embeddings().parameters())
    return {"total": total, "embedding": embed, "head": head, "body": total - embed - head}


def live_vocab(lm: PreTrainedModel) -> torch.Tensor | None:
    """Ids whose head bias is not pinned, or None when the full vocabulary is live."""
    head = lm.get_output_embeddings()
    bias = getattr(head, "bias", None)
    if bias is None:
        return None
    live = torch.nonzero(bias.detach() > PINNED_BIAS / 2).flatten()
    return None if len(live) == bias.numel() else live


def pin_vocab(lm: PreTrainedModel, keep: torch.Tensor) -> None:
    """Make every id outside ``keep`` unreachable by pinning its head bias (see module doc)."""
    head = lm.get_output_embeddings()
    if getattr(head, "bias", None) is None:
        raise ValueError("pinning the vocabulary needs an LM head with a bias (Phi has one)")
    with torch.no_grad():
        mask = torch.ones_like(head.bias, dtype=torch.bool)
        mask[keep.to(head.bias.device)] = False
        head.bias[mask] = PINNED_BIAS


def head_logits(lm: PreTrainedModel, hidden: torch.Tensor, vocab: torch.Tensor | None) -> torch.Tensor:
    """LM-head logits of ``hidden`` (..., C) over ``vocab`` ids only (all ids when None)."""
    head = lm.get_output_embeddings()
    if vocab is None:
        return head(hidden)
    # Works for a plain nn.Linear head; a quantised/LoRA head would need its own path.
    return F.linear(hidden, head.weight[vocab], None if head.bias is None else head.bias[vocab])


@dataclass
class VocabMap:
    """Maps token ids to positions in the live vocabulary (ids outside it map to -100, ignored)."""

    ids: torch.Tensor | None

    def __post_init__(self) -> None:
        self.lookup = None
        if self.ids is not None:
            self.lookup = torch.full((int(self.ids.max()) + 1,), -100, dtype=torch.long)
            self.lookup[self.ids] = torch.arange(len(self.ids))

    def targets(self, ids: torch.Tensor) -> torch.Tensor:
        if self.lookup is None:
            return ids
        lookup = self.lookup.to(ids.device)
        safe = ids.clamp(0, len(lookup) - 1)
        out = lookup[safe]
        return torch.where((ids >= len(lookup)) | (ids < 0), torch.full_like(out, -100), out)


def decoder(lm: PreTrainedModel) -> torch.nn.Module:
    """The transformer body (embeddings + blocks + final norm) without the head."""
    return lm.get_decoder()


class CausalLMLoss(torch.nn.Module):
    """Next-token loss of a causal LM; the module ``fit`` trains in stage 0.

    With a live vocabulary of K ids, training uses *compact* copies of the K live rows of the
    input embedding and of the LM head, so neither the gradients nor AdamW ever touch the
    50,257 - K rows no token uses (on CPU, updating those dominated a small model's step time).
    ``export()`` writes the trained rows back into the plain ``PhiForCausalLM`` (whose other head
    rows stay pinned), which is what is saved.
    """

    vocab_ids: torch.Tensor  # a buffer (registered with a live vocabulary only)

    def __init__(self, lm: PreTrainedModel, vocab: torch.Tensor | None):
        super().__init__()
        self.lm = lm
        self.vocab = VocabMap(vocab)
        if vocab is None:
            return
        embed, head = embedding_table(lm), lm.get_output_embeddings()
        self.register_buffer("vocab_ids", vocab.clone(), persistent=False)
        self.live_embed = torch.nn.Parameter(embed.weight.detach()[vocab].clone())  # (K, C)
        self.live_head = torch.nn.Parameter(head.weight.detach()[vocab].clone())  # (K, C)
        self.live_bias = torch.nn.Parameter(head.bias.detach()[vocab].clone())  # (K,)
        embed.weight.requires_grad_(False)
        head.weight.requires_grad_(False)
        head.bias.requires_grad_(False)
        self.unk = int(self.vocab.targets(torch.tensor([lm.config.eos_token_id]))[0])

    def gradient_checkpointing_enable(self) -> None:
        self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        inp, tgt = ids[:, :-1], ids[:, 1:]  # (B, T)
        body = decoder(self.lm)
        if self.vocab.ids is None:
            hidden = body(input_ids=inp).last_hidden_state  # (B, T, C)
            logits = self.lm.get_output_embeddings()(hidden)  # (B, T, V)
        else:
            compact = self.vocab.targets(inp)
            compact = torch.where(compact < 0, torch.full_like(compact, self.unk), compact)  # unseen ids read as EOS
            hidden = body(inputs_embeds=F.embedding(compact, self.live_embed)).last_hidden_state  # (B, T, C)
            logits = F.linear(hidden, self.live_head, self.live_bias)  # (B, T, K)
        return F.cross_entropy(logits.flatten(0, 1).float(), self.vocab.targets(tgt).flatten(), ignore_index=-100)

    @torch.no_grad()
    def export(self) -> PreTrainedModel:
        """The plain LM with the trained live rows written back (call before saving or sampling)."""
        if self.vocab.ids is not None:
            ids = self.vocab_ids
            embedding_table(self.lm).weight[ids] = self.live_embed.to(self.lm.dtype)
            self.lm.get_output_embeddings().weight[ids] = self.live_head.to(self.lm.dtype)
            self.lm.get_output_embeddings().bias[ids] = self.live_bias.to(self.lm.dtype)
        return self.lm


def train_flops_per_token(cfg: PhiConfig, head_ids: int, seq_len: int) -> float:
    """Model FLOPs of one trained token (forward + backward = 3x forward), the MFU numerator.

    6 x (matmul parameters used) plus the attention score/value products (12 x layers x T x C);
    the input embedding is a lookup, not a matmul, and only ``head_ids`` rows of the head are used.
    """
    counts = count_params(cfg)
    d = cfg.hidden_size
    return 6 * (counts["body"] + head_ids * d) + 12 * cfg.num_hidden_layers * seq_len * d
