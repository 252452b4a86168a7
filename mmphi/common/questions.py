"""Question types and answer scoring: what a question asks, whether an answer is right, accuracy by type.

Shared by the world (which writes the questions), training (validation during stage 0 and stage 2),
evaluation and the reports; it imports nothing of mmphi above :mod:`mmphi.common`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mmphi.common.text import ARTICLES, canonical, words

# The shapes world's question types in report order; every one but "describe" has one exact answer.
QUESTION_TYPES = ("colour", "shape", "count", "position", "yesno", "describe")
EXACT_TYPES = tuple(t for t in QUESTION_TYPES if t != "describe")


def normalize_answer(text: str) -> str:
    """The canonical form of a short answer, so "The Centre." and "centre" compare equal.

    Lower-cases, removes punctuation and surrounding whitespace, writes small numbers as words
    ("2" -> "two"), maps US spellings to the world's UK ones ("center" -> "centre"), reduces a reply
    that starts with yes/no to that word ("Yes, there is." -> "yes") and drops leading articles
    ("a circle" -> "circle"). Sentences keep all their other words, so "describe" answers still
    have to match word for word.
    """
    out = [canonical(w) for w in words(text)]
    if out and out[0] in ("yes", "no"):
        return out[0]
    while out and out[0] in ARTICLES:
        out = out[1:]
    return " ".join(out)


def vqa_correct(prediction: str, answer: str) -> bool:
    """Exact match after :func:`normalize_answer`: the world's answers are unambiguous, so no partial credit."""
    return normalize_answer(prediction) == normalize_answer(answer)


def ordered_types(types: Iterable[str]) -> list[str]:
    """Question types in report order: the world's types first, then others alphabetically, "overall" last.

    A fixed order keeps tables from different runs comparable line by line.
    """
    known = {t: i for i, t in enumerate(QUESTION_TYPES)}
    unique = set(types)
    has_overall = "overall" in unique
    unique.discard("overall")
    out = sorted(unique, key=lambda t: (0, known[t], "") if t in known else (1, 0, t))
    return [*out, "overall"] if has_overall else out


def _cell(n: int, correct: int) -> dict[str, float]:
    # 0/0 is reported as 0.0 (not NaN) so results.json stays valid strict JSON; "n" shows it is empty.
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0}


def accuracy_by_type(rows: Iterable[Mapping]) -> dict[str, dict[str, float]]:
    """Accuracy per question type plus "overall", from rows carrying ``"type"`` and ``"correct"``.

    Returns ``{type: {"n": int, "correct": int, "accuracy": float in 0..1}}`` in :func:`ordered_types`
    order; "overall" is always present (n=0 when there are no rows).
    """
    counts: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if "type" not in row or "correct" not in row:
            raise ValueError(f"row {i} needs 'type' and 'correct' keys, got {sorted(row)}")
        kind = str(row["type"])
        if kind == "overall":
            raise ValueError(f"row {i}: 'overall' is reserved for the total and cannot be a question type")
        tally = counts.setdefault(kind, [0, 0])
        tally[0] += 1
        tally[1] += int(bool(row["correct"]))
    out = {kind: _cell(*counts[kind]) for kind in ordered_types(counts)}
    out["overall"] = _cell(sum(n for n, _ in counts.values()), sum(c for _, c in counts.values()))
    return out


def accuracy_by_objects(rows: Sequence[dict], scenes_file: Path) -> dict:
    """Accuracy per question type for scenes of 1, 2, 3... objects (a shapes world's ``scenes.json``).

    One object needs no binding; with several, a question names one object and asks about another
    of its attributes, so the gap between the columns shows how well the model binds. Rows whose
    image the file does not list are left out.
    """
    counts = {s["file_name"]: len(s["objects"]) for s in json.loads(Path(scenes_file).read_text())}
    groups: dict[int, list[dict]] = {}
    for row in rows:
        if row["image"] in counts:
            groups.setdefault(counts[row["image"]], []).append(row)
    return {f"{n} object{'s' if n > 1 else ''}": accuracy_by_type(groups[n]) for n in sorted(groups)}


NAMINGS = ("by shape", "by colour", "by colour and shape")


def position_by_naming(rows: Sequence[dict], scenes_file: Path) -> dict:
    """Accuracy of position questions by how they name their object and by the objects in the scene.

    A question names its object by shape ("the circle"), by colour ("the red shape") or by both; which
    one is read from the question's words against the scene's own colours and shapes, so nothing here
    depends on the world's vocabulary. Returns ``{"2 objects": {"by colour": cell, ...}, ...}`` with
    "overall" per column; rows of other types, or whose image the file does not list, are left out.
    """
    scenes = {s["file_name"]: s["objects"] for s in json.loads(Path(scenes_file).read_text())}
    groups: dict[int, list[dict]] = {}
    for row in rows:
        objects = scenes.get(row["image"])
        if row["type"] != "position" or objects is None:
            continue
        said = set(words(str(row["question"])))
        colour = any(o["colour"] in said for o in objects)
        shape = any(o["shape"] in said for o in objects)
        naming = NAMINGS[2] if colour and shape else NAMINGS[1] if colour else NAMINGS[0]
        groups.setdefault(len(objects), []).append({"type": naming, "correct": row["correct"]})
    return {f"{n} object{'s' if n > 1 else ''}": accuracy_by_type(groups[n]) for n in sorted(groups)}


def by_objects_if_known(rows: Sequence[dict], split: Path) -> dict | None:
    """``accuracy_by_objects`` when ``split`` holds a shapes world's ``scenes.json``; None when it has
    none, and a warning instead of an error when it cannot be read (the accuracy itself still counts)."""
    path = Path(split) / "scenes.json"
    if not path.exists():
        return None
    try:
        return accuracy_by_objects(rows, path)
    except (ValueError, KeyError, TypeError) as err:
        print(f"warning: {path} is not a shapes world's scenes file ({err!r}); no accuracy by number of objects",
              file=sys.stderr)
        return None
