"""Stages 1 and 2 end to end on tiny models: align -> finetune (QLoRA on CPU) -> load -> answer; resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmphi.cli import main

STEPS = ["--log-every", "1", "--warmup-steps", "2", "--eval-batches", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def stage_inputs(small_world, tiny_clip_dir, tmp_path_factory) -> dict:
    from helpers import make_lm

    root = tmp_path_factory.mktemp("stages")
    lm = make_lm(root / "lm", max_positions=256)
    store = root / "features"
    for split in ("train", "val"):
        assert main(["embed", "--vision", str(tiny_clip_dir), "--images", str(small_world / split / "images"),
                     "--out", str(store)]) == 0
    return {"world": small_world, "lm": lm, "clip": tiny_clip_dir, "store": store, "root": root}


@pytest.fixture(scope="module")
def aligned(stage_inputs) -> Path:
    s = stage_inputs
    out = s["root"] / "align"
    assert main(["align", "--data", str(s["world"]), "--features", str(s["store"]), "--lm", str(s["lm"]),
                 "--vision", str(s["clip"]), "--out", str(out), "--max-steps", "6", "--eval-every", "3",
                 "--lr", "0.01", *STEPS]) == 0
    return out


def test_a_max_len_that_cannot_hold_the_image_is_refused_before_training(stage_inputs, tmp_path, capsys):
    """Every caption would be dropped as too long (CLIP ViT-L/14-336's 576 tokens under max_len 512): an error."""
    s = stage_inputs
    assert main(["align", "--data", str(s["world"]), "--features", str(s["store"]), "--lm", str(s["lm"]),
                 "--vision", str(s["clip"]), "--out", str(tmp_path / "a"), "--max-len", "16", *STEPS]) == 1
    err = capsys.readouterr().err
    assert "fits --max-len 16 beside its 9 image tokens" in err and "raise --max-len" in err


def test_align_trains_only_the_projector_and_reports_blind_loss(aligned, stage_inputs):
    summary = json.loads((aligned / "summary.json").read_text())
    facts = json.loads((aligned / "run.json").read_text())
    spec = json.loads((aligned / "final" / "mmphi.json").read_text())
    p = spec["projector"]
    width = p["hidden"] or 32  # D->H (geglu: twice, gate and up), H->k*C (C = the LM's 32), a code per position
    out = 32 * p["tokens_per_feature"]
    inputs = {"mlp2x_gelu": 1, "geglu": 2}[p["kind"]]
    assert facts["trainable_params"] == (inputs * (p["in_dim"] * width + width) + width * out + out
                                         + p["positions"] * p["in_dim"])
    patches = json.loads((stage_inputs["store"] / "store.json").read_text())["identity"]["num_tokens"]
    assert spec["image_tokens"] == patches * p["tokens_per_feature"]
    assert "val_caption_loss_blind" in summary and summary["val_caption_loss"] > 0
    assert (aligned / "final" / "lm" / "config.json").exists() and (aligned / "final" / "vision").is_dir()
    pad = facts["padding"]  # the padding share of an epoch's batches, as formed and unsorted
    assert (pad["group_by"], pad["batch_size"], pad["processes"]) == ("modality", 8, 1)
    assert 0 <= pad["grouped"] < pad["unsorted"]
    assert (aligned / "loss.png").exists()


def _answer_loss(model_dir: Path, s: dict, batches: int) -> float:
    """Loss on the answers of the world's val conversations through a saved stage-1 model (LM frozen)."""
    import torch

    from mmphi.mm.data import ChatEncoder, llava_examples
    from mmphi.mm.loading import load_multimodal
    from mmphi.mm.task import ConversationTask
    from mmphi.train.loop import evaluate_loss
    from mmphi.vision.store import FeatureStore

    model, tok = load_multimodal(model_dir)
    enc = ChatEncoder(tok, model.image_tokens, model.spec.get("system", ""), 256)  # the recipe's max_len
    val = llava_examples(s["world"] / "val" / "instruct.json", enc)[0]
    task = ConversationTask(val, val, FeatureStore.open(s["store"]), enc.pad_id, 0, 8, 0.0, None)
    return evaluate_loss(task, model, torch.device("cpu"), batches)


def test_align_keeps_the_candidate_through_which_the_lm_answers_best(aligned, stage_inputs):
    from safetensors.torch import load_file

    picked = json.loads((aligned / "summary.json").read_text())["candidates"]
    rows = picked["all"]
    assert [r["seed"] for r in rows] == [0, 1, 2]  # the recipe's three, from --seed 0
    losses = [r["selection_loss"] for r in rows]
    assert len(set(losses)) == 3 and picked["seed"] == rows[losses.index(min(losses))]["seed"]
    assert picked["by"] == "held-out answer loss"
    kept = load_file(aligned / "final" / "projector.safetensors")
    own = load_file(aligned / "candidates" / f"seed-{picked['seed']}" / "final" / "projector.safetensors")
    assert kept.keys() == own.keys() and all(kept[k].equal(own[k]) for k in kept)
    assert not (aligned / "candidates" / "seed-0" / "final" / "lm").exists()  # candidates keep projectors only
    # The saved final/ is the chosen model: its answer loss, measured afresh, is the one it was chosen by.
    assert _answer_loss(aligned / "final", stage_inputs, 1) == pytest.approx(min(losses), rel=1e-5)


def test_finetune_qlora_evaluates_mid_training_and_loads_for_chat(aligned, stage_inputs):
    s = stage_inputs
    out = s["root"] / "finetune"
    assert main(["finetune", "--data", str(s["world"]), "--features", str(s["store"]), "--init",
                 str(aligned / "final"), "--out", str(out), "--max-steps", "6", "--eval-every", "2",
                 "--val-limit", "12", "--lora-r", "4", "--lora-alpha", "8", "--merge", *STEPS]) == 0
    summary = json.loads((out / "summary.json").read_text())
    spec = json.loads((out / "final" / "mmphi.json").read_text())
    assert spec["quantized"] is True and spec["adapters"] == "adapters"
    assert summary["val_vqa"]["image"]["overall"]["n"] == 12 and "blind" in summary["val_vqa"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in rows if r.get("split") == "val") >= 3  # step 0, mid-training, end
    from mmphi.infer.assistant import Assistant
    from mmphi.infer.generate import GenerationParams
    from mmphi.infer.inputs import Message

    image = next((s["world"] / "test" / "images").iterdir())
    for model_dir in (out / "final", out / "merged"):
        reply = Assistant.load(model_dir).reply([Message("user", "What colour is the circle?", image=image)],
                                                GenerationParams(max_new_tokens=3))
        assert reply.tokens > 0
    merged = json.loads((out / "merged" / "mmphi.json").read_text())
    assert merged["merged"] is True and "adapters" not in merged


def test_finetune_probes_every_candidate_and_goes_on_from_the_best(aligned, stage_inputs, tmp_path):
    import shutil

    s = stage_inputs
    args = ["finetune", "--data", str(s["world"]), "--features", str(s["store"]), "--max-steps", "8",
            "--eval-every", "1000", "--val-limit", "0", "--lora-r", "4", "--lora-alpha", "8", *STEPS]
    out = tmp_path / "probed"
    assert main([*args, "--init", str(aligned / "final"), "--out", str(out), "--probe-steps", "3"]) == 0
    probes = json.loads((out / "summary.json").read_text())["probes"]
    rows = probes["all"]
    assert sorted(r["seed"] for r in rows) == [0, 1, 2] and all(r["steps"] == 3 for r in rows)
    assert probes["seed"] == min(rows, key=lambda r: r["val_loss"])["seed"]
    # Going on from the winner's probe is the same as training from its projector without probes.
    alone = tmp_path / "init"
    shutil.copytree(aligned / "final", alone)
    shutil.copy(alone / probes["file"], alone / "projector.safetensors")
    spec = json.loads((alone / "mmphi.json").read_text())
    del spec["candidates"]
    (alone / "mmphi.json").write_text(json.dumps(spec))
    assert main([*args, "--init", str(alone), "--out", str(tmp_path / "alone")]) == 0
    expected, got = _losses(tmp_path / "alone"), _losses(out)
    assert sorted(got) == sorted(expected) == list(range(1, 9))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["align", "finetune"])
