"""Report utilities: markdown tables parse back to the right shape, charts are real, fixed-size PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmphi.common.charts import bar_chart, line_chart
from mmphi.common.questions import accuracy_by_type
from mmphi.common.tables import accuracy_table, format_cell, markdown_table, pct


def _cells(table: str) -> list[list[str]]:
    """Split a markdown table back into stripped cells (honouring escaped pipes)."""
    rows = []
    for line in table.strip().splitlines():
        assert line.startswith("| ") and line.endswith(" |"), line
        inner = line[2:-2].replace("\\|", "\0")
        rows.append([c.strip().replace("\0", "|") for c in inner.split(" | ")])
    return rows


def test_markdown_table_shape_alignment_and_formatting() -> None:
    table = markdown_table(["name", "loss", "steps"], [["tiny", 2.345678, 100], ["a|b", 0.000123, None]])
    rows = _cells(table)
    assert len(rows) == 4 and all(len(r) == 3 for r in rows)
    assert rows[0] == ["name", "loss", "steps"]
    assert rows[1][0].startswith(":-") and rows[1][1].endswith("-:") and rows[1][2].endswith("-:")
    assert rows[2] == ["tiny", "2.346", "100"]
    assert rows[3] == ["a|b", "0.000123", "–"]
    # padded: every line has the same width
    assert len({len(line) for line in table.splitlines()}) == 1


def test_markdown_table_explicit_align_and_errors() -> None:
    rows = _cells(markdown_table(["a", "b"], [["x", "y"]], align="cr"))
    assert rows[1][0].startswith(":") and rows[1][0].endswith(":") and rows[1][1].endswith("-:")
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        markdown_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [["x", "y"]], align="lx")
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [["x", "y"]], align="l")


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.8734, "0.8734"), (2.345678, "2.346"), (3297.4, "3297"), (12.3456, "12.35"), (0.0, "0"), (7, "7"),
     (True, "True"), (1.5e-7, "1.5e-07"), ("a\nb", "a b")],
)
def test_format_cell(value: object, text: str) -> None:
    assert format_cell(value) == text


def test_pct() -> None:
    assert pct(0.8734) == "87.3"
    assert pct(1.0) == "100.0"
    assert pct(0.0) == "0.0"


def test_accuracy_table_rows_columns_and_cells() -> None:
    typed = accuracy_by_type(
        [{"type": "colour", "correct": True}] * 3 + [{"type": "colour", "correct": False}]
        + [{"type": "yesno", "correct": True}]
    )
    blind = accuracy_by_type([{"type": "colour", "correct": False}, {"type": "count", "correct": True}])
    rows = _cells(accuracy_table({"typed": typed, "blind": blind}))
    assert rows[0] == ["question type", "typed", "blind"]
    assert [r[0] for r in rows[2:]] == ["colour", "count", "yesno", "overall"]
    assert rows[2] == ["colour", "75.0 (n=4)", "0.0 (n=1)"]
    assert rows[3] == ["count", "–", "100.0 (n=1)"]
    assert rows[5] == ["overall", "80.0 (n=5)", "50.0 (n=2)"]
    plain = _cells(accuracy_table({"typed": typed}, show_n=False))
    assert plain[2] == ["colour", "75.0"] and len(plain) == 2 + 3
    with pytest.raises(ValueError):
        accuracy_table({})


def _assert_png(path: Path, size: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size == size
        colours = im.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 20  # bars, text and antialiasing, not a blank canvas


def test_bar_chart_png(tmp_path: Path) -> None:
    groups = {
        "typed": {"colour": 87.3, "shape": 60.0, "count": 95.0, "overall": 80.1},
        "spoken": {"colour": 80.0, "shape": 55.5, "count": 90.0, "overall": 75.0},
        "blind": {"colour": 17.0, "count": 52.0, "overall": 34.0},  # a missing category is left empty
    }
    out = bar_chart(tmp_path / "sub" / "acc.png", "VQA accuracy", groups, ylim=(0, 100))
    assert out == tmp_path / "sub" / "acc.png"
    _assert_png(out, (800, 450))
    # same inputs, same bytes: the figure is reproducible and carries no version stamp
    again = bar_chart(tmp_path / "again.png", "VQA accuracy", groups, ylim=(0, 100))
    assert again.read_bytes() == out.read_bytes()
    # more bars make a wider, still deterministic, figure
    wide = {g: {f"type{i}": float(i) for i in range(8)} for g in ("a", "b", "c")}
    with Image.open(bar_chart(tmp_path / "wide.png", "wide", wide)) as im:
        assert im.size[0] > 800 and im.size[1] == 450
    with pytest.raises(ValueError):
        bar_chart(tmp_path / "none.png", "empty", {})


def test_line_chart_png(tmp_path: Path) -> None:
    series = {
        "train": ([0, 10, 20, 30, 40], [10.8, 6.0, 4.2, 3.5, 3.1]),
        "eval": ([20, 40], [4.5, 3.4]),
    }
    out = line_chart(tmp_path / "loss.png", "loss", series, "step", "loss", hlines={"initial - 1": 9.8})
    _assert_png(out, (800, 450))
    with pytest.raises(ValueError, match="2 x values but 1 y"):
        line_chart(tmp_path / "bad.png", "bad", {"s": ([0, 1], [1.0])}, "x", "y")
