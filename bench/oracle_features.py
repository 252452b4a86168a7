"""A feature store of ground truth: what stage 2 reaches when vision is perfect.

Writes, for every image of a shapes world, one 9-token "patch" feature per grid cell holding the
cell's true contents as one-hot fields (occupied, shape, colour, size) plus the cell's index. Train
stages 1 and 2 on it exactly as on a CLIP store and compare the VQA accuracy per question type:
the gap between the two is what the vision encoder costs; what remains below 100% is the language
model's (and the training budget's) share.

    .venv/bin/python bench/oracle_features.py WORLD STORE
    .venv/bin/mmphi align --data WORLD --features STORE --lm LM --vision CLIP --out A
    .venv/bin/mmphi finetune --data WORLD --features STORE --init A/final --out F
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mmphi.vision.store import FORMAT, VERSION, shard_name, write_index, write_json, write_shard
from mmphi.world.scenes import COLOURS, SHAPES, SIZES, SLOTS

DIM = 32  # 1 occupied + 4 shapes + 6 colours + 2 sizes + 9 cells, padded
IDENTITY = {"encoder": "oracle: ground-truth scene contents", "family": "oracle", "mode": "patch",
            "num_tokens": 9, "feature_dim": DIM}


def cell_features(objects: list[dict]) -> torch.Tensor:
    feats = torch.zeros(9, DIM)
    feats[torch.arange(9), 13 + torch.arange(9)] = 1.0
    for o in objects:
        row, col = SLOTS[o["position"]]
        f = feats[row * 3 + col]
        f[0] = 1.0
        f[1 + SHAPES.index(o["shape"])] = 1.0
        f[5 + list(COLOURS).index(o["colour"])] = 1.0
        f[11 + list(SIZES).index(o["size"])] = 1.0
    return feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("world", type=Path, help="a folder written by `mmphi world`")
    ap.add_argument("store", type=Path, help="feature store folder to create")
    args = ap.parse_args()
    if (args.store / "store.json").exists():
        raise SystemExit(f"{args.store} already holds a feature store")
    args.store.mkdir(parents=True, exist_ok=True)
    write_json(args.store / "store.json", {"format": FORMAT, "version": VERSION, "identity": IDENTITY,
                                           "summary": {"world": str(args.world)}})
    n = 0
    for number, split in enumerate(("train", "val", "test")):
        scenes = json.loads((args.world / split / "scenes.json").read_text())
        feats = torch.stack([cell_features(s["objects"]) for s in scenes])
        write_shard(args.store, shard_name(number), feats, [s["file_name"] for s in scenes])
        n += len(scenes)
    write_index(args.store)
    print(f"{n} images -> {args.store} (9 tokens x {DIM} ground-truth features)")


if __name__ == "__main__":
    main()
