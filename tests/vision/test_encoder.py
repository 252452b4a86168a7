"""VisionEncoder: the features are exactly the chosen layer's patch tokens, or CLIP's image embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPVisionModel

from mmphi.vision.encoder import VisionEncoder, VisionEncoderError


def _images(n: int, seed: int = 0, size: int = 96) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def reference(tiny_clip) -> CLIPModel:
    return CLIPModel.from_pretrained(tiny_clip).eval()


@pytest.mark.parametrize("layer", [-2, -1, 1])
def test_patch_mode_is_the_chosen_layer_without_cls(tiny_clip, reference, layer):
    enc = VisionEncoder.from_pretrained(str(tiny_clip), mode="patch", layer=layer)
    pixels = enc.preprocess(_images(3))
    feats = enc(pixels)
    assert feats.shape == (3, 9, 64) and (enc.num_tokens, enc.feature_dim) == (9, 64)
    with torch.no_grad():
        hidden = reference.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    # hidden_states[0] is the embedding output, so layer -2 of 3 is index 2; token 0 is CLS.
    index = layer if layer > 0 else len(hidden) + layer
    torch.testing.assert_close(feats, hidden[index][:, 1:])
    assert not torch.allclose(feats, hidden[index][:, :-1])  # really the CLS that went, not the last patch


def test_pooled_mode_is_the_projected_image_embedding(tiny_clip, reference):
    enc = VisionEncoder.from_pretrained(str(tiny_clip), mode="pooled")
    images = _images(2)
    feats = enc.encode(images)
    assert feats.shape == (2, 1, 24) and (enc.num_tokens, enc.feature_dim) == (1, 24)
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=enc.preprocess(images)).pooler_output
    torch.testing.assert_close(feats[:, 0], expected)


def test_encode_converts_any_mode_to_rgb(tiny_clip):
    enc = VisionEncoder.from_pretrained(str(tiny_clip))
    rgb = _images(1)[0]
    torch.testing.assert_close(enc.encode([rgb.convert("RGBA")]), enc.encode([rgb]))
    grey = rgb.convert("L")
    torch.testing.assert_close(enc.encode([grey]), enc.encode([grey.convert("RGB")]))


def test_vision_only_checkpoint_gives_the_same_features(tiny_clip, tmp_path):
    CLIPVisionModel.from_pretrained(tiny_clip).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text((tiny_clip / "preprocessor_config.json").read_text())
    images = _images(2)
    full = VisionEncoder.from_pretrained(str(tiny_clip)).encode(images)
    tower = VisionEncoder.from_pretrained(str(tmp_path))
    torch.testing.assert_close(tower.encode(images), full)
    assert tower.identity()["weights"] == VisionEncoder.from_pretrained(str(tiny_clip)).identity()["weights"]
    # It has no visual projection: pooled features would come from random weights, so refuse.
    with pytest.raises(VisionEncoderError, match="has no weights for visual_projection.weight"):
        VisionEncoder.from_pretrained(str(tmp_path), mode="pooled")


def test_identity_tells_encoders_apart(tiny_clip, other_clip):
    a = VisionEncoder.from_pretrained(str(tiny_clip)).identity()
    assert a | {"encoder": None} == VisionEncoder.from_pretrained(str(tiny_clip)).identity() | {"encoder": None}
    assert VisionEncoder.from_pretrained(str(tiny_clip), dtype=torch.bfloat16).identity()["weights"] == a["weights"]
    assert VisionEncoder.from_pretrained(str(other_clip)).identity()["weights"] != a["weights"]
    pooled = VisionEncoder.from_pretrained(str(tiny_clip), mode="pooled").identity()
    assert (pooled["mode"], pooled["num_tokens"], pooled["feature_dim"]) == ("pooled", 1, 24)
    assert (a["mode"], a["num_tokens"], a["feature_dim"], a["image_size"]) == ("patch", 9, 64, 96)


def test_bad_settings_are_clear_errors(tiny_clip, tmp_path):
    with pytest.raises(VisionEncoderError, match="layer 4 does not exist: the tower has 3 layers"):
        VisionEncoder.from_pretrained(str(tiny_clip), layer=4)
    with pytest.raises(VisionEncoderError, match="mode must be one of patch, pooled"):
        VisionEncoder.from_pretrained(str(tiny_clip), mode="cls")
    with pytest.raises(VisionEncoderError, match="cannot load the vision encoder config"):
        VisionEncoder.from_pretrained(str(tmp_path / "nowhere"))
    # A processor that resizes to another size than the model's positions would fail deep inside torch.
    (tmp_path / "config.json").write_text((tiny_clip / "config.json").read_text())
    (tmp_path / "model.safetensors").symlink_to(tiny_clip / "model.safetensors")
    (tmp_path / "preprocessor_config.json").write_text(
        (tiny_clip / "preprocessor_config.json").read_text().replace("96", "64"))
    with pytest.raises(VisionEncoderError, match=r"makes \(64, 64\) pixel images but the model expects 96x96"):
        VisionEncoder.from_pretrained(str(tmp_path))


def test_siglip_patch_tokens_have_no_cls_to_drop(tmp_path):
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = SiglipConfig(text_config=small, vision_config=small | {"image_size": 96, "patch_size": 32})
    model = SiglipModel(config).eval()
    model.save_pretrained(tmp_path)
    SiglipImageProcessorPil(size={"height": 96, "width": 96}).save_pretrained(tmp_path)
    enc = VisionEncoder.from_pretrained(str(tmp_path), layer=-1)
    pixels = enc.preprocess(_images(2))
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        pooled = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(enc(pixels), hidden)  # (2, 9, 32): all nine patches
    torch.testing.assert_close(VisionEncoder.from_pretrained(str(tmp_path), mode="pooled")(pixels)[:, 0], pooled)
