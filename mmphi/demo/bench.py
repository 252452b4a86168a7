"""The demo's benchmark stage: the repository's ``bench/`` scripts, short versions, on the demo's models.

Each script measures its two ways side by side in one run and writes JSON; the report quotes the
ratios with the command that produced them. The scripts run one after another in a single child
process (``python -m mmphi.demo.bench JOBS.json``): the demo does not pay for six interpreter and
torch start-ups, and a script that crashes the interpreter cannot take the demo with it.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def _jobs(root: Path, quick: bool) -> dict[str, list[str]]:
    # A full-vocabulary stage-0 step takes ~3 s on 2 cores: a few steps show the ratio (the demo's budget).
    steps = ["--steps", "4"] if quick else ["--steps", "5"]
    return {
        "live_vocab_head": ["pretrain_speed.py", *steps],
        "one_pass_alignment": ["align_passes.py", str(root / "align" / "final"), "--batch", "8"],
        "kv_cache_generation": ["generate_speed.py", str(root / "finetune" / "final"), "--tokens", "24",
                                "--repeats", "1"],
        # The demo's LM is so small that per-step overheads hide the cache; a wider, deeper random
        # model with a long prompt shows what it saves once the model does real work per token.
        "kv_cache_generation_wide": ["generate_speed.py", "--hidden", "512" if quick else "768", "--layers",
                                     "4" if quick else "6", "--history", "12", "--tokens", "16", "--repeats", "1"],
        "feature_store_loading": ["embed_speed.py", "--shapes", "tiny", "--scenes", "120", "--batches", "5"],
        "fused_gelu": ["gelu_speed.py", str(root / "pretrain" / "final"), "--steps", "6",
                       "--rounds", "2"],
    }


def _ratio(name: str, data: dict) -> float:
    if name == "feature_store_loading":
        return data["rows"][0]["ratio"]
    return data["speedup"]


def _run_jobs(spec: dict) -> None:
    """In the child: run each script as ``__main__`` with its arguments, its output to its .txt file."""
    sys.path.insert(0, spec["bench_dir"])  # as when a script runs from bench/: they share bench/timing.py
    threads = torch.get_num_threads()
    for job in spec["jobs"]:
        with open(job["log"], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            sys.argv = [job["script"], *job["args"]]
            failed = True
            try:
                runpy.run_path(job["script"], run_name="__main__")
                failed = False
            except SystemExit as e:  # argparse errors and explicit exits
                failed = e.code not in (None, 0)
                if failed:
                    print(f"exited with status {e.code}")
            except Exception:  # one failing script must not stop the others
                traceback.print_exc()
            if failed:  # what a failed script wrote is not a result
                Path(job["json"]).unlink(missing_ok=True)
        torch.set_num_threads(threads)  # a script may have changed it


def run_benches(root: Path, quick: bool = False) -> dict:
    if not BENCH_DIR.is_dir():
        return {"skipped": True, "why": f"no bench/ folder next to the package ({BENCH_DIR})"}
    out_dir = root / "bench"
    out_dir.mkdir(exist_ok=True)
    jobs = _jobs(root, quick)
    specs: list[dict[str, Any]] = []
    for name, (script, *args) in jobs.items():
        json_path, log = out_dir / f"{name}.json", out_dir / f"{name}.txt"
        for stale in (json_path, log):  # a previous run's result or error must not pass for this run's
            stale.unlink(missing_ok=True)
        specs.append({"name": name, "script": str(BENCH_DIR / script), "json": str(json_path),
                             "args": [*args, "--json", str(json_path)], "log": str(log)})
    spec_path = out_dir / "jobs.json"
    spec_path.write_text(json.dumps({"bench_dir": str(BENCH_DIR), "jobs": specs}, indent=1))
    proc = subprocess.run([sys.executable, "-m", "mmphi.demo.bench", str(spec_path)], capture_output=True,
                          text=True, timeout=3600)
    ratios, commands, details = {}, {}, {}
    for job, (name, (script, *args)) in zip(specs, jobs.items(), strict=True):
        json_path = Path(job["json"])
        commands[name] = " ".join(["python", f"bench/{script}", *args])
        if not json_path.exists():
            log = Path(job["log"])
            lines = (log.read_text().strip().splitlines() if log.exists() else []) or proc.stderr.strip().splitlines()
            details[name] = {"error": lines[-1:] or [f"bench process exited with status {proc.returncode}"]}
            continue
        details[name] = json.loads(json_path.read_text())
        ratios[name] = _ratio(name, details[name])
    return {"ratios": ratios, "commands": commands, "details": details}


if __name__ == "__main__":
    _run_jobs(json.loads(Path(sys.argv[1]).read_text()))
