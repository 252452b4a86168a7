"""``scripts/rehearse.py``: the whole phi2 journey at the real shapes on CPU, every check of it passing.

Slow (about 10 minutes on 2 cores); the checks it makes are in ``scripts/rehearsal_checks.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rehearse.py"
CHECKED = ("corpus", "pretrain", "embed-coco-val", "align", "finetune", "chat", "serve", "embed-coco-val-b32",
           "align-b32")


@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_and_passes_its_checks(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True, timeout=3600, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = json.loads(out.read_text())["stages"]
    missing = [name for name in CHECKED if "checked" not in stages.get(name, {})]
    assert not missing, missing
    assert stages["finetune"]["resume"] == {"killed_after_step": 2, "resumed_at_step": 3}
    assert stages["align"]["checked"]["conversations"]["answers_ending_in_eos"] > 0
    assert stages["serve"]["checked"]["prompt_tokens"] > 576
    assert "every step was complete and skipped on the second run" in proc.stdout
