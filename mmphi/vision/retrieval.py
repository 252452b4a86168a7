"""Image -> caption retrieval accuracy of a ``CLIPModel``: the yardstick for a CLIP mmphi trains.

Text pooling (transformers 5.x ``CLIPTextModel``): the text embedding is the final hidden state
at the *first* position whose id equals ``text_config.eos_token_id``; with the legacy value
``eos_token_id == 2`` (old OpenAI configs) it is the position of the *highest* token id instead.
So, for any HF tokenizer (here the project's GPT-2 BPE, which adds no special tokens itself):

- every caption must end with the EOS id and contain no earlier EOS: ``tokenize_captions``
  appends ``text_config.eos_token_id`` (truncating the caption if needed) and checks that the
  model's rule picks exactly that position, raising a clear error if not;
- so ``text_config.eos_token_id`` must be the tokenizer's EOS (50256 = ``<|endoftext|>`` for the
  offline tokenizer) and ``text_config.vocab_size`` must cover the tokenizer (>= 50257);
- padding may reuse the EOS id: only the first EOS is pooled, and the causal text tower never
  lets later (padding) positions influence it; attention masks are built from lengths anyway;
- captions longer than ``text_config.max_position_embeddings`` are truncated (EOS kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import CLIPModel, PreTrainedTokenizerBase

from mmphi.errors import MmphiError

LEGACY_EOS = 2  # configs from before transformers PR #24773 pool at argmax(input_ids)


def tokenize_captions(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], text_config: Any,
                      max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (N, L): captions + EOS, right-padded, masks from lengths."""
    legacy = text_config.eos_token_id == LEGACY_EOS
    eos = tokenizer.eos_token_id if legacy else text_config.eos_token_id
    if eos is None:
        raise MmphiError("the tokenizer has no eos_token_id, which CLIP text pooling needs")
    limit = min(max_length or text_config.max_position_embeddings, text_config.max_position_embeddings)
    rows = []
    for ids in tokenizer(list(captions), add_special_tokens=True)["input_ids"]:
        ids = list(ids)
        if not ids or ids[-1] != eos:
            ids.append(eos)
        rows.append(ids[: limit - 1] + [eos] if len(ids) > limit else ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    lengths = torch.tensor([len(r) for r in rows])
    input_ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)  # (N, L)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()  # (N, L)
    pooled_at = input_ids.argmax(-1) if legacy else (input_ids == eos).int().argmax(-1)  # CLIPTextModel's rule
    wrong = (pooled_at != lengths - 1).nonzero().flatten().tolist()
    if wrong:
        raise MmphiError(f"CLIP would pool caption {wrong[0]} ({captions[wrong[0]]!r}) at position "
                         f"{int(pooled_at[wrong[0]])}, not at its EOS ({int(lengths[wrong[0]]) - 1}): "
                         f"text_config.eos_token_id={text_config.eos_token_id} must be the tokenizer's EOS id "
                         "and must not occur inside a caption")
    if int(input_ids.max()) >= text_config.vocab_size:
        raise MmphiError(f"token id {int(input_ids.max())} >= text_config.vocab_size {text_config.vocab_size}: "
                         "the CLIP text tower does not cover this tokenizer")
    return input_ids, attention_mask


def _pooled(out: Any) -> torch.Tensor:
    # transformers 5.x get_*_features return an output object (projected embedding in pooler_output);
    # 4.x returned the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _pixels(processor: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """A VisionEncoder (``preprocess``) or any HF image processor (``__call__``)."""
    rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
    if hasattr(processor, "preprocess") and hasattr(processor, "identity"):
        return processor.preprocess(rgb)
    return processor(images=rgb, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def embed_images(model: CLIPModel, processor: Any, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
    """(N, projection_dim) L2-normalised image embeddings."""
    device = next(model.parameters()).device
    out = [_pooled(model.get_image_features(pixel_values=_pixels(processor, images[i:i + batch_size]).to(device)))
           for i in range(0, len(images), batch_size)]
    return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)


@torch.no_grad()
def embed_texts(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                batch_size: int = 64) -> torch.Tensor:
    """(N, projection_dim) L2-normalised caption embeddings."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenize_captions(tokenizer, texts[i:i + batch_size], model.config.text_config)
        out.append(_pooled(model.get_text_features(input_ids=ids.to(device), attention_mask=mask.to(device))))
    return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)


def retrieval_accuracy(model: CLIPModel, processor: Any, tokenizer: PreTrainedTokenizerBase,
                       images: Sequence[Image.Image], captions: Sequence[str], batch_size: int = 64) -> dict:
    """Image -> caption retrieval among the given captions; ``captions[i]`` describes ``images[i]``.

    ``processor``: a ``VisionEncoder`` or the CLIP image processor. Identical caption texts are
    merged first (two scenes can share a caption in the shapes world; neither choice would be
    wrong), so retrieval is among the ``n_captions`` distinct texts and chance is 1/n_captions
    for top-1 and min(5, n_captions)/n_captions for top-5 (= 1/n and 5/n when all differ).
    Returns {"top1", "top5", "chance", "chance_top5", "n", "n_captions"}.
    """
    if len(images) != len(captions) or not images:
        raise MmphiError(f"retrieval needs one caption per image, got {len(images)} images and "
                         f"{len(captions)} captions")
    distinct = sorted(set(captions))
    position = {c: i for i, c in enumerate(distinct)}
    target = torch.tensor([position[c] for c in captions])  # (N,) index of each image's caption
    was_training = model.training
    model.eval()
    try:
        img = embed_images(model, processor, images, batch_size)  # (N, P)
        txt = embed_texts(model, tokenizer, distinct, batch_size)  # (C, P)
    finally:
        model.train(was_training)
    k = min(5, len(distinct))
    ranked = (img @ txt.T).topk(k, dim=-1).indices  # (N, k) best captions first
    hits = ranked == target[:, None]
    return {"top1": hits[:, 0].float().mean().item(), "top5": hits.any(-1).float().mean().item(),
            "chance": 1 / len(distinct), "chance_top5": k / len(distinct), "n": len(images),
            "n_captions": len(distinct)}
