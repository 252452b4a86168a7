"""Stage-1 loss: one teacher-forced forward pass per batch vs. one LM pass per caption token.

One reference implementation computed the caption loss by running the LM once for every caption
token (on the growing prefix). Both give the same loss; this measures the cost of each, side by
side in one run, on the same batch of image + caption examples (forward + backward):

    .venv/bin/python bench/align_passes.py [MODEL_DIR] [--batch 16] [--json out.json]

MODEL_DIR: a stage-1 output (align's final/); without it, a tiny random model of the tiny recipe's
width is built in a temp folder (cost is what is measured, not quality).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmphi.mm.data import ChatEncoder, collate
from mmphi.mm.loading import load_multimodal

CAPTIONS = ["A small red circle on the left and a large blue square at the top.",
            "A large green triangle in the centre.",
            "A small yellow diamond at the bottom, a large purple circle on the left and a small orange square "
            "on the right."]


class RandomFeatures:
    def __init__(self, n: int, d: int):
        self.n, self.d, self.gen = n, d, torch.Generator().manual_seed(0)

    def __contains__(self, key) -> bool:
        return True

    def get_many(self, keys):
        return torch.randn(len(keys), self.n, self.d, generator=self.gen)


def per_token_loss(model, batch) -> torch.Tensor:
    """The reference way: for each caption token, run the LM on the prefix and score the next token."""
    embeds = model.embed(batch["input_ids"], batch["image_mask"], batch.get("features"))
    labels = batch["labels"]
    losses = []
    for t in range(1, labels.shape[1]):
        rows = (labels[:, t] != -100).nonzero().flatten()
        if len(rows) == 0:
            continue
        out = model.lm(inputs_embeds=embeds[rows, :t], attention_mask=batch["attention_mask"][rows, :t])
        losses.append(F.cross_entropy(out.logits[:, -1].float(), labels[rows, t], reduction="sum"))
    return torch.stack(losses).sum() / (labels != -100).sum()


def timed(fn, model, batch, repeats: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loss = fn(model, batch)
        loss.backward()
        best = min(best, time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return best, float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    model_dir = args.model
    if model_dir is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import make_clip, make_multimodal

        tmp = Path(tempfile.mkdtemp())
        model_dir = str(make_multimodal(tmp, make_clip(tmp / "clip"), max_positions=256, hidden=256))
    model, tok = load_multimodal(model_dir, with_encoder=False)
    model.projector.requires_grad_(True)  # stage 1 trains the projector only
    enc = ChatEncoder(tok, model.image_tokens)
    examples = [enc.encode([("<image>\nDescribe the image briefly.", CAPTIONS[i % len(CAPTIONS)])], f"k{i}")
                for i in range(args.batch)]
    batch = collate(examples, enc.pad_id, RandomFeatures(model.image_tokens, model.spec["projector"]["in_dim"]))
    one_s, one_loss = timed(lambda m, b: m(**b), model, batch, args.repeats)
    per_s, per_loss = timed(per_token_loss, model, batch, args.repeats)
    n_tokens = int((batch["labels"] != -100).sum())
    res = {"model": model_dir, "batch": args.batch, "caption_tokens": n_tokens, "one_pass_s": one_s,
           "per_token_s": per_s, "speedup": per_s / one_s, "one_pass_loss": one_loss, "per_token_loss": per_loss}
    print(f"{model_dir}: batch of {args.batch} captions ({n_tokens} caption tokens + EOS), forward + backward, "
          f"best of {args.repeats}, {torch.get_num_threads()} threads")
    print(f"one teacher-forced pass: {one_s:.3f} s (loss {one_loss:.4f})")
    print(f"one pass per token:      {per_s:.3f} s (loss {per_loss:.4f})")
    print(f"one pass / per token speed-up: {res['speedup']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
