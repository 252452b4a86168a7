"""The tiny CLIP's training step with every token-embedding row trainable vs. only the caption ids' rows.

``mmphi clip`` trains the text tower's embedding through ``LiveRowsEmbedding``: the captions use a
few hundred of Phi-2's 50,304 ids, and AdamW need not update the rest. Measured side by side in
one run, alternating the two forms (fresh optimiser each, same model shape, same batches): one
full step (forward, backward, AdamW) of the tiny recipe's CLIP on shapes-world captions.

    .venv/bin/python bench/clip_speed.py [--batch 128] [--steps 8] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from timing import seconds_per_call  # bench/timing.py (scripts run from bench/)
from transformers import CLIPConfig, CLIPModel

from mmphi.config import load_recipe
from mmphi.tokenizer import build_offline_tokenizer
from mmphi.vision.clip_train import LiveRowsEmbedding, caption_vocab
from mmphi.vision.retrieval import tokenize_captions
from mmphi.world.language import captions
from mmphi.world.scenes import sample_scene


def _step_seconds(model: CLIPModel, batch: dict, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model(**batch, return_loss=True).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return seconds_per_call(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128, help="images (and captions) per step (the recipe's)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round and form")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the fastest round of each counts")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = CLIPConfig(**load_recipe("tiny")["clip"]["model"])
    tok = build_offline_tokenizer()
    caps = [captions(sample_scene(rng), rng) for _ in range(args.batch)]
    ids, mask = tokenize_captions(tok, [c[int(rng.integers(len(c)))] for c in caps], cfg.text_config)
    size = cfg.vision_config.image_size
    batch = {"pixel_values": torch.randn(args.batch, 3, size, size), "input_ids": ids, "attention_mask": mask}
    vocab = caption_vocab(tok, caps, cfg.text_config)
    forms = {"all rows": CLIPModel(cfg), "live rows": CLIPModel(cfg)}
    emb = forms["live rows"].text_model.embeddings
    emb.token_embedding = LiveRowsEmbedding(emb.token_embedding, vocab)
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(args.rounds):
        for name, model in forms.items():
            times[name].append(_step_seconds(model, batch, args.steps))
    best = {name: min(t) for name, t in times.items()}
    speedup = best["all rows"] / best["live rows"]
    print(f"tiny-recipe CLIP, batch {args.batch}, {len(vocab)} live ids of {cfg.text_config.vocab_size}; "
          f"best of {args.rounds} rounds of {args.steps} steps")
    for name, sec in best.items():
        print(f"  {name:9s} {sec * 1e3:8.1f} ms per step (forward + backward + AdamW)")
    print(f"speedup: {speedup:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"speedup": speedup, "seconds": best, "all_seconds": times,
                                               "live_ids": len(vocab), "batch": args.batch}, indent=1))


if __name__ == "__main__":
    main()
