"""The run directory of every training verb (DESIGN §6).

    RUN/run.json         what was run: verb, settings, parameter counts, measured peak FLOP/s
    RUN/metrics.jsonl    one JSON object per logged step (train) or evaluation (``"split": "val"``)
    RUN/checkpoints/     resumable state, see ``mmphi.train.checkpoint``
    RUN/final/           a self-contained ``from_pretrained``-style directory
    RUN/loss.png         the loss curve
    RUN/summary.json     the verb's result (initial/final losses, metrics)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmphi.common.charts import line_chart


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.final = self.path / "final"
        self.metrics_file = self.path / "metrics.jsonl"

    def create(self) -> RunDir:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        out = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
        return out

    def truncate_metrics(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint being resumed (they will be re-logged)."""
        kept = [m for m in self.metrics() if m.get("step", 0) <= step]
        self.metrics_file.write_text("".join(json.dumps(m) + "\n" for m in kept))

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        path = self.path / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        tmp.replace(path)
        return path

    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else None

    def plot_loss(self, title: str, hlines: dict[str, float] | None = None, metric: str = "loss") -> Path:
        """Train and validation loss against step, from metrics.jsonl."""
        rows = self.metrics()
        train = [(m["step"], m[metric]) for m in rows if "split" not in m and metric in m]
        val = [(m["step"], m["eval_loss"]) for m in rows if m.get("split") == "val" and "eval_loss" in m]
        series = {}
        if train:
            series["train"] = ([s for s, _ in train], [v for _, v in train])
        if val:
            series["val"] = ([s for s, _ in val], [v for _, v in val])
        return line_chart(self.path / "loss.png", title, series, xlabel="step", ylabel="loss", hlines=hlines)
