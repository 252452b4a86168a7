"""Hand-made benchmark folders in the official layouts, 4 questions each, with small generated images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _answers(*counts: tuple[str, int]) -> list[str]:
    out = [a for a, n in counts for _ in range(n)]
    assert len(out) == 10
    return out


def write_vqav2(root: Path) -> Path:
    qs = [(1, 42, "Is the sky blue?", _answers(("yes", 10)), "yes/no", "is the"),
          (2, 42, "How many dogs are there?", _answers(("2", 3), ("3", 7)), "number", "how many"),
          (3, 7, "What is on the table?", _answers(("a dog", 2), ("cat", 8)), "other", "what is"),
          (4, 7, "What colour is it?", _answers(("red", 4), ("blue", 6)), "other", "what color is the")]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(
        {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
         "questions": [{"image_id": im, "question": q, "question_id": qid} for qid, im, q, *_ in qs]}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": [
        {"question_id": qid, "image_id": im, "question_type": qt, "answer_type": at, "multiple_choice_answer": a[0],
         "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": i + 1} for i, x in enumerate(a)]}
        for qid, im, _, a, at, qt in qs]}))
    for im, colour in ((42, (0, 0, 255)), (7, (255, 0, 0))):
        _image(root / "val2014" / f"COCO_val2014_{im:012d}.jpg", colour)
    return root


def write_textvqa(root: Path) -> Path:
    data = [{"question": "What brand is it?", "question_id": 11, "image_id": "a1",
             "answers": _answers(("nokia", 9), ("Nokia.", 1))},
            {"question": "What number is shown?", "question_id": 12, "image_id": "a1",
             "answers": _answers(("ten", 2), ("10", 1), ("11", 7))},
            {"question": "What does the sign say?", "question_id": 13, "image_id": "b2",
             "answers": _answers(("stop", 2), ("halt", 8))},
            {"question": "What is written?", "question_id": 14, "image_id": "b2",
             "answers": _answers(("coca cola", 10))}]
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    for name in ("a1", "b2"):
        _image(root / "train_images" / f"{name}.jpg", (10, 200, 10))
    return root


def write_gqa(root: Path) -> Path:
    def q(image: str, question: str, answer: str, structural: str, semantic: str, balanced: bool = True) -> dict:
        return {"imageId": image, "question": question, "answer": answer, "fullAnswer": f"It is {answer}.",
                "isBalanced": balanced, "types": {"structural": structural, "semantic": semantic, "detailed": "x"}}

    questions = {"201": q("n1", "Is the cup red?", "yes", "verify", "attr"),
                 "202": q("n1", "What is on the table?", "cup", "query", "rel"),
                 "203": q("n2", "Who is wearing a hat?", "man", "query", "obj"),
                 "204": q("n2", "Is it a cat or a dog?", "dog", "choose", "cat"),
                 "205": q("n2", "Unbalanced?", "no", "verify", "attr", balanced=False)}
    (root / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    for name in ("n1", "n2"):
        _image(root / "images" / f"{name}.jpg", (120, 120, 0))
    return root


def write_pope(root: Path) -> Path:
    for split, labels in (("random", "yes no yes no"), ("popular", "yes yes yes no"), ("adversarial", "no no yes no")):
        lines = [{"question_id": i + 1, "image": f"COCO_val2014_{i % 2:012d}.jpg",
                  "text": f"Is there a thing{i} in the image?", "label": lab} for i, lab in enumerate(labels.split())]
        (root / f"coco_pope_{split}.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for i in range(2):
        _image(root / "val2014" / f"COCO_val2014_{i:012d}.jpg", (200, 200, 200))
    return root


def write_scienceqa(root: Path) -> Path:
    def p(question: str, choices: list[str], answer: int, hint: str, image: str | None, subject: str, split: str):
        return {"question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
                "task": "closed choice", "grade": "grade4", "subject": subject, "topic": "t", "category": "c",
                "skill": "s", "lecture": "", "solution": "", "split": split}

    problems = {"5": p("Which is a mammal?", ["frog", "whale"], 1, "", "image.png", "natural science", "test"),
                "6": p("Which state is farthest north?", ["Ohio", "Texas", "Maine"], 2, "Look at the map.",
                       "image.png", "social science", "test"),
                "7": p("No image here?", ["yes", "no"], 0, "", None, "language science", "test"),
                "8": p("Which word is a noun?", ["run", "cat", "blue", "fast"], 1, "", "image.png",
                       "language science", "test"),
                "9": p("Which is hotter?", ["ice", "fire"], 1, "Two objects.", "image.png", "natural science", "test"),
                "10": p("Train problem", ["a", "b"], 0, "", "image.png", "natural science", "train")}
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"train": ["10"], "val": [], "test": ["5", "6", "7", "8", "9"]}))
    for pid in ("5", "6", "8", "9", "10"):
        split = problems[pid]["split"]
        _image(root / "images" / split / pid / "image.png", (0, 100, 200))
    return root


WRITERS = {"vqav2": write_vqav2, "textvqa": write_textvqa, "gqa": write_gqa, "pope": write_pope,
           "sqa": write_scienceqa}


@pytest.fixture
def benchmark_dir(tmp_path):
    """``benchmark_dir(name)`` -> a fresh folder holding that benchmark's hand-made files."""
    def make(name: str) -> Path:
        return WRITERS[name](tmp_path / name)

    for name in WRITERS:
        (tmp_path / name).mkdir()
    return make
