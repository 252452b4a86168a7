"""ScienceQA-IMG: the test problems that have an image, asked and scored as LLaVA-1.5 does.

Layout (``--benchmark-dir DIR``, ``--benchmark-split test``), ScienceQA's own release::

    DIR/problems.json                 {pid: {"question", "choices", "answer" (index), "hint", "image", "split", ...}}
    DIR/pid_splits.json               {"train": [pid, ...], "val": [...], "test": [...], ...}
    DIR/images/test/<pid>/image.png   (or --benchmark-images FOLDER holding <pid>/image.png)

Prompt: "Context: {hint}" (when there is one), the question, the choices as "A. ...", one a line, then
"Answer with the option's letter from the given choices directly." The reply counts as a letter when it is
one ("B"), starts with one and ". " ("B. cat"), or says "The answer is B." once (LLaVA's eval_science_qa.py);
anything else is wrong. Reported: accuracy overall and by subject.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from mmphi.eval.benchmarks.common import (
    OPTION_LETTER,
    Benchmark,
    BenchmarkError,
    Item,
    check_images,
    images_folder,
    need,
    read_json,
)

_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def option_letter(prediction: str, n_choices: int) -> str | None:
    """The option a reply picks ("A".. for ``n_choices`` options), or None when it names none of them."""
    letters = tuple(string.ascii_uppercase[:n_choices])  # a tuple: "" and "AB" are not options
    if prediction in letters:
        letter = prediction
    elif len(prediction) >= 3 and prediction[0] in letters and prediction[1:3] == ". ":
        letter = prediction[0]
    else:
        found = _THE_ANSWER_IS.findall(prediction)
        letter = found[0] if len(found) == 1 else ""
    return letter if letter and letter in letters else None


def prompt(problem: dict) -> str:
    context = f"Context: {problem['hint']}\n" if problem.get("hint") else ""
    options = "\n".join(f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(problem["choices"]))
    return f"{context}{problem['question']}\n{options}\n{OPTION_LETTER}"


def read(folder: Path, split: str, images: Path | None = None, limit: int = 0) -> list[Item]:
    problems_path, splits_path = folder / "problems.json", folder / "pid_splits.json"
    problems = read_json(problems_path, "ScienceQA's problems.json")
    splits = read_json(splits_path, "ScienceQA's pid_splits.json")
    if not isinstance(problems, dict) or not isinstance(splits, dict):
        raise BenchmarkError(f"{problems_path} and {splits_path} must each hold a JSON object")
    need(splits, (split,), str(splits_path))
    folder_images = images_folder(images, folder / "images" / split)
    items = []
    for pid in splits[split]:
        where = f"{problems_path} problem {pid}"
        if pid not in problems:
            raise BenchmarkError(f"{splits_path} lists problem {pid}, which {problems_path} does not hold")
        p = problems[pid]
        need(p, ("question", "choices", "answer", "image"), where)
        if not p["image"]:
            continue  # ScienceQA-IMG: only the problems with an image
        n = len(p["choices"])
        if not 2 <= n <= 26 or not isinstance(p["answer"], int) or not 0 <= p["answer"] < n:
            raise BenchmarkError(f"{where}: 'answer' must index its {n} choices, got {p['answer']!r}")
        items.append(Item(qid=str(pid), image=folder_images / str(pid) / p["image"], question=prompt(p),
                          reference={"letter": string.ascii_uppercase[p["answer"]], "choices": n},
                          groups={"subject": str(p["subject"])} if p.get("subject") else {}))
        if limit and len(items) >= limit:
            break
    check_images(items, folder_images)
    return items


def score(item: Item, prediction: str) -> float:
    return float(option_letter(prediction, item.reference["choices"]) == item.reference["letter"])


BENCHMARK = Benchmark("sqa", "ScienceQA-IMG", "test", "test (or val, train, minival: keys of pid_splits.json)",
                      read, score, max_new_tokens=8)
