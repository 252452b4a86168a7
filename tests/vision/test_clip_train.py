"""``mmphi clip``: the tiny recipe's own CLIP, trained through the shared loop."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPModel

from mmphi.cli import main
from mmphi.vision.clip_train import LiveRowsEmbedding, image_processor, normalise

TINY = json.dumps({"projection_dim": 16,
                   "vision_config": {"image_size": 96, "patch_size": 32, "hidden_size": 32, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "intermediate_size": 64},
                   "text_config": {"vocab_size": 50304, "hidden_size": 32, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                                   "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256}})


def test_normalisation_equals_the_clip_image_processor(small_world):
    path = next((small_world / "val" / "images").iterdir())
    with Image.open(path) as im:
        reference = image_processor(96)(images=im.convert("RGB"), return_tensors="pt")["pixel_values"]
        ours = normalise(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)[None])
    assert torch.allclose(ours, reference, atol=1e-5)


def test_clip_trains_and_saves_a_loadable_model(small_world, tmp_path):
    out = tmp_path / "clip"
    assert main(["clip", "--data", str(small_world), "--out", str(out), "--model", TINY, "--max-steps", "30",
                 "--batch-size", "16", "--lr", "0.002", "--warmup-steps", "3", "--eval-every", "1000",
                 "--eval-batches", "1", "--log-every", "5", "--retrieval-images", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]  # contrastive loss goes down
    assert 0 <= summary["retrieval"]["top1"] <= 1 and summary["retrieval"]["n"] == 6
    model = CLIPModel.from_pretrained(out / "final")
    assert model.config.vision_config.patch_size == 32
    assert (out / "final" / "preprocessor_config.json").exists() and (out / "final" / "tokenizer.json").exists()
    assert (out / "loss.png").exists()


def test_live_rows_embedding_reads_like_the_plain_one_and_trains_only_its_rows():
    torch.manual_seed(0)
    plain = torch.nn.Embedding(50, 4)
    before = plain.weight.detach().clone()
    live = LiveRowsEmbedding(plain, torch.tensor([3, 7, 11]))
    ids = torch.tensor([[3, 7, 20], [11, 0, 3]])  # 20 and 0 are not live: they read their frozen rows
    assert torch.equal(live(ids), before[ids])
    assert [n for n, p in live.named_parameters() if p.requires_grad] == ["live"]
    opt = torch.optim.SGD([live.live], lr=1.0)
    live(ids).sum().backward()
    opt.step()
    merged = live.merged()
    assert isinstance(merged, torch.nn.Embedding)
    changed = (merged.weight.detach() != before).any(dim=1)
    assert torch.equal(torch.nonzero(changed).flatten(), torch.tensor([3, 7, 11]))


def test_the_saved_clip_has_trained_caption_rows_and_untouched_other_rows(small_world, tmp_path):
    out = tmp_path / "clip"
    assert main(["clip", "--data", str(small_world), "--out", str(out), "--model", TINY, "--max-steps", "5",
                 "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "1000", "--eval-batches", "1",
                 "--retrieval-images", "4"]) == 0
    saved = CLIPModel.from_pretrained(out / "final")
    assert type(saved.text_model.embeddings.token_embedding) is torch.nn.Embedding
    torch.manual_seed(0)  # the run's seed: the same initial weights
    initial = CLIPModel(saved.config).text_model.embeddings.token_embedding.weight
    trained = saved.text_model.embeddings.token_embedding.weight
    tok = AutoTokenizer.from_pretrained(out / "final")
    texts = [a["caption"] for split in ("train", "val")
             for a in json.loads((small_world / split / "captions.json").read_text())["annotations"]]
    used = sorted({i for ids in tok(texts).input_ids for i in ids})
    unused = next(i for i in range(1000, 2000) if i not in used)
    assert not torch.allclose(trained[used], initial[used])
    assert torch.equal(trained[unused], initial[unused])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_params"] == sum(p.numel() for p in saved.parameters())
