"""Feature-store speed, measured side by side in one run.

For two random CLIP vision towers — the tiny recipe's likely shape (96 px, patch 32 -> 9 patch
tokens, hidden 128, 4 layers) and ViT-B/32's shape (224 px, patch 32 -> 49 tokens, hidden 768,
12 layers) — on the train images of a shapes world:

- ``embed``: images/s of ``mmphi.vision.embed.embed`` into a fresh store (encoding phase, and
  end to end including model loading and the weights fingerprint);
- stage-1-style batches: random batches of image keys served from the store (``get_many``)
  versus decoding the same images and running the encoder live, and the ratio.

    .venv/bin/python bench/embed_speed.py                 # both shapes
    .venv/bin/python bench/embed_speed.py --shapes tiny   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from mmphi.vision.config import EmbedConfig
from mmphi.vision.embed import embed, load_image
from mmphi.vision.encoder import VisionEncoder
from mmphi.vision.store import FeatureStore
from mmphi.world.build import build_world
from mmphi.world.config import WorldConfig

SHAPES = {  # vision tower shapes; the text tower is kept minimal (it plays no part here)
    "tiny": dict(image_size=96, patch_size=32, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=512),
    "vit-b/32": dict(image_size=224, patch_size=32, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072),
}


def make_clip(out: Path, vision: dict) -> Path:
    torch.manual_seed(0)
    text = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)).save_pretrained(out)
    size = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)
    return out


def time_batches(fn, batches: list[list[str]]) -> float:
    """Median seconds per batch after one warm-up batch (the median shrugs off other load on a shared machine)."""
    fn(batches[0])
    times = []
    for keys in batches[1:]:
        start = time.perf_counter()
        fn(keys)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_shape(name: str, vision: dict, images: Path, tmp: Path, args: argparse.Namespace) -> dict:
    clip = make_clip(tmp / f"clip-{name.replace('/', '')}", vision)
    store_dir = tmp / f"store-{name.replace('/', '')}"
    with contextlib.redirect_stderr(io.StringIO()):  # keep the table readable: no progress bars
        summary = embed(EmbedConfig(vision=str(clip), images=str(images), out=str(store_dir),
                                    batch_size=args.embed_batch, shard_size=1024))
    store = FeatureStore.open(store_dir)
    encoder = VisionEncoder.from_pretrained(str(clip))
    rng = np.random.default_rng(0)
    keys = store.keys()
    batches = [list(rng.choice(keys, args.batch_size, replace=False)) for _ in range(args.batches + 1)]
    t_store = time_batches(store.get_many, batches)
    t_live = time_batches(lambda ks: encoder.encode([load_image(images / k) for k in ks]), batches)
    size = sum(p.stat().st_size for p in (store_dir / "shards").iterdir())
    return {"shape": name, "tokens": f"{store.num_tokens}x{store.feature_dim}",
            "embed_ips": summary["images_per_s"], "embed_total_ips": summary["encoded"] / summary["total_seconds"],
            "store_ips": args.batch_size / t_store, "live_ips": args.batch_size / t_live,
            "ratio": t_live / t_store, "kb_per_image": size / len(keys) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,vit-b/32", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--scenes", type=int, default=300, help="shapes-world scenes (80%% are train images)")
    parser.add_argument("--batch-size", type=int, default=32, help="stage-1 batch size")
    parser.add_argument("--batches", type=int, default=10, help="timed random batches per method")
    parser.add_argument("--embed-batch", type=int, default=64, help="embed batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (all cores)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure; say how much there was
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.redirect_stderr(io.StringIO()):
            build_world(WorldConfig(out=str(tmp / "world"), scenes=args.scenes, corpus_scenes=0))
        images = tmp / "world" / "train" / "images"
        n = len(list(images.iterdir()))
        for name in args.shapes.split(","):
            rows.append(bench_shape(name, SHAPES[name], images, tmp, args))
    print(f"embed_speed: {n} shapes-world images (96x96 PNG), {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, fp32; stage-1 batches of {args.batch_size} random keys, {args.batches} timed; "
          f"load average before/after {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    head = (f"{'shape':<9} {'tokens':>7} {'embed img/s':>12} {'(end-to-end)':>13} {'store img/s':>12} "
            f"{'live img/s':>11} {'store/live':>11} {'KiB/img':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['shape']:<9} {r['tokens']:>7} {r['embed_ips']:>12.1f} {r['embed_total_ips']:>13.1f} "
              f"{r['store_ips']:>12.0f} {r['live_ips']:>11.1f} {r['ratio']:>10.0f}x {r['kb_per_image']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": n, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
