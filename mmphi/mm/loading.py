"""Load a saved multimodal model directory (stage 1 or 2 ``final/``, or a ``--merge`` export)."""

from __future__ import annotations

from pathlib import Path

import torch

from mmphi.errors import MmphiError
from mmphi.lm.loading import default_device, load_causal_lm
from mmphi.mm.model import ModelLoadError, MultimodalLM, load_projector, read_spec, resolve
from mmphi.tokenizer import load_tokenizer


def load_encoder(path: str | Path, spec: dict, device: torch.device):
    """The vision encoder recorded in the spec, checked against the features the projector was trained on."""
    from mmphi.vision.encoder import VisionEncoder
    from mmphi.vision.store import describe, identity_mismatch

    vision = spec.get("vision", {})
    if "source" not in vision:
        return None
    ident = vision.get("identity", {})
    encoder = VisionEncoder.from_pretrained(resolve(path, vision["source"]), mode=ident.get("mode", "patch"),
                                            layer=ident.get("layer") or -2, device=device)
    wrong = identity_mismatch(ident, encoder.identity())
    if wrong:
        raise ModelLoadError(f"the vision encoder of {path} gives different features ({', '.join(wrong)}) from "
                             f"those the projector was trained on: {describe(ident)}")
    return encoder


def load_multimodal(path: str | Path, device: torch.device | None = None, quantize: bool | None = None,
                    with_encoder: bool = True) -> tuple[MultimodalLM, object]:
    """(model in eval mode, tokenizer). ``quantize`` None = as trained (4-bit if stage 2 used QLoRA)."""
    path = Path(path)
    spec = read_spec(path)
    device = device or default_device()
    tokenizer = load_tokenizer(str(path))
    q = bool(spec.get("quantized", False)) if quantize is None else quantize
    lm = load_causal_lm(resolve(path, spec["lm"]), quantize=q, device=device)
    if spec.get("adapters"):
        from peft import PeftModel

        try:
            lm = PeftModel.from_pretrained(lm, path / spec["adapters"])
        except (OSError, ValueError) as err:
            raise MmphiError(f"cannot load the LoRA adapters in {path / spec['adapters']}: {err}") from err
    projector = load_projector(path, spec).to(device)
    encoder = load_encoder(path, spec, device) if with_encoder else None
    audio = None
    if spec.get("audio"):
        from mmphi.mm.speech import load_audio_projector

        audio = load_audio_projector(path, spec).to(device)
    model = MultimodalLM(lm, projector, spec, encoder, audio)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer
