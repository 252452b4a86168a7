"""The demo's benchmark stage runs every bench/ script in one child process and survives failures."""

from __future__ import annotations

import json
from pathlib import Path

import mmphi.demo.bench as bench


def test_benches_run_in_one_child_and_a_failure_is_reported(tmp_path: Path, monkeypatch) -> None:
    scripts = tmp_path / "bench"
    scripts.mkdir()
    (scripts / "shared.py").write_text("FACTOR = 3.0\n")
    (scripts / "good.py").write_text(
        "import argparse, json, os, sys\n"
        "from shared import FACTOR  # a sibling module, as bench/timing.py is\n"
        "ap = argparse.ArgumentParser(); ap.add_argument('--x', type=float); ap.add_argument('--json')\n"
        "a = ap.parse_args()\n"
        "print('measured', a.x)\n"
        "json.dump({'speedup': a.x * FACTOR, 'pid': os.getpid()}, open(a.json, 'w'))\n")
    (scripts / "bad.py").write_text("import sys\nopen(sys.argv[-1], 'w').write('{\"speedup\": 1.0}')\n"
                                    "raise RuntimeError('no model here')\n")  # a result, then a failure
    (scripts / "usage.py").write_text("import argparse\nap = argparse.ArgumentParser()\n"
                                      "ap.add_argument('--needed', required=True)\nap.parse_args()\n")
    monkeypatch.setattr(bench, "BENCH_DIR", scripts)
    monkeypatch.setattr(bench, "_jobs", lambda root, quick: {
        "first": ["good.py", "--x", "2"], "broken": ["bad.py"], "bad_args": ["usage.py"],
        "second": ["good.py", "--x", "5"]})
    root = tmp_path / "demo"
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "broken.json").write_text(json.dumps({"speedup": 99.0}))  # stale: must not count
    out = bench.run_benches(root)
    assert out["ratios"] == {"first": 6.0, "second": 15.0}
    assert out["details"]["first"]["pid"] == out["details"]["second"]["pid"]  # one child process for all
    assert out["details"]["broken"] == {"error": ["RuntimeError: no model here"]}
    assert "exited with status 2" in out["details"]["bad_args"]["error"][0]
    assert out["commands"]["second"] == "python bench/good.py --x 5"
    assert "measured 5.0" in (root / "bench" / "second.txt").read_text()
