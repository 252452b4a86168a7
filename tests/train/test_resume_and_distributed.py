"""The shared loop's guarantees, exercised through ``mmphi pretrain`` on a tiny model.

* a run killed with SIGKILL resumes from its last complete checkpoint and reproduces the
  uninterrupted run's losses exactly;
* half-written and corrupt checkpoints are never silently used;
* two processes (``accelerate launch``, gloo on CPU) follow the one-process loss trajectory at
  the same global batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmphi.cli import main

TINY = json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 64, "max_position_embeddings": 64})


def _args(world: Path, out: Path, steps: int, batch: int = 4, **extra) -> list[str]:
    args = ["pretrain", "--data", str(world), "--out", str(out), "--model", TINY, "--max-steps", str(steps),
            "--batch-size", str(batch), "--seq-len", "32", "--log-every", "1", "--eval-every", "1000",
            "--eval-batches", "1", "--text-qa", "0", "--warmup-steps", "5", "--lr", "0.003", "--no-compile"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}"] if v is True else [f"--{k.replace('_', '-')}", str(v)]
    return args


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "MMPHI_PRINT_SUMMARY": "0"}
    return subprocess.Popen([sys.executable, "-m", "mmphi.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def uninterrupted(small_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "a"
    assert main(_args(small_world, out, 200, save_every=8)) == 0
    return out


def test_kill_9_then_resume_reproduces_the_losses(small_world, uninterrupted, tmp_path):
    out = tmp_path / "b"
    proc = _cli(_args(small_world, out, 200, save_every=8))
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-24").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(out))
    assert killed_at < 200, "the run finished before it could be killed"
    (out / "checkpoints" / ".tmp-step-999").mkdir()  # what a kill during a save leaves behind
    resumed = _cli(_args(small_world, out, 200, save_every=8, resume=True))
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert "resuming from" in log and "step-999" not in log
    expected, got = _losses(uninterrupted), _losses(out)
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_run_json_records_the_global_batch(uninterrupted):
    facts = json.loads((uninterrupted / "run.json").read_text())
    assert facts["world_size"] == 1 and facts["global_batch"] == 1 * 4 * 1  # processes x batch x accumulation


def test_resume_refuses_a_corrupt_checkpoint_naming_the_file(uninterrupted, small_world, tmp_path, capsys):
    import shutil

    out = tmp_path / "c"
    shutil.copytree(uninterrupted, out)
    last = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))[-1]
    data = (last / "trainable.safetensors").read_bytes()
    (last / "trainable.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    assert main(_args(small_world, out, 200, save_every=8, resume=True)) == 1
    err = capsys.readouterr().err
    assert "trainable.safetensors" in err and "corrupt or truncated" in err


@pytest.mark.slow
def test_two_processes_follow_the_one_process_trajectory(small_world, tmp_path):
    one = tmp_path / "one"
    assert main(_args(small_world, one, 15, batch=8)) == 0
    two = tmp_path / "two"
    # On a machine without GPUs, accelerate's torchrun launcher (--multi_gpu) starts gloo processes;
    # its --cpu flag would start a single process.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mmphi.cli",
           *_args(small_world, two, 15, batch=4)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MMPHI_PRINT_SUMMARY": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_facts = json.loads((two / "run.json").read_text())
    assert run_facts["world_size"] == 2 and run_facts["global_batch"] == 2 * 4
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 16))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=2e-4), step
    assert a[15] < a[1]
