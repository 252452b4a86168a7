"""Settings of ``mmphi demo``."""

from __future__ import annotations

from dataclasses import dataclass

from mmphi.config import check, opt


@dataclass
class DemoConfig:
    recipe: str = opt("tiny", "recipe whose sections set every stage (filled from --recipe)", cli=False)
    out: str = opt("runs/demo", "folder for the whole journey (world/, one run folder per stage, report.md)")
    seed: int = opt(0, "random seed of every stage")
    lm: str = opt("", "the LM stages 1-2 build on: a bundled name (mmphi/tiny-phi-base), a folder or a hub id; "
                      "empty = the recipe's align.lm (tiny: the bundled base), or this run's own stage 0 when the "
                      "recipe names none (tiny-full)")
    quick: bool = opt(False, "a much shorter run (smoke test: a small world and a few steps per stage)")
    bench: bool = opt(True, "measure the benchmark ratios (KV cache, one-pass alignment, feature store, "
                            "live-vocabulary head) on the trained models for the report")
    restart: bool = opt(False, "start over: delete what a previous run wrote in this folder (its stage "
                                      "folders, demo.json, report.md) and run every stage again")

    def __post_init__(self) -> None:
        check(bool(self.out), "out must be a folder")
