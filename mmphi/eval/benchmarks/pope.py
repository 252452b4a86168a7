"""POPE (object hallucination) from its official COCO files, scored as POPE's own evaluation does.

Layout (``--benchmark-dir DIR``, ``--benchmark-split random,popular,adversarial``)::

    DIR/coco_pope_random.json        JSON lines: {"question_id", "image", "text", "label": "yes" | "no"}
    DIR/coco_pope_popular.json
    DIR/coco_pope_adversarial.json
    DIR/val2014/COCO_val2014_000000310196.jpg    (or --benchmark-images FOLDER)

An answer is "no" when its first sentence holds the word "no", "No" or "not", else "yes". Per split:
accuracy, precision, recall and F1 of "yes", and the share of "yes" answers; overall, the mean of the
splits' figures (the one POPE number papers quote is usually the mean F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmphi.eval.benchmarks.common import (
    SHORT_ANSWER,
    Benchmark,
    BenchmarkError,
    Item,
    check_images,
    images_folder,
    need,
    read_json_lines,
)

SPLITS = ("random", "popular", "adversarial")


def question_file(folder: Path, split: str) -> Path:
    return folder / f"coco_pope_{split}.json"


def pope_answer(prediction: str) -> str:
    """"No, there is not." -> "no"; "Yes." -> "yes"; anything without no/not -> "yes" (as POPE counts it)."""
    first = prediction.split(".")[0].replace(",", "")
    words = first.split(" ")
    return "no" if "no" in words or "No" in words or "not" in words else "yes"


def read(folder: Path, split: str, images: Path | None = None, limit: int = 0) -> list[Item]:
    """Each comma-separated split's questions (the first ``limit`` of each), grouped by split."""
    folder_images = images_folder(images, folder / "val2014")
    items = []
    for name in [s.strip() for s in split.split(",") if s.strip()]:
        path = question_file(folder, name)
        lines = read_json_lines(path, f"an official POPE file (splits: {', '.join(SPLITS)})")
        for i, q in enumerate(lines[:limit] if limit else lines):
            need(q, ("question_id", "image", "text", "label"), f"{path} line {i + 1}")
            if q["label"] not in ("yes", "no"):
                raise BenchmarkError(f"{path} line {i + 1}: label must be 'yes' or 'no', got {q['label']!r}")
            items.append(Item(qid=f"{name}/{q['question_id']}", image=folder_images / q["image"],
                              question=f"{q['text']}\n{SHORT_ANSWER}", reference=q["label"],
                              groups={"split": name}))
    check_images(items, folder_images)
    return items


def score(item: Item, prediction: str) -> float:
    return float(pope_answer(prediction) == item.reference)


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0  # POPE's script divides by zero here; 0 is what it would mean


def binary_metrics(labels: Sequence[str], answers: Sequence[str]) -> dict:
    """Accuracy, precision, recall, F1 (positive class "yes"), yes-ratio and the four counts."""
    pairs = list(zip(labels, answers, strict=True))
    tp = sum(lab == "yes" and ans == "yes" for lab, ans in pairs)
    fp = sum(lab == "no" and ans == "yes" for lab, ans in pairs)
    tn = sum(lab == "no" and ans == "no" for lab, ans in pairs)
    fn = sum(lab == "yes" and ans == "no" for lab, ans in pairs)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"accuracy": _ratio(tp + tn, len(pairs)), "precision": precision, "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall), "yes_ratio": _ratio(tp + fp, len(pairs)),
            "n": len(pairs), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def summarise(items: Sequence[Item], predictions: Sequence[str]) -> dict:
    splits: dict[str, dict] = {}
    for name in dict.fromkeys(it.groups["split"] for it in items):
        picked = [(it.reference, pope_answer(p)) for it, p in zip(items, predictions, strict=True)
                  if it.groups["split"] == name]
        splits[name] = binary_metrics([lab for lab, _ in picked], [ans for _, ans in picked])
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    overall = {k: sum(s[k] for s in splits.values()) / len(splits) for k in keys} if splits else {}
    return {"overall": {**overall, "n": len(items)}, "by": {"split": splits}}


BENCHMARK = Benchmark("pope", "POPE", ",".join(SPLITS), "random, popular, adversarial (comma-separated)",
                      read, score, summarise=summarise)
