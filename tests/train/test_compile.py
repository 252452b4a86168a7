"""``--compile``: the training forward pass through ``torch.compile`` follows the eager trajectory,
and a machine where compiling fails still trains (eagerly, saying so)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmphi.cli import main

TINY = json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 64, "max_position_embeddings": 64})


def _args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(world), "--out", str(out), "--model", TINY, "--max-steps", "6",
            "--batch-size", "4", "--seq-len", "32", "--log-every", "1", "--eval-every", "1000",
            "--eval-batches", "1", "--text-qa", "0", "--warmup-steps", "2", "--lr", "0.003", *extra]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_compiled_training_follows_the_eager_losses(small_world, tmp_path):
    assert main(_args(small_world, tmp_path / "eager", "--no-compile")) == 0
    assert main(_args(small_world, tmp_path / "compiled", "--compile")) == 0
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 6
    assert max(abs(a - b) for a, b in zip(eager, compiled, strict=True)) < 1e-3, (eager, compiled)
    assert eager[-1] < eager[0]


def test_a_failing_compiler_falls_back_to_eager_training(small_world, tmp_path, monkeypatch, capsys):
    class Broken:
        def __init__(self, module):
            self.module = module

        def __call__(self, *args, **kwargs):
            raise RuntimeError("no C compiler here")

    monkeypatch.setattr(torch, "compile", Broken)
    assert main(_args(small_world, tmp_path / "fallback", "--compile")) == 0
    assert main(_args(small_world, tmp_path / "eager", "--no-compile")) == 0
    assert "torch.compile failed (RuntimeError: no C compiler here); training without it" in capsys.readouterr().out
    assert _losses(tmp_path / "fallback") == _losses(tmp_path / "eager")
