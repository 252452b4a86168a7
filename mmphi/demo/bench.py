"""The demo's benchmark stage: the repository's ``bench/`` scripts, short versions, on the demo's models.

Each script measures its two ways side by side in one run and writes JSON; the report quotes the
ratios with the command that produced them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        "kv_cache_generation_wide": ["generate_speed.py", "--hidden", "512" if quick else "1024", "--layers",
                                     "4" if quick else "8", "--history", "12", "--tokens", "16", "--repeats", "1"],
        "feature_store_loading": ["embed_speed.py", "--shapes", "tiny", "--scenes", "120", "--batches", "5"],
        "fused_gelu": ["gelu_speed.py", str(root / "pretrain" / "final"), "--steps", "6",
                       "--rounds", "2" if quick else "3"],
    }


def _ratio(name: str, data: dict) -> float:
    if name == "feature_store_loading":
        return data["rows"][0]["ratio"]
    return data["speedup"]


def run_benches(root: Path, quick: bool = False) -> dict:
    if not BENCH_DIR.is_dir():
        return {"skipped": True, "why": f"no bench/ folder next to the package ({BENCH_DIR})"}
    out_dir = root / "bench"
    out_dir.mkdir(exist_ok=True)
    ratios, commands, details = {}, {}, {}
    for name, (script, *args) in _jobs(root, quick).items():
        json_path = out_dir / f"{name}.json"
        cmd = [sys.executable, str(BENCH_DIR / script), *args, "--json", str(json_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        (out_dir / f"{name}.txt").write_text(proc.stdout + proc.stderr)
        commands[name] = " ".join(["python", f"bench/{script}", *args])
        if proc.returncode != 0 or not json_path.exists():
            details[name] = {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
            continue
        details[name] = json.loads(json_path.read_text())
        ratios[name] = _ratio(name, details[name])
    return {"ratios": ratios, "commands": commands, "details": details}
