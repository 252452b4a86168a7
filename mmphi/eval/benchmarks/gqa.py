"""GQA (testdev-balanced) from its official questions file, scored by exact match as LLaVA's GQA evaluation does.

Layout (``--benchmark-dir DIR``, ``--benchmark-split testdev_balanced``)::

    DIR/testdev_balanced_questions.json   {question id: {"imageId", "question", "answer", "types": {"structural",
                                                          "semantic"}, "isBalanced", ...}}
    DIR/images/<imageId>.jpg              (or --benchmark-images FOLDER)

The prediction is lower-cased with its trailing periods removed (LLaVA's conversion for GQA's eval.py),
then must equal the answer. As GQA's eval.py: only balanced questions count; accuracy is reported overall,
for binary and open questions (open = structural type "query") and by structural and semantic type.
"""

from __future__ import annotations

from pathlib import Path

from mmphi.eval.benchmarks.common import (
    SHORT_ANSWER,
    Benchmark,
    BenchmarkError,
    Item,
    check_images,
    images_folder,
    need,
    read_json,
)


def question_file(folder: Path, split: str) -> Path:
    return folder / f"{split}_questions.json"


def gqa_answer(prediction: str) -> str:
    """"Yes." -> "yes"; nothing else changes."""
    return prediction.strip().rstrip(".").lower()


def _groups(q: dict, where: str) -> dict[str, str]:
    types = q.get("types")
    if not isinstance(types, dict):
        return {}
    structural = types.get("structural")
    if structural is None:
        raise BenchmarkError(f"{where} has 'types' without 'structural'")
    groups = {"answer kind": "open" if structural == "query" else "binary", "structural type": str(structural)}
    if types.get("semantic") is not None:
        groups["semantic type"] = str(types["semantic"])
    return groups


def read(folder: Path, split: str, images: Path | None = None, limit: int = 0) -> list[Item]:
    path = question_file(folder, split)
    questions = read_json(path, "the official GQA questions file (a dict from question id to question)")
    if not isinstance(questions, dict):
        raise BenchmarkError(f"{path} must map question ids to questions, got a {type(questions).__name__}")
    folder_images = images_folder(images, folder / "images")
    items = []
    for qid, q in questions.items():
        where = f"{path} question {qid}"
        need(q, ("imageId", "question", "answer"), where)
        if not q.get("isBalanced", True):
            continue
        items.append(Item(qid=str(qid), image=folder_images / f"{q['imageId']}.jpg",
                          question=f"{q['question']}\n{SHORT_ANSWER}", reference=q["answer"],
                          groups=_groups(q, where)))
        if limit and len(items) >= limit:
            break
    check_images(items, folder_images)
    return items


def score(item: Item, prediction: str) -> float:
    return float(gqa_answer(prediction) == item.reference)


BENCHMARK = Benchmark("gqa", "GQA", "testdev_balanced", "testdev_balanced (or val_balanced, ...: "
                      "SPLIT_questions.json)", read, score)
