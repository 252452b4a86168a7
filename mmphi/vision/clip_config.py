"""Settings of ``mmphi clip``: a small CLIP trained contrastively on image/caption pairs."""

from __future__ import annotations

from dataclasses import dataclass

from mmphi.config import TrainArgs, check, opt


@dataclass
class ClipConfig(TrainArgs):
    data: str = opt("", "a shapes world folder, or a COCO captions JSON (images in its sibling images/ folder)",
                    required=True)
    val_data: str = opt("", "validation COCO captions JSON (a world brings its own val split)")
    tokenizer: str = opt("offline", "text tokenizer: 'offline' (Phi-2's BPE built locally), a hub id or a folder")
    model: dict = opt({}, "CLIPConfig: {'vision_config': {...}, 'text_config': {...}, 'projection_dim': N} "
                          "(JSON; the keys given override the recipe's)")
    bundle_into: str = opt("", "also write final/'s vision tower as a bundled model folder here (config, weights, "
                                 "image processor, model card, bundle.json), as mmphi/models/tiny-clip was made")
    retrieval_images: int = opt(200, "val images used for the image->caption retrieval score")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.data), "data is required (--data)")
        check(self.retrieval_images >= 2, "retrieval_images must be >= 2")
