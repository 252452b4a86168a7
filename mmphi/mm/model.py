"""The multimodal model: a causal LM + a projector (+ the vision encoder when images come raw).

Composed as plain attributes (nanoVLM style). Image features are projected and written into
``inputs_embeds`` at the image placeholder positions with one ``masked_scatter`` (after checking
that there are exactly as many placeholders as feature vectors); the LM only ever sees
``inputs_embeds``. The LM head is applied only where the loss is (answer tokens), over the LM's
live vocabulary (see ``mmphi.lm.model``).

Saved directory (``final/`` of stages 1 and 2; what chat / app / serve / eval load)::

    mmphi.json               kind, LM source, projector spec, vision source, template, quantisation
    projector.safetensors    projector weights
    tokenizer files          the LM's tokenizer
    lm/                      the LM's weights when they are local (or merged); else a hub id in mmphi.json
    adapters/                peft LoRA adapters (stage 2, unless merged)
    vision/                  the vision encoder when it is local (so the directory is self-contained)
    audio_projector.safetensors  the audio projector, when the speech stages trained one (mmphi.json "audio":
                             its spec, the speech encoder's identity and source; docs/speech.md)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from mmphi.bundled import resolve_model
from mmphi.errors import MmphiError
from mmphi.lm.model import VocabMap, head_logits, live_vocab
from mmphi.mm.config import LORA_TARGETS
from mmphi.mm.projector import build_projector

if TYPE_CHECKING:
    from peft import PeftModel

FORMAT = "mmphi-multimodal"


class ModelLoadError(MmphiError):
    pass


def base_lm(lm: nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (LoRA layers live inside it, in place)."""
    unwrap = getattr(lm, "get_base_model", None)
    # peft annotates get_base_model as any Module: it is the transformers model it wrapped
    return cast(PreTrainedModel, lm if unwrap is None else unwrap())


def lora_targets(model_type: str, override: list[str] | None = None) -> list[str]:
    if override:
        return override
    if model_type not in LORA_TARGETS:
        raise MmphiError(f"no default LoRA target modules for model type {model_type!r}; "
                         f"pass --lora-targets (known types: {', '.join(LORA_TARGETS)})")
    return LORA_TARGETS[model_type]