def test_stage_resumes_after_kill_9_with_the_same_losses(stage, aligned, stage_inputs):
    s = stage_inputs
    common = ["--data", str(s["world"]), "--features", str(s["store"]), "--max-steps", "40", "--save-every", "5",
              "--eval-every", "1000", "--val-limit", "0", *STEPS]
    if stage == "align":
        args = ["align", "--lm", str(s["lm"]), "--vision", str(s["clip"]), "--candidates", "1", *common]
    else:
        args = ["finetune", "--init", str(aligned / "final"), "--lora-r", "4", "--lora-alpha", "8", *common]
    assert main([*args, "--out", str(s["root"] / f"{stage}-a")]) == 0
    env = {**os.environ, "MMPHI_PRINT_SUMMARY": "0"}
    out = s["root"] / f"{stage}-b"
    proc = subprocess.Popen([sys.executable, "-m", "mmphi.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-10").exists():
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(_losses(out)) < 40
    again = subprocess.run([sys.executable, "-m", "mmphi.cli", *args, "--out", str(out), "--resume"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    expected, got = _losses(s["root"] / f"{stage}-a"), _losses(out)
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_align_candidates_resume_after_kill_9_and_choose_the_same(stage_inputs):
    s = stage_inputs
    args = ["align", "--lm", str(s["lm"]), "--vision", str(s["clip"]), "--data", str(s["world"]), "--features",
            str(s["store"]), "--max-steps", "20", "--save-every", "5", "--eval-every", "1000", "--candidates", "2",
            *STEPS]
    assert main([*args, "--out", str(s["root"] / "cand-a")]) == 0
    env = {**os.environ, "MMPHI_PRINT_SUMMARY": "0"}
    out = s["root"] / "cand-b"
    proc = subprocess.Popen([sys.executable, "-m", "mmphi.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out / "candidates" / "seed-1" / "checkpoints" / "step-10").exists():  # the second candidate
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run([sys.executable, "-m", "mmphi.cli", *args, "--out", str(out), "--resume"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    expected = json.loads((s["root"] / "cand-a" / "summary.json").read_text())["candidates"]
    got = json.loads((out / "summary.json").read_text())["candidates"]
    assert got["seed"] == expected["seed"]
    for a, b in zip(got["all"], expected["all"], strict=True):
        assert a["selection_loss"] == pytest.approx(b["selection_loss"], rel=1e-5)
