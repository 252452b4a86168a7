"""Tiny random CLIP checkpoints (saved like a hub model) for the vision tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """96 px, patch 32 (3x3 = 9 patch tokens), hidden 64, 3 layers, projection 24."""
    return make_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory) -> Path:
    """Same shapes as ``tiny_clip``, different weights (as if retrained into the same path)."""
    return make_clip(tmp_path_factory.mktemp("clip-other"), seed=1)
