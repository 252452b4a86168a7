"""The bundled vision tower ``mmphi/tiny-clip``: resolvable offline, loads as the tiny recipe's encoder, the
weights its card names, and the command that makes it (at a small step count)."""

from __future__ import annotations

import json

from PIL import Image

from mmphi.bundled import MODELS_DIR, bundle_facts, bundled_path, sha256_of
from mmphi.cli import main
from mmphi.config import load_recipe
from mmphi.vision.encoder import VisionEncoder

NAME = "mmphi/tiny-clip"


def test_the_tiny_recipe_reads_images_with_the_bundled_tower_offline():
    assert load_recipe("tiny")["align"]["vision"] == NAME
    assert load_recipe("tiny-full")["align"]["vision"] == ""  # tiny-full trains its own CLIP
    encoder = VisionEncoder.from_pretrained(NAME)
    feats = encoder.encode([Image.new("RGB", (96, 96), (200, 30, 30))])
    assert tuple(feats.shape) == (1, 9, 128)  # a 3x3 grid of patch tokens, one per scene cell
    assert encoder.identity()["encoder"] == NAME  # stores and models record the portable name, not a path


def test_the_weights_are_the_ones_the_model_card_names():
    facts = bundle_facts(NAME)
    folder = bundled_path(NAME)
    assert folder == MODELS_DIR / "tiny-clip"
    assert facts is not None and sha256_of(folder / facts["weights"]) == facts["sha256"]
    card = (folder / "README.md").read_text()
    assert facts["sha256"] in card and all(c in card for c in facts["commands"])
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip_vision_model"


def test_the_command_that_makes_it_bundles_a_run(small_world, tmp_path):
    into = tmp_path / "tiny-clip"
    assert main(["clip", "--data", str(small_world), "--out", str(tmp_path / "c"), "--max-steps", "3",
                 "--batch-size", "8", "--eval-every", "1000", "--save-every", "1000", "--retrieval-images", "4",
                 "--bundle-into", str(into)]) == 0
    facts = json.loads((into / "bundle.json").read_text())
    assert facts["steps"] == 3 and sha256_of(into / facts["weights"]) == facts["sha256"]
    assert VisionEncoder.from_pretrained(str(into)).num_tokens == 9
