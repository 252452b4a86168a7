"""Report writing: markdown tables and PNG charts for results.md, loss.png and the docs.

Charts are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas instead of pyplot, so
they need no display, leave no global figure state behind (safe in a server thread) and come out
the same size for the same inputs. matplotlib is imported inside the chart functions so that
importing :mod:`mmphi.eval` (and with it the CLI) stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmphi.eval.metrics import ordered_types

__all__ = ["accuracy_table", "bar_chart", "format_cell", "line_chart", "markdown_table", "pct"]

DPI = 100
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


def _new_figure(width: float, height: float):
    """A pyplot-free figure on the Agg canvas (no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    """Write a PNG at a fixed size (no tight bbox, which would make the size depend on the labels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: same bytes per input
    return path


def bar_chart(
    path: str | Path,
    title: str,
    groups: Mapping[str, Mapping[str, float]],
    ylabel: str = "accuracy (%)",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """A grouped bar chart PNG: categories along x (inner keys, e.g. question types), one bar per group.

    ``groups`` is e.g. ``{"typed": {"colour": 87.3, ...}, "blind": {...}}``; each bar is labelled
    with its value, and a category missing from a group is left empty. Returns the path written.
    """
    if not groups:
        raise ValueError("no groups to plot")
    categories: list[str] = []
    for values in groups.values():
        categories += [c for c in values if c not in categories]
    if not categories:
        raise ValueError("the groups have no values to plot")
    n_groups, n_cats = len(groups), len(categories)
    width = 0.8 / n_groups
    fig = _new_figure(min(20.0, max(8.0, 1.5 + 0.45 * n_cats * n_groups)), 4.5)
    ax = fig.add_subplot()
    top = 0.0
    for g, (name, values) in enumerate(groups.items()):
        xs = [i - 0.4 + width * (g + 0.5) for i, c in enumerate(categories) if c in values]
        ys = [float(values[c]) for c in categories if c in values]
        bars = ax.bar(xs, ys, width=width * 0.95, label=name)
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=2)
        top = max([top, *(y for y in ys if math.isfinite(y))])
    ax.set_xticks(range(n_cats), categories)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    # Headroom above the tallest bar so its value label stays inside the axes.
    ax.set_ylim(*(ylim if ylim is not None else (min(0.0, ax.get_ylim()[0]), top * 1.12 or 1.0)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if n_groups > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.86 if n_groups > 1 else 0.97, bottom=0.12, top=0.9)
    return _save(fig, path)


def line_chart(
    path: str | Path,
    title: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
    logx: bool = False,
) -> Path:
    """A line chart PNG of several (x, y) series, e.g. train and eval loss against step (``logx``: log x axis).

    ``hlines`` adds labelled dashed horizontal references (e.g. ``{"initial - 1": 9.8}``) so a
    reader can see at a glance whether a curve cleared a target. Returns the path written.
    """
    if not series:
        raise ValueError("no series to plot")
    fig = _new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r} has {len(xs)} x values but {len(ys)} y values")
        # Sparse series (e.g. a handful of eval points) get markers; a single point would be invisible without.
        ax.plot(list(xs), list(ys), label=name, marker="o" if len(xs) <= 20 else None, markersize=4, linewidth=1.5)
    for label, y in (hlines or {}).items():
        ax.axhline(float(y), linestyle="--", linewidth=1.0, color="grey", label=f"{label} ({y:.3g})")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    return _save(fig, path)
