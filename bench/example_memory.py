"""Host memory of stages 1-2's encoded examples: Python lists per example (before) vs. ``ExampleSet`` (after).

Stages 1 and 2 encode their whole data set up front, in every process. Both forms are built side by side in one
run, through the same ``caption_examples`` / ``llava_examples`` and the same ``ChatEncoder`` (Phi-2's byte-level
BPE ids, the phi2 recipe's system line and ``max_len``s), on a deterministic sample in the official layouts:

* COCO 2017 captions: five captions per image of 8-16 words (COCO train2017 averages ~10.5), 15% lower-cased
  with trailing whitespace as some real ones are; one example per caption, as stage 1 makes them;
* LLaVA-Instruct-150K records with ``bench/padding.py``'s length model (its three record kinds in their
  proportions, question and answer token counts; ~1 token per word here), ``<image>`` first or last.

"before" holds what the encoder returns (``list[Example]``: four Python lists per example), as mmphi did until
``ExampleSet``; "after" holds the same examples in a few numpy arrays. Memory is what ``tracemalloc`` counts as
still allocated once the examples are built (numpy reports its buffers to it), per example and scaled to COCO
train2017 (591,753 captions) and LLaVA-Instruct-150K (157,712 records) per process. Also printed: build time,
the time to rebuild a batch of 32 examples for ``collate``, and that every example reads back identical.

    .venv/bin/python bench/example_memory.py [--captions 20000] [--records 5000] [--image-tokens 576 49] [--json F]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # mmphi from this checkout when run by path
sys.path.insert(0, str(HERE))

import padding  # noqa: E402  (bench/padding.py: the LLaVA-Instruct-like length model)

from mmphi.config import load_recipe  # noqa: E402
from mmphi.mm import data  # noqa: E402
from mmphi.tokenizer import build_offline_tokenizer  # noqa: E402

FULL = {"captions": 591_753, "records": 157_712}  # COCO train2017 captions, LLaVA-Instruct-150K records
WORDS = [
    "a", "man", "woman", "person", "people", "dog", "cat", "bus", "train", "table", "plate", "pizza", "street",
    "car", "truck", "sign", "tree", "grass", "field", "water", "beach", "wave", "surfboard", "kitchen", "room",
    "bed", "couch", "window", "building", "city", "road", "sidewalk", "bike", "motorcycle", "horse", "elephant",
    "giraffe", "zebra", "bird", "sky", "snow", "ski", "skateboard", "boy", "girl", "child", "player", "ball",
    "tennis", "racket", "baseball", "bat", "frisbee", "umbrella", "clock", "phone", "laptop", "computer", "desk",
    "chair", "food", "sandwich", "bowl", "cup", "red", "white", "blue", "green", "black", "yellow", "small",
    "large", "big", "old", "young", "two", "three", "several", "standing", "sitting", "riding", "holding",
    "walking", "playing", "eating", "looking", "next", "to", "on", "in", "of", "with", "near", "the", "top",
    "front", "side", "down", "up"
]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n)))


def write_coco(path: Path, captions: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    images = [{"id": 9 + 7919 * k, "file_name": f"{9 + 7919 * k:012d}.jpg"} for k in range(-(-captions // 5))]
    anns = []
    for n in range(captions):
        text = _words(rng, rng.randint(8, 16)).capitalize() + "."
        if rng.random() < 0.15:
            text = text.lower() + rng.choice([" ", "\n", "  "])
        anns.append({"image_id": images[n // 5]["id"], "id": 37 + 3 * n, "caption": text})
    rng.shuffle(anns)
    path.write_text(json.dumps({"images": images, "annotations": anns}))


def write_llava(path: Path, records: int, seed: int = 0) -> None:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    names, weights = list(padding.KINDS), np.array(list(padding.KINDS.values()), float)
    out = []
    for k in range(records):
        kind = names[nrng.choice(len(names), p=weights / weights.sum())]
        conv = []
        for r, (q, a) in enumerate(padding._rounds(nrng, kind)):
            question = _words(rng, int(q)).capitalize() + "?"
            if r == 0:
                question = f"<image>\n{question}" if k % 2 else f"{question}\n<image>"
            conv += [{"from": "human", "value": question}, {"from": "gpt", "value": _words(rng, int(a)) + "."}]
        out.append({"id": f"{k:012d}", "image": f"{k:012d}.jpg", "conversations": conv})
    path.write_text(json.dumps(out))


class ListSet(list):
    """The form before ``ExampleSet``: the encoder's ``Example``s in a list."""

    add = list.append

    def freeze(self):
        return self


