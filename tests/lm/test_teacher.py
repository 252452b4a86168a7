from __future__ import annotations

import json

from mmphi.cli import main
from mmphi.lm.teacher import quality_problem


def test_quality_filters():
    prose = "The quick brown fox jumps over the lazy dog while the sun sets slowly behind the hills."
    assert quality_problem(prose, 5, 0.5) is None
    assert quality_problem("too short", 5, 0.5) == "too short"
    assert quality_problem("la la la " * 20, 5, 0.5) == "repetitive"
    assert quality_problem("1234 5678 9012 3456 7890 !!!! ???? #### $$$$ %%%%", 5, 0.0) == "not prose"


def test_batched_sampling_appends_unique_documents_and_resumes(tmp_path):
    from helpers import make_lm

    lm = make_lm(tmp_path / "teacher")
    out = tmp_path / "gen.jsonl"
    args = ["teacher", "--model", str(lm), "--out", str(out), "--batch-size", "4", "--max-new-tokens", "12",
            "--min-words", "1", "--min-distinct", "0", "--target-mb", "1", "--device", "cpu"]
    assert main([*args, "--max-batches", "2"]) == 0
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(first) <= 8 and all(d["text"] and d["prompt"] for d in first)
    assert main([*args, "--max-batches", "2"]) == 0  # resumes: appends, never repeats a document
    docs = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert len(docs) > len(first) and len(set(docs)) == len(docs)
