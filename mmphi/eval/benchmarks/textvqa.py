"""TextVQA from its official file, scored as m4c's TextVQA evaluator (used by LLaVA) does.

Layout (``--benchmark-dir DIR``, ``--benchmark-split val``)::

    DIR/TextVQA_0.5.1_val.json        {"data": [{"question", "question_id", "image_id", "answers": [10 strings]}]}
    DIR/train_images/<image_id>.jpg   (the validation images ship in train_images/; or --benchmark-images)

Both the prediction and the 10 answers go through EvalAI's answer processor, then the prediction scores the
VQA soft accuracy. LLaVA-1.5's published TextVQA figure also puts OCR tokens (Rosetta) in the prompt; here
the prompt is the question and LLaVA-1.5's short-answer instruction only.
"""

from __future__ import annotations

from pathlib import Path

from mmphi.eval.benchmarks.answers import evalai_answer, soft_accuracy
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
    return folder / f"TextVQA_0.5.1_{split}.json"


def read(folder: Path, split: str, images: Path | None = None, limit: int = 0) -> list[Item]:
    path = question_file(folder, split)
    data = need_list(read_json(path, "the official TextVQA 0.5.1 file"), "data", str(path))
    folder_images = images_folder(images, folder / "train_images")
    items = []
    for i, q in enumerate(data[:limit] if limit else data):
        need(q, ("question", "question_id", "image_id"), f"{path} entry {i}")
        if "answers" not in q:
            raise BenchmarkError(f"{path} entry {i} has no 'answers' (the test split's answers are not public)")
        answers = q["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise BenchmarkError(f"{path} entry {i}: 'answers' must be a non-empty list of strings")
        items.append(Item(qid=str(q["question_id"]), image=folder_images / f"{q['image_id']}.jpg",
                          question=f"{q['question']}\n{SHORT_ANSWER}", reference=answers))
    check_images(items, folder_images)
    return items


def score(item: Item, prediction: str) -> float:
    return soft_accuracy(evalai_answer(prediction), [evalai_answer(a) for a in item.reference])


BENCHMARK = Benchmark("textvqa", "TextVQA", "val", "val (train has answers too; test does not)", read, score)
