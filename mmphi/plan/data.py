"""How much data a plan covers: records counted in the files when they are present (never tokenised)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataCount:
    """Examples per epoch (None: unknown) and a sentence saying what was counted where."""

    examples: int | None
    text_only: int
    what: str


def world_file(data: str, name: str) -> Path:
    """The training file of a shapes world folder (``train/NAME``), or ``data`` itself."""
    folder = Path(data)
    return folder / "train" / name if (folder / "world.json").exists() else folder


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        return err


def captions(data: str) -> DataCount:
    """COCO captions: one example per caption (stage 1)."""
    path = world_file(data, "captions.json")
    if not path.is_file():
        return DataCount(None, 0, f"unknown (no captions file at {path})")
    coco = _read(path)
    if isinstance(coco, Exception) or not isinstance(coco, dict) or "annotations" not in coco:
        return DataCount(None, 0, f"unknown ({path} is not COCO captions JSON)")
    return DataCount(len(coco["annotations"]), 0, f"{path}: {len(coco['annotations']):,} captions of "
                                                  f"{len(coco.get('images', [])):,} images")


def caption_images(data: str) -> DataCount:
    """COCO captions: one example per captioned image (CLIP)."""
    count = captions(data)
    path = world_file(data, "captions.json")
    if count.examples is None:
        return count
    coco = _read(path)
    images = len({a["image_id"] for a in coco["annotations"]})
    return DataCount(images, 0, f"{path}: {images:,} captioned images")


def conversations(data: str) -> DataCount:
    """LLaVA-Instruct records: one example each (stage 2); those without an image counted apart."""
    path = world_file(data, "instruct.json")
    if not path.is_file():
        return DataCount(None, 0, f"unknown (no conversations file at {path})")
    records = _read(path)
    if isinstance(records, Exception) or not isinstance(records, list):
        return DataCount(None, 0, f"unknown ({path} is not a LLaVA-Instruct JSON list)")
    text_only = sum(1 for r in records if isinstance(r, dict) and r.get("image") is None)
    return DataCount(len(records), text_only, f"{path}: {len(records):,} records ({text_only:,} text-only)")


def corpus_windows(data: str, seq_len: int, out: str = "") -> DataCount:
    """Stage 0: a prepared corpus (meta.json) holds train_tokens; an epoch is that many tokens of windows. Text
    or a world is tokenised into the run's data/ at the start: a previous start there has counted it."""
    meta = Path(data) / "meta.json"
    if not meta.is_file() and out and (Path(out) / "data" / "meta.json").is_file():
        meta = Path(out) / "data" / "meta.json"
    if not meta.is_file():
        kind = "a shapes world" if (Path(data) / "world.json").exists() else "text not yet tokenised"
        return DataCount(None, 0, f"unknown ({data}: {kind}; `mmphi corpus` counts its tokens)")
    info = _read(meta)
    tokens = info.get("train_tokens") if isinstance(info, dict) else None
    if not isinstance(tokens, int):
        return DataCount(None, 0, f"unknown ({meta} has no train_tokens)")
    return DataCount(tokens // seq_len, 0, f"{meta}: {tokens:,} train tokens = {tokens // seq_len:,} windows "
                                           f"of {seq_len}")
