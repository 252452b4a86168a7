"""Markdown tables for results.md, run reports, model cards and the docs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mmphi.common.questions import ordered_types

__all__ = ["accuracy_table", "format_cell", "markdown_table", "pct"]

_SEPARATOR = {"l": ":---", "c": ":---:", "r": "---:"}


def format_cell(value: object) -> str:
    """A table cell as text: floats with ~4 significant digits and no scientific notation in the usual range.

    Loss 2.34567 -> "2.346", accuracy 0.8734 -> "0.8734", 3297.4 tokens/s -> "3297"; bools and
    ints as written; None as "–".
    """
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        mag = abs(value)
        if 1e-3 <= mag < 1e9:
            return f"{value:.{max(0, 3 - math.floor(math.log10(mag)))}f}"
        return f"{value:.3g}"
    text = str(value)
    # A pipe would end the cell and a newline the row.
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table with padded columns (readable as plain text too).

    ``align`` has one letter per column, "l", "c" or "r"; by default numeric columns are
    right-aligned and the others left-aligned. Floats are formatted by :func:`format_cell`;
    pass strings (e.g. from :func:`pct`) for any other format.
    """
    n = len(headers)
    if n == 0:
        raise ValueError("a table needs at least one column")
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"row {i} has {len(row)} cells but there are {n} headers")
    if align is None:
        numeric = [bool(rows) and all(_is_number(r[j]) or r[j] is None for r in rows) for j in range(n)]
        align = "".join("r" if num else "l" for num in numeric)
    if len(align) != n or set(align) - set(_SEPARATOR):
        raise ValueError(f"align must be {n} letters from 'l', 'c', 'r', got {align!r}")
    head = [format_cell(str(h)) for h in headers]
    body = [[format_cell(c) for c in row] for row in rows]
    widths = [max(len(_SEPARATOR[a]), len(head[j]), *(len(r[j]) for r in body)) for j, a in enumerate(align)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.center(w) if a == "c" else c.ljust(w)
                  for c, w, a in zip(cells, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = [_SEPARATOR[a][0] + "-" * (w - len(_SEPARATOR[a])) + _SEPARATOR[a][1:]
            for a, w in zip(align, widths, strict=True)]
    return "\n".join([line(head), line(rule), *(line(r) for r in body)]) + "\n"


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal, without the sign: 0.8734 -> "87.3"."""
    return f"{100.0 * x:.1f}"


def accuracy_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], show_n: bool = True) -> str:
    """One row per question type (+ overall), one column per condition, from :func:`accuracy_by_type` outputs.

    ``results`` is e.g. ``{"typed": acc, "spoken": acc, "blind": acc}``; cells read "87.3 (n=120)"
    (or "87.3" with ``show_n=False``), "–" where a condition has no questions of that type.
    Putting the conditions side by side is the point: image accuracy means little without the blind one.
    """
    if not results:
        raise ValueError("no results to tabulate")
    types = ordered_types(t for acc in results.values() for t in acc)
    rows: list[list[object]] = []
    for kind in types:
        row: list[object] = [kind]
        for acc in results.values():
            cell = acc.get(kind)
            if cell is None:
                row.append("–")
            elif show_n:
                row.append(f"{pct(cell['accuracy'])} (n={int(cell['n'])})")
            else:
                row.append(pct(cell["accuracy"]))
        rows.append(row)
    return markdown_table(["question type", *results], rows, align="l" + "r" * len(results))
