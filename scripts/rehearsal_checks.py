"""What the rehearsal asserts after each stage of the phi2 journey (``scripts/rehearse.py``).

Each check raises ``AssertionError`` with what was wrong, and returns a few facts for the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from mmphi.tokenizer import EOS_ID, load_tokenizer

IGNORE = -100


def _json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _train_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def batch_arithmetic(run: Path, processes: int, batch: int, accum: int, steps: int) -> dict:
    """run.json's global batch = processes x batch x accumulation, and the samples counted match it."""
    facts, summary = _json(run / "run.json"), _json(run / "summary.json")
    global_batch = processes * batch * accum
    assert facts["world_size"] == processes, f"{run}: world_size {facts['world_size']} != {processes}"
    assert facts["global_batch"] == global_batch, f"{run}: global_batch {facts['global_batch']} != {global_batch}"
    assert summary["steps"] == steps, f"{run}: {summary['steps']} steps, expected {steps}"
    assert summary["samples"] == steps * global_batch, (
        f"{run}: {summary['samples']} samples in {steps} steps, expected {steps} x {global_batch}")
    steps_logged = [r["step"] for r in _train_rows(run)]
    assert steps_logged == list(range(1, steps + 1)), f"{run}: logged steps {steps_logged}"
    return {"global_batch": global_batch, "samples": summary["samples"]}


def corpus(out: Path, jsonl: list[Path]) -> dict:
    """Phi-2's tokenizer, ids below the vocabulary, every document ends with EOS, every text comes back."""
    meta = _json(out / "meta.json")
    assert meta["tokenizer"] == "microsoft/phi-2" and meta["eos_id"] == EOS_ID, meta
    tok = load_tokenizer("microsoft/phi-2")
    texts = [json.loads(line)["text"] for f in jsonl for line in f.read_text(encoding="utf-8").splitlines()]
    decoded = ""
    for split in ("train", "val"):
        ids = np.fromfile(out / f"{split}.bin", dtype=np.uint16).astype(np.int64)
        starts = np.fromfile(out / f"{split}.idx", dtype=np.uint64).astype(np.int64)
        assert ids.max() < 51200, f"{split}.bin holds id {ids.max()} >= Phi-2's vocabulary"
        ends = np.append(starts[1:], len(ids)) - 1
        assert (ids[ends] == EOS_ID).all(), f"a {split} document does not end with <|endoftext|>"
        decoded += tok.decode(ids.tolist())
    missing = [t[:40] for t in texts if t not in decoded]
    assert not missing, f"{len(missing)} JSONL texts do not come back from the tokens, e.g. {missing[0]!r}"
    return {"documents": meta["docs"], "train_tokens": meta["train_tokens"], "non_ascii_kept": "東京" in decoded}


def pretrain(run: Path, layers: int) -> dict:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(run / "final")
    want = {"hidden_size": 2560, "num_attention_heads": 32, "intermediate_size": 10240, "vocab_size": 51200,
            "num_hidden_layers": layers}
    got = {k: getattr(cfg, k) for k in want}
    assert got == want, f"stage 0's final/ config {got} != {want}"
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.4, cfg.rope_parameters
    assert (run / "final" / "tokenizer.json").is_file()
    return {"final_val_loss": _json(run / "summary.json")["final_val_loss"]}


def store(path: Path, tokens: int, dim: int, image_size: int, keys: int) -> dict:
    from mmphi.vision.store import FeatureStore

    fs = FeatureStore.open(path)
    ident = _json(path / "store.json")["identity"]
    assert (ident["num_tokens"], ident["feature_dim"], ident["image_size"]) == (tokens, dim, image_size), ident
    assert len(fs.keys()) == keys, f"{path}: {len(fs.keys())} images, expected {keys}"
    assert _json(path / "report.json")["count"] == 0, "images were skipped (greyscale JPEGs must be converted)"
    assert tuple(fs.get(fs.keys()[0]).shape) == (tokens, dim)
    return {"images": keys, "features": f"{tokens}x{dim}"}


def _answer_spans(labels: list[int]) -> list[list[int]]:
    spans, cur = [], []
    for t in labels:
        if t == IGNORE:
            if cur:
                spans.append(cur)
            cur = []
        else:
            cur.append(t)
    return [*spans, cur] if cur else spans


def examples(examples_: list, answers: list[list[str]], tok, image_tokens: int, images: list[bool]) -> dict:
    """No example without labels; each kept answer's labels are its tokens + EOS (the last one may be cut by
    max_len, and then carries no EOS); image records hold exactly ``image_tokens`` placeholders."""
    eos_ends, cut = 0, 0
    for ex, want, has_image in zip(examples_, answers, images, strict=True):
        spans = _answer_spans(ex.labels)
        assert spans, f"record {ex.id}: every label is masked (tokenisation mismatch?)"
        assert sum(ex.image_mask) == (image_tokens if has_image else 0), f"record {ex.id}: image placeholders"
        for k, span in enumerate(spans):
            full = tok(f" {want[k]}", add_special_tokens=False, split_special_tokens=True).input_ids + [EOS_ID]
            if span == full:
                eos_ends += 1
                continue
            assert k == len(spans) - 1 and span == full[:len(span)], (
                f"record {ex.id}, answer {k}: labels decode to {tok.decode(span)!r}, expected {want[k]!r} + EOS")
            cut += 1
    assert eos_ends, "no answer ends with an EOS label: the model would never learn to stop"
    return {"examples": len(examples_), "answers_ending_in_eos": eos_ends, "answers_cut_by_max_len": cut}