class MultimodalLM(nn.Module):
    vocab_ids: torch.Tensor  # a buffer: the live vocabulary's ids (empty when the full vocabulary is live)
    lr_overrides: dict[str, float]  # optional, set by stage 2 (read by mmphi.train.optim)

    def __init__(self, lm: PreTrainedModel | PeftModel, projector: nn.Module, spec: dict[str, Any],
                 encoder: nn.Module | None = None, audio_projector: nn.Module | None = None):
        super().__init__()
        self.lm = lm
        self.projector = projector
        self.audio_projector = audio_projector  # speech encoder features -> LM embeddings (the <audio> route)
        self.encoder = encoder  # only for raw images (inference); training reads the feature store
        self.spec = spec  # what mmphi.json records: projector kind/dims, image_tokens, vision source, system...
        vocab = live_vocab(base_lm(lm))
        self.vocab = VocabMap(vocab)
        self.register_buffer("vocab_ids", vocab if vocab is not None else torch.empty(0, dtype=torch.long),
                             persistent=False)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute the LM's activations in backward (non-reentrant: inputs come as embeddings)."""
        base_lm(self.lm).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ------------------------------------------------------------------ forward
    @property
    def image_tokens(self) -> int:
        return int(self.spec["image_tokens"])

    def embed(self, input_ids: torch.Tensor, image_mask: torch.Tensor, features: torch.Tensor | None,
              audio_mask: torch.Tensor | None = None, audio_features: torch.Tensor | None = None,
              audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with projected image features written at the image placeholder positions, and
        projected speech features (``audio_features`` (n_clips, longest, D), ``audio_lengths`` (n_clips,))
        at the audio ones."""
        embeds = self._embed_image(input_ids, image_mask, features)
        if audio_features is None or audio_mask is None or audio_lengths is None:
            if audio_mask is not None and bool(audio_mask.any()):
                raise ValueError(f"{int(audio_mask.sum())} audio placeholder positions but no audio features")
            if self.audio_projector is not None and self.training and torch.is_grad_enabled() and any(
                    p.requires_grad for p in self.audio_projector.parameters()):
                dummy = torch.zeros(1, 1, self.spec["audio"]["projector"]["in_dim"], device=embeds.device)
                return embeds + 0.0 * self.audio_projector(dummy.to(self._audio_dtype)).sum().to(embeds.dtype)
            return embeds
        if self.audio_projector is None:
            raise ValueError("audio features were given but this model has no audio projector")
        proj = self.audio_projector(audio_features.to(self._audio_dtype))  # (n_clips, longest, C)
        valid = torch.arange(proj.shape[1], device=proj.device)[None] < audio_lengths.to(proj.device)[:, None]
        tokens = proj[valid]  # (sum of lengths, C): clip after clip, each in time order
        if int(audio_mask.sum()) != tokens.shape[0]:
            raise ValueError(f"{int(audio_mask.sum())} audio placeholder positions but {tokens.shape[0]} audio tokens")
        return embeds.masked_scatter(audio_mask.unsqueeze(-1), tokens.to(embeds.dtype))

    @property
    def _audio_dtype(self) -> torch.dtype:
        assert self.audio_projector is not None
        return next(self.audio_projector.parameters()).dtype

    def _embed_image(self, input_ids: torch.Tensor, image_mask: torch.Tensor,
                     features: torch.Tensor | None) -> torch.Tensor:
        embeds = self.lm.get_input_embeddings()(input_ids)  # (B, T, C)
        n_slots = int(image_mask.sum())
        # (n_images, N * tokens_per_feature, C): the projector's output says how many tokens an image takes.
        proj = None if features is None else self.projector(features.to(self.projector_dtype))
        n_tokens = 0 if proj is None else proj.shape[0] * proj.shape[1]
        if n_slots != n_tokens:
            raise ValueError(f"{n_slots} image placeholder positions but {n_tokens} image tokens from the features")
        if proj is None and self._projector_trains():
            return embeds + 0.0 * self._idle_projector(embeds)
        if proj is None or n_tokens == 0:
            return embeds
        # Row-major order: the k-th image of the batch fills the k-th run of placeholders.
        return embeds.masked_scatter(image_mask.unsqueeze(-1), proj.to(embeds.dtype))

    def _projector_trains(self) -> bool:
        return (self.training and torch.is_grad_enabled() and "projector" in self.spec
                and any(p.requires_grad for p in self.projector.parameters()))

    def _idle_projector(self, embeds: torch.Tensor) -> torch.Tensor:
        """A text-only training batch (modality grouping makes whole batches of them) still runs the projector,
        on one zero image, into a term of weight 0: every process's backward then reaches every trainable
        parameter, which DDP waits for (as LLaVA does with a dummy image)."""
        p = self.spec["projector"]
        patches = self.image_tokens // p.get("tokens_per_feature", 1)
        dummy = torch.zeros(1, patches, p["in_dim"], dtype=self.projector_dtype, device=embeds.device)
        return self.projector(dummy).sum().to(embeds.dtype)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def hidden_states(self, input_ids, attention_mask, image_mask, features, **audio) -> torch.Tensor:
        embeds = self.embed(input_ids, image_mask, features, **audio)
        body = base_lm(self.lm).get_decoder()
        return body(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state  # (B, T, C)

    def forward(self, input_ids, attention_mask, image_mask, labels, features=None, loss_weights=None,
                audio_mask=None, audio_features=None, audio_lengths=None) -> torch.Tensor:
        """Loss over the answer tokens (labels != -100), computing logits only there: the mean over
        tokens, or with ``loss_weights`` (1 / answer length per token) the mean over answers."""
        hidden = self.hidden_states(input_ids, attention_mask, image_mask, features, audio_mask=audio_mask,
                                    audio_features=audio_features, audio_lengths=audio_lengths)
        targets = labels[:, 1:]  # position t predicts token t+1
        where = targets != -100
        picked = hidden[:, :-1][where]  # (M, C): only positions that carry loss
        vocab = self.vocab_ids if self.vocab.ids is not None else None
        logits = head_logits(base_lm(self.lm), picked, vocab)  # (M, V or K)
        if loss_weights is None:
            return F.cross_entropy(logits.float(), self.vocab.targets(targets[where]), ignore_index=-100)
        per_token = F.cross_entropy(logits.float(), self.vocab.targets(targets[where]), ignore_index=-100,
                                    reduction="none")
        w = loss_weights[:, 1:][where]
        return (per_token * w).sum() / w.sum().clamp(min=1e-9)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str | Path, tokenizer, lm_source: str, vision_source: str | None) -> None:
        """Write the directory described in the module doc. ``lm_source``: where the LM weights come from."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.projector.state_dict().items()},
                  tmp / "projector.safetensors")
        if self.audio_projector is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.audio_projector.state_dict().items()},
                      tmp / "audio_projector.safetensors")
        tokenizer.save_pretrained(tmp)
        spec = dict(self.spec)
        spec["lm"] = _copy_or_reference(lm_source, tmp / "lm")
        if vision_source:
            spec["vision"] = {**spec.get("vision", {}), "source": _copy_or_reference(vision_source, tmp / "vision")}
        if hasattr(self.lm, "peft_config"):
            self.lm.save_pretrained(str(tmp / "adapters"))
            spec["adapters"] = "adapters"
        (tmp / "mmphi.json").write_text(json.dumps({"format": FORMAT, **spec}, indent=1))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)


def _copy_or_reference(source: str, dest: Path) -> str:
    """Local model folders (and bundled models) are copied in (self-contained output); hub ids are referenced."""
    src = Path(resolve_model(source))
    if src.is_dir():
        if (src / "mmphi.json").exists() and (src / "lm").is_dir():  # a stage-1 output: take its LM
            src = src / "lm"
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.tmp"))
        return dest.name
    return source


def read_spec(path: str | Path) -> dict[str, Any]:
    spec_file = Path(path) / "mmphi.json"
    if not spec_file.exists():
        raise ModelLoadError(f"{path} is not an mmphi multimodal model directory (no mmphi.json)")
    spec = json.loads(spec_file.read_text())
    if spec.get("format") != FORMAT:
        raise ModelLoadError(f"{spec_file} has format {spec.get('format')!r}, expected {FORMAT!r}")
    return spec


def resolve(path: str | Path, ref: str) -> str:
    """A source recorded in mmphi.json: a folder inside the model directory, or a hub id / absolute path."""
    local = Path(path) / ref
    return str(local) if local.exists() else ref


def load_projector(path: str | Path, spec: dict[str, Any], file: str = "projector.safetensors") -> nn.Module:
    """The projector of the model folder ``path`` (``file``: another weights file in it, e.g. a candidate's)."""
    p = spec["projector"]
    projector = build_projector(p["kind"], p["in_dim"], p["out_dim"], p.get("positions", 0), p.get("hidden", 0),
                                p.get("tokens_per_feature", 1))
    weights = Path(path) / file
    try:
        projector.load_state_dict(load_file(weights))
    except Exception as err:
        raise ModelLoadError(f"cannot load projector weights {weights}: {err}") from err
    return projector
