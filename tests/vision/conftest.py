"""Tiny random CLIP checkpoints (saved like a hub model) for the vision tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from mmphi.tokenizer import EOS_ID


def make_clip(out: Path, seed: int = 0, image_size: int = 96, patch_size: int = 32, hidden: int = 64,
              layers: int = 3, text_hidden: int = 32, vocab_size: int = EOS_ID + 1) -> Path:
    """A random CLIPModel + CLIPImageProcessor saved to ``out``; its text side speaks GPT-2 BPE ids."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=text_hidden, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=2 * text_hidden, max_position_embeddings=48,
                         eos_token_id=EOS_ID, bos_token_id=EOS_ID, pad_token_id=EOS_ID),
        vision_config=dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden,
                           num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden),
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """96 px, patch 32 (3x3 = 9 patch tokens), hidden 64, 3 layers, projection 24."""
    return make_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory) -> Path:
    """Same shapes as ``tiny_clip``, different weights (as if retrained into the same path)."""
    return make_clip(tmp_path_factory.mktemp("clip-other"), seed=1)
