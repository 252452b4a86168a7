"""VQAv2 from its official files, scored by the VQA challenge's rules (soft accuracy over 10 annotators).

Layout (``--benchmark-dir DIR``, ``--benchmark-split val2014``)::

    DIR/v2_OpenEnded_mscoco_val2014_questions.json   {"questions": [{"image_id", "question", "question_id"}]}
    DIR/v2_mscoco_val2014_annotations.json           {"annotations": [{"question_id", "answers": [{"answer"}...],
                                                                        "answer_type", "question_type", ...}]}
    DIR/val2014/COCO_val2014_000000000042.jpg        (or --benchmark-images FOLDER)

Only splits with public annotations can be scored here (train2014, val2014); test-dev answers are scored
by the EvalAI server. Reported: accuracy overall and by answer type (yes/no, number, other), as the
official evaluation does (by question type too, in results.json).
"""

from __future__ import annotations

from pathlib import Path

from mmphi.eval.benchmarks.answers import vqa_soft_score
from mmphi.eval.benchmarks.common import (
    SHORT_ANSWER,
    Benchmark,
    BenchmarkError,
    Item,
    check_images,
    images_folder,
    need,
    need_list,
    read_json,
)


def question_file(folder: Path, split: str) -> Path:
    return folder / f"v2_OpenEnded_mscoco_{split}_questions.json"


def annotation_file(folder: Path, split: str) -> Path:
    return folder / f"v2_mscoco_{split}_annotations.json"


def read(folder: Path, split: str, images: Path | None = None, limit: int = 0) -> list[Item]:
    """The questions of ``split`` with their annotations, in the questions file's order (the first ``limit``)."""
    qfile, afile = question_file(folder, split), annotation_file(folder, split)
    questions = need_list(read_json(qfile, "the official VQAv2 questions file"), "questions", str(qfile))
    annotations = need_list(read_json(afile, "the official VQAv2 annotations file (public for train2014 and "
                                             "val2014 only)"), "annotations", str(afile))
    by_id = {}
    for i, ann in enumerate(annotations):
        need(ann, ("question_id", "answers", "answer_type", "question_type"), f"{afile} annotation {i}")
        by_id[ann["question_id"]] = ann
    folder_images = images_folder(images, folder / split)
    items = []
    for i, q in enumerate(questions[:limit] if limit else questions):
        need(q, ("question_id", "image_id", "question"), f"{qfile} question {i}")
        ann = by_id.get(q["question_id"])
        if ann is None:
            raise BenchmarkError(f"{afile} has no annotation for question_id {q['question_id']} of {qfile}")
        answers = []
        for j, a in enumerate(ann["answers"]):
            need(a, ("answer",), f"{afile} question_id {q['question_id']} answer {j}")
            answers.append(a["answer"])
        items.append(Item(qid=str(q["question_id"]),
                          image=folder_images / f"COCO_{split}_{int(q['image_id']):012d}.jpg",
                          question=f"{q['question']}\n{SHORT_ANSWER}", reference=answers,
                          groups={"answer type": ann["answer_type"], "question type": ann["question_type"]}))
    check_images(items, folder_images)
    return items


def score(item: Item, prediction: str) -> float:
    return vqa_soft_score(prediction, item.reference)


BENCHMARK = Benchmark("vqav2", "VQAv2", "val2014", "val2014 or train2014 (the splits with public annotations)",
                      read, score, json_only=("question type",))
