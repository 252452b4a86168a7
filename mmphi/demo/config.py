"""Settings of ``mmphi demo``."""

from __future__ import annotations

from dataclasses import dataclass

from mmphi.config import opt


@dataclass
class DemoConfig:
    out: str = opt("runs/demo", "folder for the whole journey (world/, each stage's run, report.md)")
    seed: int = opt(0, "random seed of every stage")
    quick: bool = opt(False, "a much shorter run (smoke test, about 3 minutes)")
