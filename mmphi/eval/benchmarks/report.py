"""The results.md section of a benchmark run: its metrics overall and by group, with and without the image."""

from __future__ import annotations

from collections import Counter

from mmphi.common.tables import markdown_table, pct
from mmphi.eval.benchmarks import BENCHMARKS

_COUNTS = ("n", "tp", "fp", "tn", "fn", "too_long")  # integers, not fractions


def _cell(metrics: dict | None, key: str) -> str:
    if metrics is None or key not in metrics:
        return "–"
    return str(metrics[key]) if key in _COUNTS else pct(metrics[key])


def reference_text(reference: object) -> str:
    """A reference as a table cell: annotators' answers with counts ("3 ×7, 2 ×3"), an option's letter, a string."""
    if isinstance(reference, list):
        counts = Counter(str(r) for r in reference)
        return ", ".join(f"{a} ×{n}" if n > 1 else a for a, n in counts.most_common())
    if isinstance(reference, dict) and "letter" in reference:
        return str(reference["letter"])
    return str(reference)


def metrics_table(summaries: dict[str, dict], hidden: tuple[str, ...] = ()) -> str:
    """Rows: overall, then each group's values; columns: each metric under each condition (image, blind), n.

    ``summaries`` maps a condition to a benchmark summary ({"overall": {...}, "by": {group: {value: {...}}}});
    metrics are the fractions of "overall" (shown as %), groups in ``hidden`` are left out.
    """
    first = next(iter(summaries.values()))
    metrics = [k for k in first["overall"] if k not in _COUNTS]
    rows_of: list[tuple[str, dict[str, dict | None]]] = [("overall", {c: s["overall"] for c, s in summaries.items()})]
    for group, values in first.get("by", {}).items():
        if group in hidden:
            continue
        for value in values:
            rows_of.append((f"{group}: {value}", {c: s.get("by", {}).get(group, {}).get(value)
                                                  for c, s in summaries.items()}))
    headers = [""] + [m if c == "image" else f"{m}, {c}" for m in metrics for c in summaries] + ["n"]
    rows = [[label, *[_cell(cells[c], m) for m in metrics for c in summaries], _cell(cells[next(iter(cells))], "n")]
            for label, cells in rows_of]
    return markdown_table(headers, rows, align="l" + "r" * (len(headers) - 1))


def benchmark_markdown(results: dict) -> list[str]:
    b = results["benchmark"]
    bench = BENCHMARKS[b["name"]]
    summaries = {c: b[c] for c in ("image", "blind") if c in b}
    lines = [f"## {b['title']} ({b['split']}, greedy, %)", "",
             f"{b['n']} questions, answered with the image" + (" and without it (blind)" if "blind" in b else "")
             + f", at most {b['max_new_tokens']} new tokens each; scored by the benchmark's own rules "
               "(docs/benchmarks.md). Every answer is in predictions.jsonl.", "",
             metrics_table(summaries, bench.json_only)]
    too_long = {c: s["too_long"] for c, s in summaries.items() if s.get("too_long")}
    if too_long:
        lines += [f"Questions longer than the model's context, counted wrong: {too_long}.", ""]
    if results.get("examples"):
        lines += ["## Examples", "", markdown_table(
            ["question", "answer", "reference", "score %"],
            [[e["question"], e["prediction"], reference_text(e["reference"]), pct(e["score"])]
             for e in results["examples"]]), ""]
    return lines
