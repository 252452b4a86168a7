"""Shared fixtures: a small shapes world generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmphi.world.build import build_world
from mmphi.world.config import WorldConfig


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """60 scenes, a short corpus and 4 spoken questions."""
    out = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(out=str(out), scenes=60, corpus_scenes=40, speech=4, seed=3))
    return out


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from helpers import make_clip

    return make_clip(tmp_path_factory.mktemp("clip-shared"))


@pytest.fixture(scope="session")
def tiny_mm_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    """A saved multimodal model: random tiny Phi (128-token context) + tiny CLIP + projector."""
    from helpers import make_multimodal

    return make_multimodal(tmp_path_factory.mktemp("mm"), tiny_clip_dir)
