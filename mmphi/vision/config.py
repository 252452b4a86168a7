"""Settings of ``mmphi embed`` (the recipe's ``embed:`` section). Light module: no torch import."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mmphi.config import check, opt


@dataclass
class EmbedConfig:
    vision: str = opt("runs/clip/final", "vision encoder: hub id (openai/clip-vit-base-patch32) or local "
                                         "directory of a CLIPModel / vision tower with its preprocessor_config.json")
    images: str = opt("runs/world/train/images", "images to embed: an image folder, a COCO captions JSON or a "
                                                 "LLaVA-Instruct JSON")
    image_root: str | None = opt(None, "folder the COCO file_name / LLaVA image fields are relative to; "
                                       "unset = the images/ folder next to the JSON file")
    out: str = opt("runs/features", "feature store folder; rerunning resumes, and new images are appended")
    mode: Literal["patch", "pooled"] = opt("patch", "patch = one layer's patch tokens (CLS dropped); "
                                                    "pooled = the projected image embedding (1 token)")
    layer: int = opt(-2, "patch mode: encoder layer whose hidden states are the features (-2 = penultimate)")
    batch_size: int = opt(64, "images per encoder forward pass")
    shard_size: int = opt(2048, "images per shard file (the unit of resume and of multi-process work)")
    seed: int = opt(0, "random seed (the encoder is frozen; this only pins any stochastic kernels)")
    device: str = opt("auto", "auto = this process's accelerate device (CUDA if present), or cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = opt("auto", "encoder compute dtype; auto = fp16 on CUDA, "
                                                                 "fp32 on CPU (features are stored as fp16)")
    loader_threads: int = opt(2, "threads decoding and preprocessing batches ahead of the encoder; 0 = inline")

    def __post_init__(self) -> None:
        check(bool(self.vision), "vision must name an encoder (hub id or directory)")
        check(bool(self.images), "images must be an image folder or a COCO / LLaVA JSON file")
        check(bool(self.out), "out must be a folder")
        check(self.layer != 0, "layer 0 is the patch embedding, not an encoder layer; use e.g. -2 or 1..L")
        check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        check(self.shard_size > 0, f"shard_size must be > 0, got {self.shard_size}")
        check(self.loader_threads >= 0, f"loader_threads must be >= 0, got {self.loader_threads}")
        check(bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device)),
              f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
