"""A tiny world with spoken train/val/test clips, its audio and image feature stores, and a tiny stage-2 model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmphi.cli import main
from mmphi.world.build import build_world
from mmphi.world.config import WorldConfig

STEPS = ["--log-every", "1", "--warmup-steps", "1", "--eval-batches", "1", "--batch-size", "4", "--val-limit", "4"]


@pytest.fixture(scope="session")
def speech_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech-world")
    build_world(WorldConfig(out=str(out), scenes=40, corpus_scenes=0, speech=4, speech_train=16, speech_captions=6,
                            speech_val=6, seed=4))
    return out


@pytest.fixture(scope="session")
def speech_inputs(speech_world, tiny_clip_dir, tmp_path_factory) -> dict:
    """Stores of both kinds and a tiny stage-2 (plain LoRA) model to give speech to."""
    from helpers import make_lm

    root = tmp_path_factory.mktemp("speech-stages")
    assert main(["embed-audio", "--data", str(speech_world), "--out", str(root / "audio")]) == 0
    for split in ("train", "val"):
        assert main(["embed", "--vision", str(tiny_clip_dir), "--images", str(speech_world / split / "images"),
                     "--out", str(root / "features")]) == 0
    lm = make_lm(root / "lm", max_positions=256)
    common = ["--data", str(speech_world), "--features", str(root / "features"), "--log-every", "1",
              "--warmup-steps", "1", "--eval-batches", "1", "--batch-size", "4", "--val-limit", "0"]
    assert main(["align", *common, "--lm", str(lm), "--vision", str(tiny_clip_dir), "--out", str(root / "align"),
                 "--max-steps", "2"]) == 0
    assert main(["finetune", *common, "--init", str(root / "align" / "final"), "--out", str(root / "finetune"),
                 "--max-steps", "2", "--no-quantize"]) == 0
    return {"world": speech_world, "audio": root / "audio", "features": root / "features", "root": root,
            "model": root / "finetune" / "final"}


@pytest.fixture(scope="session")
def speech_model(speech_inputs) -> Path:
    """speech-align then speech-finetune on the tiny model: a folder with an audio projector."""
    s, root = speech_inputs, speech_inputs["root"]
    common = ["--data", str(s["world"]), "--audio-features", str(s["audio"]), "--features", str(s["features"]),
              *STEPS]
    assert main(["speech-align", "--init", str(s["model"]), "--out", str(root / "speech-align"),
                 "--max-steps", "12", "--lr", "0.01", *common]) == 0
    assert main(["speech-finetune", "--init", str(root / "speech-align" / "final"),
                 "--out", str(root / "speech-finetune"), "--max-steps", "4", *common]) == 0
    return root / "speech-finetune" / "final"
