"""What each training verb's plan reads: the model shapes (configs only), the data count, the memory estimate."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmphi.config import ConfigError, build
from mmphi.errors import MmphiError
from mmphi.lm.config import PretrainConfig
from mmphi.mm.config import LORA_TARGETS, AlignConfig, FinetuneConfig
from mmphi.plan import data
from mmphi.plan.estimates import Adapters, Images, Step, clip_memory, pretrain_memory, stage_memory
from mmphi.plan.facts import LMShape, lm_shape, lm_shape_from, patch_features, projector_tensors, vision_shape
from mmphi.plan.memory import Memory
from mmphi.vision.clip_config import ClipConfig

# CLIPConfig's defaults (transformers), for a recipe's model mapping that leaves a field out.
CLIP_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 224, "patch_size": 32}
CLIP_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 8, "max_position_embeddings": 77}


@dataclass
class Planned:
    models: list[str]  # what was read, and from where
    data: data.DataCount
    seq: int  # tokens per example the memory is planned for (the longest batch)
    estimate: Callable[[Step], Memory]
    modality_parts: bool = False  # batches hold one modality: image and text-only examples fill batches apart


def describe_lm(lm: LMShape) -> str:
    return (f"LM: {lm.params() / 1e9:.3f}B params (hidden {lm.hidden}, {lm.layers} layers, {lm.heads} heads, "
            f"intermediate {lm.intermediate}, vocab {lm.vocab:,}; {lm.source})")


def plan_pretrain(cfg: PretrainConfig, recipe: dict) -> Planned:
    lm = lm_shape_from(cfg.model, "the settings' model (PhiConfig fields; PhiConfig's defaults for the rest)")
    models = [describe_lm(lm)]
    if cfg.head == "live":
        models.append("live-vocabulary head: its trained rows counted as the full vocabulary (an upper bound)")
    return Planned(models, data.corpus_windows(cfg.data, cfg.seq_len, cfg.out), cfg.seq_len,
                   lambda step: pretrain_memory(lm, step))


def plan_clip(cfg: ClipConfig, recipe: dict) -> Planned:
    model = {**cfg.model, "vision_config": {**CLIP_VISION, **cfg.model.get("vision_config", {})},
             "text_config": {**CLIP_TEXT, **cfg.model.get("text_config", {})}}
    v, t = model["vision_config"], model["text_config"]
    text_len = t["max_position_embeddings"]
    models = [f"CLIP: vision {v['hidden_size']} wide x {v['num_hidden_layers']} layers, {v['image_size']} px / "
              f"{v['patch_size']} px patches; text {t['hidden_size']} x {t['num_hidden_layers']}, captions of at most "
              f"{text_len} tokens (the settings' model)"]
    return Planned(models, data.caption_images(cfg.data), text_len,
                   lambda step: clip_memory(model, step, text_len))


def _features(store: str, vision: str, recipe: dict) -> tuple[int, int, str]:
    """(feature vectors per image, their width, where read): the feature store if it exists, else the encoder."""
    manifest = Path(store) / "store.json"
    if manifest.is_file():
        ident = json.loads(manifest.read_text())["identity"]
        return ident["num_tokens"], ident["feature_dim"], f"the feature store {store}"
    mode = (recipe.get("embed") or {}).get("mode", "patch")
    tower, where = vision_shape(vision)
    tokens, dim = patch_features(tower, mode)
    return tokens, dim, f"{mode} features by {where}; no feature store at {store} yet"


def _stage(lm: LMShape, patches: int, dim: int, kind: str, positions: bool, hidden: int, k: int) -> Images:
    proj = projector_tensors(kind, dim, lm.hidden, patches if positions else 0, hidden, k)
    return Images(patches * k, patches, dim, tuple(proj), hidden or lm.hidden)


def _images_line(images: Images, kind: str, where: str) -> str:
    return (f"images: {images.tokens} LM positions each from {images.patches} x {images.dim} features, projector "
            f"{kind} of {sum(images.projector) / 1e6:.2f}M params ({where})")


def plan_align(cfg: AlignConfig, recipe: dict) -> Planned:
    lm = lm_shape(cfg.lm)
    patches, dim, where = _features(cfg.features, cfg.vision, recipe)
    images = _stage(lm, patches, dim, cfg.projector, cfg.image_positions, cfg.projector_hidden, cfg.tokens_per_feature)
    models = [describe_lm(lm), _images_line(images, cfg.projector, where)]
    if cfg.candidates > 1:
        models.append(f"{cfg.candidates} candidate projectors, trained one after the other (the memory of one)")
    return Planned(models, data.captions(cfg.data), cfg.max_len,
                   lambda step: stage_memory(lm, step, images, cfg.quantize, None))


def _stage_one(cfg: FinetuneConfig, recipe: dict) -> tuple[LMShape, Images, str, str]:
    """The LM and projector stage 2 starts from: the stage-1 folder, or (not made yet) the recipe's align."""
    spec_file = Path(cfg.init) / "mmphi.json"
    if spec_file.is_file():
        spec = json.loads(spec_file.read_text())
        local = Path(cfg.init) / spec["lm"]
        lm = lm_shape(str(local) if local.exists() else spec["lm"])
        p = spec["projector"]
        k = p.get("tokens_per_feature", 1)
        images = Images(spec["image_tokens"], spec["image_tokens"] // k, p["in_dim"],
                        tuple(projector_tensors(p["kind"], p["in_dim"], p["out_dim"], p.get("positions", 0),
                                                p.get("hidden", 0), k)), p.get("hidden") or p["out_dim"])
        return lm, images, p["kind"], f"the stage-1 folder {cfg.init}"
    try:
        align = build(AlignConfig, recipe.get("align") or {}, {"data": "-", "features": cfg.features})
    except ConfigError as err:
        raise MmphiError(f"no stage-1 folder at {cfg.init} (its mmphi.json) to plan from, and the recipe's align "
                         f"section does not say which LM and vision encoder stage 1 will use: {err}") from None
    lm = lm_shape(align.lm)
    patches, dim, where = _features(cfg.features, align.vision, recipe)
    images = _stage(lm, patches, dim, align.projector, align.image_positions, align.projector_hidden,
                    align.tokens_per_feature)
    return lm, images, align.projector, f"{where}; no stage-1 folder at {cfg.init} yet: the recipe's align settings"


def plan_finetune(cfg: FinetuneConfig, recipe: dict) -> Planned:
    lm, images, kind, where = _stage_one(cfg, recipe)
    targets = tuple(cfg.lora_targets or LORA_TARGETS["phi"])
    lora = Adapters(cfg.lora_r, targets, cfg.lora_dropout)
    models = [describe_lm(lm), _images_line(images, kind, where),
              f"LoRA r={cfg.lora_r} on {','.join(targets)}: {lm.lora_params(cfg.lora_r, list(targets)) / 1e6:.1f}M "
              f"params; LM {'in 4-bit NF4 (QLoRA)' if cfg.quantize else 'in bf16'}"]
    return Planned(models, data.conversations(cfg.data), cfg.max_len,
                   lambda step: stage_memory(lm, step, images, cfg.quantize, lora), cfg.group_by == "modality")


PLANNERS: dict[str, Callable[[Any, dict], Planned]] = {
    "pretrain": plan_pretrain, "clip": plan_clip, "align": plan_align, "finetune": plan_finetune}
