"""What every benchmark reader returns (``Item``) and describes itself with (``Benchmark``), and their helpers.

A reader checks the official files as it reads them: a missing file, a record without a key the scorer needs,
or a missing image is a :class:`BenchmarkError` that names the file, the record and the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmphi.errors import MmphiError

# LLaVA-1.5's instructions, appended to the question on a new line (its evaluation question files).
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


class BenchmarkError(MmphiError):
    """A benchmark folder or file is not in the official layout; the message says what is missing where."""


@dataclass(frozen=True)
class Item:
    """One question of a benchmark, ready to ask and to score."""

    qid: str
    image: Path
    question: str  # what the user asks, the LLaVA-1.5 instruction included, without the <image> placeholder
    reference: Any  # what the scorer compares the prediction with (JSON-serialisable)
    groups: dict[str, str] = field(default_factory=dict)  # e.g. {"answer type": "yes/no"}: reported apart


@dataclass(frozen=True)
class Benchmark:
    name: str  # the --benchmark value
    title: str
    default_split: str  # --benchmark-split when empty
    splits_help: str  # which splits the official files have
    read: Callable[[Path, str, Path | None, int], list[Item]]  # (folder, split, images folder or None, limit)
    score: Callable[[Item, str], float]  # one prediction's score, 0..1
    max_new_tokens: int = 16
    # The whole report from (items, predictions); None = accuracy overall and by each of the items' groups.
    summarise: Callable[[Sequence[Item], Sequence[str]], dict] | None = None
    json_only: tuple[str, ...] = ()  # groups too many to tabulate: in results.json, not in results.md

    def summary(self, items: Sequence[Item], predictions: Sequence[str]) -> dict:
        if self.summarise is not None:
            return self.summarise(items, predictions)
        return accuracy_summary(items, [self.score(it, p) for it, p in zip(items, predictions, strict=True)])


def read_json(path: Path, hint: str) -> Any:
    """A JSON file, or a BenchmarkError naming it (``hint`` says which official file it should be)."""
    if not path.is_file():
        raise BenchmarkError(f"{path} not found: {hint}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchmarkError(f"{path} is not valid JSON ({err}): {hint}") from err


def read_json_lines(path: Path, hint: str) -> list[dict]:
    """A JSON-lines file (one object a line; blank lines skipped), or a BenchmarkError naming the bad line."""
    if not path.is_file():
        raise BenchmarkError(f"{path} not found: {hint}")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchmarkError(f"{path}:{n} is not a JSON object ({err}): {hint}") from err
    return out


def need(record: Any, keys: Iterable[str], where: str) -> None:
    """Raise a BenchmarkError naming the first key of ``keys`` that ``record`` (a dict) lacks."""
    if not isinstance(record, dict):
        raise BenchmarkError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise BenchmarkError(f"{where} has no {key!r} (keys: {', '.join(sorted(record)) or 'none'})")


def need_list(record: dict, key: str, where: str) -> list:
    """``record[key]``, which must be a list (e.g. a JSON file's top-level "questions")."""
    need(record, [key], where)
    value = record[key]
    if not isinstance(value, list):
        raise BenchmarkError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    return value


def check_images(items: Sequence[Item], folder: Path) -> None:
    """Every item's image exists, or a BenchmarkError naming the first missing one (and how many are missing)."""
    if not items:
        raise BenchmarkError(f"no questions to ask (images folder {folder})")
    missing = [it for it in items if not it.image.is_file()]
    if missing:
        raise BenchmarkError(f"{len(missing)} of {len(items)} images are missing from {folder}, e.g. "
                             f"{missing[0].image} (question {missing[0].qid}); --benchmark-images sets the folder")


def images_folder(images: Path | None, default: Path) -> Path:
    return default if images is None else images


def mean_score(scores: Sequence[float]) -> dict:
    return {"accuracy": sum(scores) / len(scores) if scores else 0.0, "n": len(scores)}


def accuracy_summary(items: Sequence[Item], scores: Sequence[float]) -> dict:
    """{"overall": {accuracy, n}, "by": {group: {value: {accuracy, n}}}}, groups and values in first-seen order."""
    by: dict[str, dict[str, list[float]]] = {}
    for it, s in zip(items, scores, strict=True):
        for group, value in it.groups.items():
            by.setdefault(group, {}).setdefault(value, []).append(s)
    return {"overall": mean_score(scores),
            "by": {g: {v: mean_score(ss) for v, ss in values.items()} for g, values in by.items()}}
