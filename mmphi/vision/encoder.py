"""A frozen vision tower (CLIP, optionally SigLIP) that turns images into feature tokens.

Two feature modes:
- ``patch``: hidden states of one encoder layer (LLaVA's ``mm_vision_select_layer``, default
  -2 = penultimate), CLS token dropped, e.g. (B, 49, 768) for ViT-B/32 at 224 px.
- ``pooled``: the projected image embedding CLIP uses for retrieval, (B, 1, projection_dim).

Loading works from a full ``CLIPModel`` directory / hub id (the text tower is ignored) or a
vision-only checkpoint. transformers 5.x quirk: ``CLIPVisionModelWithProjection.from_pretrained``
on a ``CLIPModel`` checkpoint builds its projection from ``vision_config.projection_dim``
(default 512), not the checkpoint's top-level ``projection_dim``, and then refuses the
mismatched weight; we therefore pass a vision config with the right ``projection_dim``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, PretrainedConfig

from mmphi.errors import MmphiError
from mmphi.quiet import quiet_transformers

MODES = ("patch", "pooled")


class VisionEncoderError(MmphiError):
    """The vision encoder cannot be loaded or used as asked; the message says why."""


@dataclass(frozen=True)
class _Family:
    """How one model family exposes its vision tower."""

    patch_cls: str  # transformers class for patch features
    pooled_cls: str  # transformers class for the pooled embedding
    has_cls_token: bool  # CLIP prepends a CLS token to the patches; SigLIP does not


FAMILIES = {
    "clip": _Family("CLIPVisionModel", "CLIPVisionModelWithProjection", has_cls_token=True),
    "siglip": _Family("SiglipVisionModel", "SiglipVisionModel", has_cls_token=False),
}
# Vision-only checkpoints carry their own model_type.
_VISION_ONLY = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}


def _vision_config(name_or_path: str) -> tuple[str, PretrainedConfig]:
    """(family, vision config) of a full two-tower or vision-only checkpoint."""
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise VisionEncoderError(f"cannot load the vision encoder config from {name_or_path!r}: {err}") from err
    if config.model_type in FAMILIES:
        vision = config.vision_config
        if hasattr(config, "projection_dim"):  # see the module docstring (transformers 5.x quirk)
            vision.projection_dim = config.projection_dim
        return config.model_type, vision
    if config.model_type in _VISION_ONLY:
        return _VISION_ONLY[config.model_type], config
    raise VisionEncoderError(f"{name_or_path!r} is a {config.model_type!r} model; the vision encoder must be one of "
                             f"{', '.join(FAMILIES)} (a full model or its vision tower)")


def resolve_layer(layer: int, num_layers: int) -> int:
    """Index into ``hidden_states`` (0 = embeddings, i = output of layer i) for a layer like -2."""
    index = layer if layer >= 0 else num_layers + 1 + layer
    if not 1 <= index <= num_layers:
        raise VisionEncoderError(f"layer {layer} does not exist: the tower has {num_layers} layers, so choose "
                                 f"1..{num_layers} or -{num_layers}..-1 (0 would be the patch embedding)")
    return index


class VisionEncoder(nn.Module):
    """Frozen vision tower + its image processor; ``forward`` maps pixels to (B, num_tokens, feature_dim)."""

    def __init__(self, tower: nn.Module, processor, *, name_or_path: str, family: str, mode: str,
                 layer: int | None, hidden_index: int, num_tokens: int, feature_dim: int, image_size: int) -> None:
        super().__init__()
        self.tower = tower.eval().requires_grad_(False)
        self.processor = processor
        self.name_or_path, self.family, self.mode, self.layer = name_or_path, family, mode, layer
        self.hidden_index = hidden_index
        self.num_tokens, self.feature_dim, self.image_size = num_tokens, feature_dim, image_size
        self._skip = 1 if mode == "patch" and FAMILIES[family].has_cls_token else 0
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, mode: str = "patch", layer: int = -2,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> VisionEncoder:
        """Load the tower and processor from a hub id or local directory (a full CLIP or a vision tower)."""
        if mode not in MODES:
            raise VisionEncoderError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        from mmphi.bundled import resolve_model

        given, name_or_path = name_or_path, resolve_model(name_or_path)  # a bundled name loads offline
        family, config = _vision_config(name_or_path)
        spec = FAMILIES[family]
        num_layers = config.num_hidden_layers
        index = resolve_layer(layer, num_layers) if mode == "patch" else num_layers
        import transformers

        model_cls = getattr(transformers, spec.patch_cls if mode == "patch" else spec.pooled_cls)
        try:
            with quiet_transformers():
                tower, info = model_cls.from_pretrained(name_or_path, config=config, dtype=dtype,
                                                        output_loading_info=True)
                processor = AutoImageProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError, RuntimeError) as err:
            raise VisionEncoderError(f"cannot load the vision encoder {name_or_path!r} ({model_cls.__name__} + "
                                     f"image processor, preprocessor_config.json): {err}") from err
        if info["missing_keys"]:  # transformers would initialise them at random and only warn
            raise VisionEncoderError(f"{name_or_path!r} has no weights for {', '.join(sorted(info['missing_keys']))} "
                                     f"(needed for mode {mode}); a vision-only checkpoint has no projection, so use "
                                     "mode patch or the full CLIP checkpoint")
        if mode == "patch":
            # The tower is frozen and only layer `index` is read: the layers above it never influence the
            # features, so drop them (saves 1/L of the compute for the usual penultimate layer).
            tower.encoder.layers = tower.encoder.layers[:index]
            grid = config.image_size // config.patch_size
            num_tokens, feature_dim = grid * grid, config.hidden_size
        elif family == "clip":
            num_tokens, feature_dim = 1, config.projection_dim
        else:
            if not config.vision_use_head:
                raise VisionEncoderError(f"{name_or_path!r} has no pooling head (vision_use_head=False); "
                                         "use mode patch")
            num_tokens, feature_dim = 1, config.hidden_size
        encoder = cls(tower.to(device), processor, name_or_path=given, family=family, mode=mode,
                      layer=layer if mode == "patch" else None, hidden_index=index, num_tokens=num_tokens,
                      feature_dim=feature_dim, image_size=config.image_size)
        side = encoder.preprocess([Image.new("RGB", (8, 8))]).shape[-2:]
        if tuple(side) != (config.image_size, config.image_size):
            raise VisionEncoderError(f"the image processor of {name_or_path!r} makes {tuple(side)} pixel images but "
                                     f"the model expects {config.image_size}x{config.image_size}; fix "
                                     "preprocessor_config.json (size / crop_size)")
        return encoder

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.tower.parameters()).dtype

    def fingerprint(self) -> str:
        """Digest of the tower's weights, so a store notices a retrained model saved under the same path.

        Hashed at bf16 precision so the same checkpoint loaded in fp32 or bf16 gives the same digest.
        """
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            for name, tensor in sorted(self.tower.state_dict().items()):
                digest.update(name.encode())
                # bf16 has no numpy dtype: hash its raw bits as int16.
                bits = tensor.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16)
                digest.update(bits.numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def identity(self) -> dict:
        """Everything that makes two sets of features comparable (see ``FeatureStore``)."""
        proc = self.processor
        return {
            "encoder": self.name_or_path,
            "family": self.family,
            "mode": self.mode,
            "layer": self.layer,
            "hidden_index": self.hidden_index if self.mode == "patch" else None,
            "num_tokens": self.num_tokens,
            "feature_dim": self.feature_dim,
            "image_size": self.image_size,
            "image_mean": [round(float(x), 6) for x in getattr(proc, "image_mean", None) or []],
            "image_std": [round(float(x), 6) for x in getattr(proc, "image_std", None) or []],
            "weights": self.fingerprint(),
        }

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise with the checkpoint's processor: (B, 3, H, W) float32."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_tokens, feature_dim) in the tower's dtype."""
        pixel_values = pixel_values.to(self.device, self.dtype)
        if self.mode == "pooled":
            out = self.tower(pixel_values=pixel_values)
            pooled = out.image_embeds if self.family == "clip" else out.pooler_output  # (B, D)
            return pooled.unsqueeze(1)  # (B, 1, D)
        # hidden_states[-1] is the last kept layer's output before any post-layernorm.
        hidden = self.tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-1]  # (B, 1+N, D)
        return hidden[:, self._skip:]  # (B, N, D): CLS dropped

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess + forward; images in any PIL mode (converted to RGB)."""
        return self(self.preprocess([im if im.mode == "RGB" else im.convert("RGB") for im in images]))
