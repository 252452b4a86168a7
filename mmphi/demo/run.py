"""``mmphi demo``: the whole tiny journey end to end on the embedded default."""

from __future__ import annotations

from pathlib import Path

from mmphi.config import build, load_recipe
from mmphi.demo.config import DemoConfig
from mmphi.world.build import build_world
from mmphi.world.config import WorldConfig


def run_demo(cfg: DemoConfig) -> dict:
    recipe = load_recipe("tiny")
    root = Path(cfg.out)
    world_cfg = build(WorldConfig, recipe.get("world") or {},
                      {"out": str(root / "world"), "seed": cfg.seed, **({"scenes": 300, "corpus_scenes": 2000,
                                                                        "speech": 8} if cfg.quick else {})})
    summary = build_world(world_cfg)
    print(f"[world] {summary['splits']} scenes, {summary['speech']} spoken questions -> {world_cfg.out}")
    return {"world": world_cfg.out}