def held(build) -> tuple[object, int, float]:
    """(what ``build()`` returns, bytes it still holds, seconds)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    result = build()
    seconds = time.perf_counter() - t0
    gc.collect()
    nbytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return result, nbytes, seconds


def batch_seconds(examples, rounds: int = 50, size: int = 32) -> float:
    """Seconds to take a batch of ``size`` random examples out of the set (what each step hands ``collate``)."""
    rng = random.Random(0)
    picks = [[rng.randrange(len(examples)) for _ in range(size)] for _ in range(rounds)]
    t0 = time.perf_counter()
    for idx in picks:
        [examples[i] for i in idx]
    return (time.perf_counter() - t0) / rounds


def measure(kind: str, path: Path, enc) -> dict:
    def build(form):
        original = data.ExampleSet
        data.ExampleSet = form  # type: ignore[misc, assignment]
        try:
            return data.caption_examples(path, enc) if kind == "captions" else data.llava_examples(path, enc)[0]
        finally:
            data.ExampleSet = original  # type: ignore[misc]

    before, before_bytes, before_s = held(lambda: build(ListSet))
    after, after_bytes, after_s = held(lambda: build(data.ExampleSet))
    n = len(after)
    same = n == len(before) and all(after[i] == before[i] for i in range(n))
    tokens = int(sum(len(e) for e in before))
    return {"examples": n, "tokens": tokens, "identical": same,
            "before_bytes": before_bytes, "after_bytes": after_bytes, "ratio": before_bytes / after_bytes,
            "before_build_s": before_s, "after_build_s": after_s,
            "before_batch_ms": 1000 * batch_seconds(before), "after_batch_ms": 1000 * batch_seconds(after),
            "full_before_gib": before_bytes / n * FULL[kind] / 2**30,
            "full_after_gib": after_bytes / n * FULL[kind] / 2**30}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=20000)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--image-tokens", type=int, nargs="+", default=[576, 49], help="576: ViT-L/14-336; 49: ViT-B/32")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    recipe = load_recipe("phi2")
    tok = build_offline_tokenizer()
    results: dict = {"settings": vars(args), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"captions": Path(tmp) / "captions_train2017.json", "records": Path(tmp) / "llava_instruct_150k.json"}
        write_coco(files["captions"], args.captions)
        write_llava(files["records"], args.records)
        for image_tokens in args.image_tokens:
            for kind, section in (("captions", "align"), ("records", "finetune")):
                enc = data.ChatEncoder(tok, image_tokens, recipe["align"]["system"], recipe[section]["max_len"])
                row = {"kind": kind, "image_tokens": image_tokens, "max_len": enc.max_len,
                       **measure(kind, files[kind], enc)}
                results["rows"].append(row)
    print(f"{'':34s} {'examples':>8s} {'tok/ex':>6s} {'before KiB/ex':>13s} {'after KiB/ex':>12s} {'ratio':>6s} "
          f"{'full set before -> after (GiB/process)':>40s} {'build s before/after':>20s} {'batch ms b/a':>12s} same")
    for r in results["rows"]:
        what = f"{'COCO captions' if r['kind'] == 'captions' else 'LLaVA records'}, {r['image_tokens']} image tokens"
        print(f"{what:34s} {r['examples']:8,d} {r['tokens'] / r['examples']:6.0f} "
              f"{r['before_bytes'] / r['examples'] / 1024:13.2f} {r['after_bytes'] / r['examples'] / 1024:12.2f} "
              f"{r['ratio']:5.1f}x {r['full_before_gib']:19.2f} -> {r['full_after_gib']:5.2f} "
              f"({FULL[r['kind']]:,}) {r['before_build_s']:9.1f} / {r['after_build_s']:4.1f} "
              f"{r['before_batch_ms']:5.2f}/{r['after_batch_ms']:5.2f} {'yes' if r['identical'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
