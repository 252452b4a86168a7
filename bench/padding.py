"""Padding of stage-2 batches on a LLaVA-Instruct-like length sample: grouped (by modality and length) vs. unsorted.

Batches are padded to their own longest example, so the padding share (padding tokens / all tokens over an
epoch's batches) depends only on which examples share a batch: this script forms an epoch of batches with
``mmphi.mm.sampling.BatchOrder`` in every mode, side by side on the same examples, and prints the shares and
their ratio for several shapes (batch per process x processes).

The sample is synthetic and deterministic (``llava_like_lengths``): token lengths shaped like LLaVA-Instruct-
150K in the phi2 recipe's template, not read from the real file (which is not on this machine):

* 90% image records, of LLaVA-Instruct's three kinds in its proportions (58k conversation, 23k detailed
  description, 77k complex reasoning of 158k): conversations of 1 + Poisson(2) rounds (at most 12), questions
  ~ lognormal(median 12 tokens, sigma 0.4), answers ~ lognormal(40, 0.9); descriptions one round, answer
  ~ lognormal(110, 0.3); reasoning one round, question ~ lognormal(20, 0.4), answer ~ lognormal(150, 0.35);
* 10% text-only records (ShareGPT-like, as in LLaVA-1.5's mix): 1 + Poisson(1.5) rounds, questions
  ~ lognormal(40, 1.0), answers ~ lognormal(150, 0.9);
* every record: a 30-token system line, 7 template tokens per round (``USER:``, ``ASSISTANT:``, EOS), plus
  ``--image-tokens`` (576: CLIP ViT-L/14-336) for an image record; whole rounds are kept while they fit
  ``--max-len`` (2048) and a first round that does not fit is cut, as ``ChatEncoder`` does.

Text tokens of image records come out at a median of ~200 (the printed percentiles say exactly), totals
with the image at ~780, a tail to 2048.

    .venv/bin/python bench/padding.py [--records 20000] [--image-tokens 576] [--max-len 2048] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mmphi from this checkout when run by path

from mmphi.mm.sampling import GROUPINGS, BatchOrder, padding_share  # noqa: E402

SYSTEM, PER_ROUND = 30, 7
KINDS = {"conversation": 58, "detail": 23, "reasoning": 77}  # thousands of records in LLaVA-Instruct-150K
SHAPES = ((4, 1), (4, 8), (16, 1), (16, 8), (32, 1))  # (batch per process, processes); phi2 finetune: 4


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return np.maximum(1, np.round(rng.lognormal(np.log(median), sigma, n))).astype(int)


def _rounds(rng: np.random.Generator, kind: str) -> list[tuple[int, int]]:
    """(question, answer) token counts of one record's rounds."""
    if kind == "conversation":
        n = min(12, 1 + rng.poisson(2))
        return list(zip(_lognormal(rng, 12, 0.4, n), _lognormal(rng, 40, 0.9, n), strict=True))
    if kind == "detail":
        return [(int(_lognormal(rng, 10, 0.2, 1)[0]), int(_lognormal(rng, 110, 0.3, 1)[0]))]
    if kind == "reasoning":
        return [(int(_lognormal(rng, 20, 0.4, 1)[0]), int(_lognormal(rng, 150, 0.35, 1)[0]))]
    n = 1 + rng.poisson(1.5)  # text-only
    return list(zip(_lognormal(rng, 40, 1.0, n), _lognormal(rng, 150, 0.9, n), strict=True))


def _fit(rounds: list[tuple[int, int]], image: int, max_len: int) -> int:
    """The encoded length: whole rounds while they fit, the first one cut to ``max_len`` (ChatEncoder)."""
    total = SYSTEM + image
    for i, (q, a) in enumerate(rounds):
        step = q + a + PER_ROUND
        if total + step > max_len:
            return total if i else max_len
        total += step
    return total


def llava_like_lengths(records: int = 20000, image_tokens: int = 576, max_len: int = 2048, text_only: float = 0.1,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, has_image) of a deterministic LLaVA-Instruct-like sample (module doc)."""
    rng = np.random.default_rng(seed)
    names, weights = list(KINDS), np.array(list(KINDS.values()), float)
    images = rng.random(records) >= text_only
    kinds = rng.choice(len(names), size=records, p=weights / weights.sum())
    lengths = np.array([_fit(_rounds(rng, names[k] if img else "text"), image_tokens if img else 0, max_len)
                        for k, img in zip(kinds, images, strict=True)])
    return lengths, images


def measure(lengths: np.ndarray, images: np.ndarray, size: int, world: int, megabatch: int = 32,
            seed: int = 0) -> dict[str, float]:
    """Padding share of one epoch in every grouping mode, each process padding its own share."""
    out = {}
    for mode in GROUPINGS:
        order = BatchOrder(lengths, seed, mode, megabatch, images)
        out[mode] = padding_share(lengths, order.epoch(0, size * world), size, world)
    return out


def describe(lengths: np.ndarray, images: np.ndarray, image_tokens: int) -> dict:
    pct = (10, 50, 90, 99, 100)

    def percentiles(x: np.ndarray) -> dict[str, int]:
        return dict(zip(map(str, pct), np.percentile(x, pct).round().astype(int).tolist(), strict=True)) if len(x) \
            else {}

    return {"records": len(lengths), "text_only": int((~images).sum()),
            "image_text_tokens": percentiles(lengths[images] - image_tokens),
            "image_total": percentiles(lengths[images]), "text_only_total": percentiles(lengths[~images])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--image-tokens", type=int, default=576, help="576: CLIP ViT-L/14-336; 49: ViT-B/32")
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--megabatch", type=int, default=32, help="global micro-batches per length-sorted mega-batch")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    lengths, images = llava_like_lengths(args.records, args.image_tokens, args.max_len)
    dist = describe(lengths, images, args.image_tokens)
    print(f"{dist['records']:,} records ({dist['text_only']:,} text-only); percentiles 10/50/90/99/100 of tokens:")
    for key, label in (("image_text_tokens", "image records, text only"), ("image_total", "image records, total"),
                       ("text_only_total", "text-only records")):
        print(f"  {label:26s} " + " / ".join(str(v) for v in dist[key].values()))
    rows = []
    print(f"\n{'batch x processes':>18s} {'modality':>9s} {'length':>9s} {'unsorted':>9s} {'unsorted/modality':>18s}")
    for size, world in SHAPES:
        share = measure(lengths, images, size, world, args.megabatch)
        ratio = share["none"] / share["modality"] if share["modality"] else float("inf")
        rows.append({"batch_size": size, "processes": world, **share, "ratio": ratio})
        print(f"{f'{size} x {world}':>18s} {share['modality'] * 100:8.1f}% {share['length'] * 100:8.1f}% "
              f"{share['none'] * 100:8.1f}% {ratio:17.1f}x")
    print("(padding tokens / all tokens over one epoch's batches; each process pads its share to its own longest)")
    result = {"command": " ".join(["bench/padding.py", *(argv if argv is not None else sys.argv[1:])]),
              "distribution": dist, "megabatch": args.megabatch, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
