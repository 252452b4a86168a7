"""Image -> caption retrieval: agrees with CLIP's own logits, ranks correctly, pools at the EOS."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import CLIPModel

from mmphi.errors import MmphiError
from mmphi.tokenizer import EOS_ID, load_tokenizer
from mmphi.vision.encoder import VisionEncoder
from mmphi.vision.retrieval import retrieval_accuracy, tokenize_captions


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("offline")


@pytest.fixture(scope="module")
def model(tiny_clip) -> CLIPModel:
    return CLIPModel.from_pretrained(tiny_clip).eval()


def _pairs(world, n: int) -> tuple[list[Image.Image], list[str]]:
    coco = json.loads((world / "val" / "captions.json").read_text())
    first: dict[int, str] = {}
    for a in coco["annotations"]:
        first.setdefault(a["image_id"], a["caption"])
    images = [Image.open(world / "val" / "images" / im["file_name"]) for im in coco["images"][:n]]
    return images, [first[im["id"]] for im in coco["images"][:n]]


def test_agrees_with_clip_forward_logits(model, tiny_clip, tokenizer, small_world):
    images, captions = _pairs(small_world, 6)
    encoder = VisionEncoder.from_pretrained(str(tiny_clip))
    result = retrieval_accuracy(model, encoder, tokenizer, images, captions, batch_size=4)
    ids, mask = tokenize_captions(tokenizer, sorted(set(captions)), model.config.text_config)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=encoder.preprocess(images)).logits_per_image
    target = torch.tensor([sorted(set(captions)).index(c) for c in captions])
    ranked = logits.topk(5, dim=-1).indices  # (N, 5)
    assert result["top1"] == pytest.approx((ranked[:, 0] == target).float().mean().item())
    assert result["top5"] == pytest.approx((ranked == target[:, None]).any(-1).float().mean().item())
    assert (result["n"], result["chance"], result["chance_top5"]) == (6, pytest.approx(1 / 6), pytest.approx(5 / 6))
    # The plain image processor gives the same answer as the VisionEncoder.
    assert retrieval_accuracy(model, encoder.processor, tokenizer, images, captions) == result


class _Oracle(torch.nn.Module):
    """A stand-in CLIP whose embeddings are chosen: caption "k" -> e_k; image k -> e_k, or mostly e_{k+1}."""

    def __init__(self, n: int, confused: set[int], tokenizer) -> None:
        super().__init__()
        self.n, self.confused, self.tokenizer = n, confused, tokenizer
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(text_config=SimpleNamespace(eos_token_id=EOS_ID, max_position_embeddings=16,
                                                                  vocab_size=EOS_ID + 1))

    def get_image_features(self, pixel_values):
        k = pixel_values[:, 0].long()
        out = torch.nn.functional.one_hot(k, self.n).float()
        wrong = torch.tensor([int(i) in self.confused for i in k])
        out[wrong] += 2 * torch.nn.functional.one_hot((k[wrong] + 1) % self.n, self.n).float()  # ranked 1st
        return out

    def get_text_features(self, input_ids, attention_mask):
        rows = [row[: n - 1] for row, n in zip(input_ids, attention_mask.sum(-1), strict=True)]  # EOS cut
        digits = torch.tensor([int(self.tokenizer.decode(row)) for row in rows])
        return torch.nn.functional.one_hot(digits, self.n).float()


def test_ranking_chance_and_duplicate_captions(tokenizer):
    oracle = _Oracle(8, confused={1, 4}, tokenizer=tokenizer)
    images = [Image.new("RGB", (4, 4), (k, 0, 0)) for k in range(8)]
    pixels = lambda images, return_tensors: {"pixel_values": torch.tensor([[im.getpixel((0, 0))[0]] for im in images])}
    result = retrieval_accuracy(oracle, pixels, tokenizer, images, [str(k) for k in range(8)], batch_size=3)
    assert result == {"top1": 6 / 8, "top5": 1.0, "chance": 1 / 8, "chance_top5": 5 / 8, "n": 8, "n_captions": 8}
    # Images 6 and 7 share the caption "6": retrieval is among the 7 distinct texts.
    result = retrieval_accuracy(oracle, pixels, tokenizer, images[:7] + [images[6]], [str(k) for k in range(7)] + ["6"])
    assert (result["n"], result["n_captions"], result["chance"]) == (8, 7, 1 / 7)
    with pytest.raises(MmphiError, match="one caption per image, got 8 images and 7 captions"):
        retrieval_accuracy(oracle, pixels, tokenizer, images, [str(k) for k in range(7)])


def test_captions_end_with_the_eos_clip_pools_at(model, tokenizer):
    captions = ["a red circle", "two blue squares at the top and a green triangle on the left", "x"]
    cfg = model.config.text_config
    ids, mask = tokenize_captions(tokenizer, captions, cfg)
    lengths = mask.sum(-1)
    assert ids[torch.arange(3), lengths - 1].tolist() == [EOS_ID] * 3
    assert (ids[0, : lengths[0] - 1] == torch.tensor(tokenizer("a red circle")["input_ids"])).all()
    with torch.no_grad():
        out = model.text_model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(3), lengths - 1])
    # Too long: truncated to the position table, EOS kept.
    ids, mask = tokenize_captions(tokenizer, ["word " * 100], cfg)
    assert ids.shape == (1, cfg.max_position_embeddings) and ids[0, -1] == EOS_ID


def test_eos_that_clip_would_not_pool_at_is_an_error(model, tokenizer):
    with pytest.raises(MmphiError, match=r"would pool caption 0 .* at position 1, not at its EOS"):
        tokenize_captions(tokenizer, ["a<|endoftext|> red circle"], model.config.text_config)
    other = SimpleNamespace(**(model.config.text_config.to_dict() | {"vocab_size": 1000}))
    with pytest.raises(MmphiError, match="does not cover this tokenizer"):
        tokenize_captions(tokenizer, ["a red circle"], other)
