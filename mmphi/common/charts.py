"""PNG charts (bars and lines) for results.md, loss.png and the docs.

Charts are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas instead of pyplot, so
they need no display, leave no global figure state behind (safe in a server thread) and come out
the same size for the same inputs. matplotlib is imported inside the chart functions so that
importing mmphi (and with it the CLI) stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["bar_chart", "line_chart"]

DPI = 100


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
