"""``--dry-run`` on every training verb: the plan is printed, nothing heavy is loaded, too little memory is refused."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmphi.cli import main

ROOT = Path(__file__).resolve().parents[2]
VERBS = ("pretrain", "clip", "align", "finetune")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Small stand-in files: 100 captions of 40 images, 30 conversations (7 text-only), a 10,000-token corpus."""
    root = tmp_path_factory.mktemp("plan")
    coco = {"images": [{"id": i, "file_name": f"{i}.png"} for i in range(40)],
            "annotations": [{"image_id": i % 40, "id": i, "caption": "a red circle"} for i in range(100)]}
    (root / "captions.json").write_text(json.dumps(coco))
    conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A circle."}]
    records = [{"id": str(i), "image": f"{i}.png", "conversations": conv} for i in range(23)]
    records += [{"id": f"t{i}", "conversations": conv} for i in range(7)]
    (root / "instruct.json").write_text(json.dumps(records))
    (root / "corpus").mkdir()
    (root / "corpus" / "meta.json").write_text(json.dumps({"train_tokens": 10000, "val_tokens": 100}))
    return {"captions": root / "captions.json", "instruct": root / "instruct.json", "corpus": root / "corpus",
            "root": root}


def _argv(verb: str, d: dict[str, Path], *extra: str) -> list[str]:
    data = {"pretrain": d["corpus"], "clip": d["captions"], "align": d["captions"], "finetune": d["instruct"]}[verb]
    argv = [verb, "--data", str(data), "--out", str(d["root"] / verb), "--dry-run", *extra]
    if verb in ("align", "finetune"):
        argv += ["--features", str(d["root"] / "no-store")]
    if verb == "finetune":
        argv += ["--init", str(d["root"] / "not-aligned-yet")]  # planned from the recipe's align section
    return argv


def test_every_training_verb_plans_without_loading_torch_or_weights(data):
    """One fresh process runs the four dry runs, then shows that torch, transformers and safetensors were never
    imported: no weights (and no tokenizer) can have been loaded."""
    script = ("import json, sys\nfrom mmphi.cli import main\n"
              "for argv in json.loads(sys.argv[1]):\n    assert main(argv) == 0, argv\n"
              "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'safetensors', 'tokenizers') "
              "if m in sys.modules))\n")
    runs = [_argv(v, data) for v in VERBS] + [["base", "--out", str(data["root"] / "base"), "--dry-run"]]
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], capture_output=True, text=True,
                          env={**os.environ, "MMPHI_PRINT_SUMMARY": "0", "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"
    for verb in (*VERBS, "base"):
        assert f"mmphi {verb} --dry-run" in out
    assert out.count("global batch: 1 processes x") == 5 and out.count("memory per GPU (estimate") == 5
    assert not (data["root"] / "base").exists()  # the base's world was not built
    assert "100 captions of 40 images" in out and "40 captioned images" in out
    assert "30 records (7 text-only)" in out and "10,000 train tokens" in out
    assert "the recipe's align settings" in out  # finetune planned before stage 1 ran


def test_a_too_small_gpu_is_refused_with_the_settings_that_would_fit(data, capsys):
    argv = _argv("finetune", data, "--recipe", "phi2", "--gpu-memory", "16", "--no-grad-checkpointing")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "more than --gpu-memory 16" in err and "would fit: --grad-checkpointing" in err
    assert main(_argv("pretrain", data, "--recipe", "phi2", "--gpu-memory", "24")) == 1
    assert "--sharding full" in capsys.readouterr().err  # the full model fits only split over GPUs
    assert main(_argv("finetune", data, "--recipe", "phi2", "--gpu-memory", "16")) == 0


def _summary(capsys, argv: list[str]) -> dict:
    os.environ["MMPHI_PRINT_SUMMARY"] = "1"
    try:
        assert main(argv) == 0
    finally:
        del os.environ["MMPHI_PRINT_SUMMARY"]
    out = capsys.readouterr().out
    return json.loads(out[out.index("\n{") + 1:])


def test_global_batch_and_steps_per_epoch_follow_processes_and_accumulation(data, capsys, monkeypatch):
    s = _summary(capsys, _argv("align", data, "--processes", "4", "--batch-size", "8", "--grad-accum", "3"))
    assert s["processes"] == 4 and s["global_batch"] == 4 * 8 * 3
    assert s["steps_per_epoch"] == math.ceil(math.ceil(100 / 32) / 3)  # 4 global micro-batches of 32
    monkeypatch.setenv("WORLD_SIZE", "2")  # what accelerate launch / torchrun set
    s = _summary(capsys, _argv("finetune", data, "--batch-size", "4", "--grad-accum", "2"))
    assert (s["processes"], s["global_batch"]) == (2, 16)
    # Image and text-only records fill batches apart: ceil(23/8) + ceil(7/8) micro-batches, 2 per step.
    assert s["steps_per_epoch"] == math.ceil((3 + 1) / 2)
    s = _summary(capsys, _argv("pretrain", data, "--batch-size", "4", "--seq-len", "100"))
    assert s["steps_per_epoch"] == math.ceil(10000 // 100 / (2 * 4))


def test_base_plans_its_stage_0_to_the_last_step_it_trains(tmp_path, capsys):
    """``mmphi base`` is stage 0 on a world of its own: planned as that pretrain run, extend_to included; once a
    run has tokenised the world (OUT/pretrain/data/meta.json) the plan counts its windows."""
    from mmphi.config import load_recipe

    pre = load_recipe("tiny-base")["pretrain"]
    (tmp_path / "pretrain" / "data").mkdir(parents=True)
    (tmp_path / "pretrain" / "data" / "meta.json").write_text(json.dumps({"train_tokens": 1_000_000}))
    s = _summary(capsys, ["base", "--out", str(tmp_path), "--dry-run", "--extend-to", "50000", "--processes", "2"])
    assert s["verb"] == "base" and s["global_batch"] == 2 * pre["batch_size"] * pre.get("grad_accum", 1)
    micro = math.ceil(1_000_000 // pre["seq_len"] / (2 * pre["batch_size"]))  # windows in global micro-batches
    assert s["steps_per_epoch"] == math.ceil(micro / pre.get("grad_accum", 1))
    assert main(["base", "--out", str(tmp_path), "--dry-run", "--extend-to", "50000"]) == 0
    assert "max_steps 50,000" in capsys.readouterr().out
    assert main(["base", "--out", str(tmp_path), "--dry-run", "--gpu-memory", "0.5"]) == 1
    assert "more than --gpu-memory 0.5" in capsys.readouterr().err


def test_a_real_run_refuses_processes_it_was_not_launched_with(small_world, tmp_path, capsys):
    tiny = json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 64, "max_position_embeddings": 64})
    assert main(["pretrain", "--data", str(small_world), "--out", str(tmp_path / "run"), "--model", tiny,
                 "--max-steps", "1", "--seq-len", "32", "--text-qa", "0", "--no-compile", "--processes", "2"]) == 1
    assert "--processes 2 but 1 process(es) were launched" in capsys.readouterr().err
