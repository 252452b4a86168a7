"""The README's table of the phi2 recipe's ``--dry-run`` figures is what the dry run prints today.

Its memory figures drifted once (stage 1's ``max_len`` went from 512 to 1024 and the table kept 17.2 GiB): each
cell is re-planned here, its memory, its refusal and the figure of the change it names. The steps per epoch
need the real files' record counts and are left to docs/gpu.md's commands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmphi.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
ROWS = {"1 × 24 GB": (24, 1), "1 × 80 GB": (80, 1), "8 × 80 GB": (80, 8)}
ACCUM_8 = {"pretrain": ["--grad-accum", "4", "--sharding", "full"], "align": ["--grad-accum", "1"],
           "finetune": ["--grad-accum", "4"]}


def table() -> dict[tuple[str, str], str]:
    lines = README.read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| GPUs | `pretrain`"))
    verbs = [re.match(r"\s*`(\w+)`", cell).group(1) for cell in lines[head].split("|")[2:-1]]
    cells = {}
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        row, *values = [c.strip() for c in line.split("|")[1:-1]]
        cells.update({(row, verb): value for verb, value in zip(verbs, values, strict=True)})
    return cells


def argv(verb: str, tmp: Path, gpu: int, procs: int) -> list[str]:
    data = {"pretrain": ["--data", str(tmp / "corpus")], "align": ["--data", str(tmp / "captions.json")],
            "finetune": ["--init", str(tmp / "align"), "--data", str(tmp / "llava.json")]}[verb]
    extra = ["--features", str(tmp / "feats")] if verb != "pretrain" else []
    multi = ["--processes", str(procs), *ACCUM_8[verb]] if procs > 1 else []
    return [verb, "--recipe", "phi2", *data, *extra, "--out", str(tmp / verb), "--dry-run", "--gpu-memory", str(gpu),
            *multi]


CELLS = table()


def test_the_table_has_every_gpu_and_verb():
    assert set(CELLS) == {(row, verb) for row in ROWS for verb in ("pretrain", "align", "finetune")}


@pytest.mark.parametrize("row,verb", sorted(CELLS))
def test_each_cell_is_what_the_dry_run_prints(row, verb, tmp_path, capsys):
    cell = CELLS[(row, verb)]
    gpu, procs = ROWS[row]
    code = main(argv(verb, tmp_path, gpu, procs))
    out, err = capsys.readouterr()
    total = float(re.search(r"^  total\s+([\d.]+)", out, re.M).group(1))
    assert cell.startswith(f"{total:.1f}"), (cell, total)
    assert (code == 1) == ("refused" in cell), (cell, err)
    fits = re.search(r":\s*([\d.]+)\)", cell)  # "(... what would fit: 21.8)"
    if fits:
        assert f"({fits.group(1)} GiB)" in err, err
