"""Builders of tiny random models saved like hub checkpoints, shared by the tests (on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PhiConfig, PhiForCausalLM

from mmphi.tokenizer import EOS_ID, build_offline_tokenizer


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




def make_lm(out: Path, seed: int = 0, max_positions: int = 128, hidden: int = 32, layers: int = 2) -> Path:
    """A random PhiForCausalLM (2 layers by default) with Phi-2's vocabulary and the offline tokenizer."""
    torch.manual_seed(seed)
    heads = max(2, hidden // 64)
    lm = PhiForCausalLM(PhiConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=2 * hidden,
                                  max_position_embeddings=max_positions,
                                  bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID))
    lm.save_pretrained(out)
    build_offline_tokenizer().save_pretrained(out)
    return out


def make_multimodal(out: Path, clip_dir: Path, seed: int = 0, max_positions: int = 128, hidden: int = 32,
                    layers: int = 2) -> Path:
    """A saved multimodal model directory: random tiny LM + ``clip_dir``'s encoder + a random projector."""
    from mmphi.mm.model import MultimodalLM
    from mmphi.mm.projector import build_projector
    from mmphi.tokenizer import load_tokenizer
    from mmphi.vision.encoder import VisionEncoder

    lm_dir = make_lm(out / "lm-source", seed, max_positions, hidden, layers)
    encoder = VisionEncoder.from_pretrained(str(clip_dir))
    torch.manual_seed(seed)
    lm = PhiForCausalLM.from_pretrained(lm_dir)
    projector = build_projector("mlp2x_gelu", encoder.feature_dim, lm.config.hidden_size)
    spec = {"projector": {"kind": "mlp2x_gelu", "in_dim": encoder.feature_dim, "out_dim": lm.config.hidden_size},
            "image_tokens": encoder.num_tokens, "vision": {"identity": encoder.identity()}, "system": "",
            "quantized": False}
    MultimodalLM(lm, projector, spec).save_pretrained(out / "model", load_tokenizer(str(lm_dir)), str(lm_dir),
                                                      str(clip_dir))
    return out / "model"


def write_wav(path: Path, samples, rate: int = 16000) -> Path:
    """16-bit mono WAV of float ``samples`` in [-1, 1]."""
    import wave

    import numpy as np

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path