def padding(batch: dict, lengths: list[int]) -> None:
    """pad = EOS: padding is masked out of attention and loss, a real EOS in the sequence is neither."""
    for i, n in enumerate(lengths):
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()
        assert (batch["labels"][i, n:] == IGNORE).all() and (batch["input_ids"][i, n:] == EOS_ID).all()
        real_eos = (batch["input_ids"][i, :n] == EOS_ID) & ~batch["image_mask"][i, :n]
        assert real_eos.any(), f"row {i} has no real EOS"
        assert (batch["labels"][i, :n][real_eos] == EOS_ID).all(), f"row {i}: a real EOS is not a label"


def stage_data(align_final: Path, captions: Path, llava: Path, align_max_len: int, finetune_max_len: int,
               store_path: Path) -> dict:
    """Encode the real-format files the way stages 1 and 2 do and check labels, EOS and padding."""
    from mmphi.mm.data import ChatEncoder, caption_examples, collate, llava_examples
    from mmphi.vision.store import FeatureStore

    spec = _json(align_final / "mmphi.json")
    tok = load_tokenizer(str(align_final))
    assert tok.pad_token_id == EOS_ID, "Phi-2 has no pad token: EOS must stand in"
    n_img = spec["image_tokens"]
    enc = ChatEncoder(tok, n_img, spec["system"], align_max_len)
    coco = _json(captions)
    caps = caption_examples(captions, enc)
    assert len(caps) == len(coco["annotations"]), f"{len(coco['annotations']) - len(caps)} captions were dropped"
    by_id = {a["id"]: a["caption"].strip() for a in coco["annotations"]}
    facts = {"captions": examples(caps, [[by_id[int(e.id.split("-")[1])]] for e in caps], tok, n_img,
                                  [True] * len(caps))}
    enc2 = ChatEncoder(tok, n_img, spec["system"], finetune_max_len)
    records = _json(llava)
    convs, skipped = llava_examples(llava, enc2)
    assert skipped == 0 and len(convs) == len(records)
    by_rec = {str(r["id"]): r for r in records}
    answers = [[t["value"].strip() for t in by_rec[e.id]["conversations"][1::2]] for e in convs]
    facts["conversations"] = examples(convs, answers, tok, n_img, ["image" in by_rec[e.id] for e in convs])
    facts["conversations"]["text_only"] = sum("image" not in r for r in records)
    store = FeatureStore.open(store_path)
    mixed = sorted(convs, key=len)[:1] + sorted(convs, key=len)[-1:]  # the shortest beside the longest
    padding(collate(mixed, enc2.pad_id, store), [len(e) for e in mixed])
    return facts


def resumed(run: Path, log: str, killed_rows: list[dict], k: int, steps: int) -> dict:
    """The run killed after checkpoint ``k`` continued from step k + 1 on restart, not from 0."""
    assert len(killed_rows) >= k, f"the killed run logged {len(killed_rows)} steps, fewer than its checkpoint {k}"
    assert f"(step {k})" in log and "resuming from" in log, f"no 'resuming from ... (step {k})' in the log"
    rows = _train_rows(run)
    assert [r["step"] for r in rows] == list(range(1, steps + 1)), [r["step"] for r in rows]
    assert rows[:k] == killed_rows[:k], "the metrics of the steps before the kill were rewritten"
    return {"killed_after_step": k, "resumed_at_step": k + 1}


def projector_survives_merge(finetune: Path, align_final: Path, store_path: Path, llava: Path) -> dict:
    """The trained projector is the one in final/ and merged/ (not stage 1's), and merged/ computes what
    final/ (base + adapters) computes."""
    from mmphi.mm.data import ChatEncoder, collate, llava_examples
    from mmphi.mm.loading import load_multimodal
    from mmphi.train.checkpoint import latest_checkpoint
    from mmphi.vision.store import FeatureStore

    final, merged = finetune / "final", finetune / "merged"
    ckpt = latest_checkpoint(finetune / "checkpoints")
    assert ckpt is not None
    trained = {k.removeprefix("projector."): v for k, v in load_file(ckpt / "trainable.safetensors").items()
               if k.startswith("projector.")}
    in_final, in_merged = load_file(final / "projector.safetensors"), load_file(merged / "projector.safetensors")
    stage1 = load_file(align_final / "projector.safetensors")
    assert set(trained) == set(in_final) == set(in_merged), (sorted(trained), sorted(in_final))
    for k in trained:
        assert torch.equal(trained[k], in_final[k]) and torch.equal(in_final[k], in_merged[k]), k
    assert any(not torch.equal(in_final[k], stage1[k]) for k in in_final), "stage 2 did not change the projector"
    spec_m = _json(merged / "mmphi.json")
    assert spec_m["merged"] and not spec_m["quantized"] and "adapters" not in spec_m
    store = FeatureStore.open(store_path)
    outs = []
    for path in (final, merged):  # final/ in full precision: base + adapters, unmerged
        model, tok = load_multimodal(path, device=torch.device("cpu"), quantize=False, with_encoder=False)
        spec = model.spec
        enc = ChatEncoder(tok, spec["image_tokens"], spec["system"], 768)
        exs = [e for e in llava_examples(llava, enc)[0] if e.image][:2]
        b = collate(exs, enc.pad_id, store)
        with torch.no_grad():
            outs.append(model.hidden_states(b["input_ids"], b["attention_mask"], b["image_mask"], b["features"]))
        del model
    diff = float((outs[0] - outs[1]).abs().max())
    scale = float(outs[0].abs().max())
    assert diff <= 1e-3 * scale, f"merged/ differs from final/ by {diff} (scale {scale})"
    return {"projector_tensors": len(trained), "max_abs_diff_final_vs_merged": diff}
