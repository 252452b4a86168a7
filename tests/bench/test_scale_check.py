"""``bench/scale_check.py`` on the tiny recipe's shape: the counting and the step are right, the CLI runs."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mmphi.config import load_recipe

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scale_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("scale_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sc():
    return _load_script()


@pytest.fixture(scope="module")
def tiny_checkpoint(sc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "lm"
    sc.build_checkpoint(sc.model_spec(load_recipe("tiny")), out)
    return out


@pytest.mark.parametrize("quantize", [True, False], ids=["nf4", "bf16"])
def test_one_step_counts_parameters_exactly(sc, tiny_checkpoint, quantize):
    recipe = load_recipe("tiny")
    spec = sc.model_spec(recipe)
    assert sc.checkpoint_matches(tiny_checkpoint, spec)
    ft = sc.finetune_settings(recipe, {"lora_r": 8, "lora_alpha": 16})
    res = sc.run_config(tiny_checkpoint, quantize, ft, seq=64, batch=2)
    h, i, layers = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"]
    # LoRA on q, k, v, dense (h -> h) and fc1 / fc2 (h <-> i): r * (in + out) each.
    assert res["lora_params"] == 8 * layers * (4 * (h + h) + 2 * (h + i))
    assert res["projector_params"] == (768 * h + h) + (h * h + h)  # mlp2x_gelu: 768 -> h -> h
    assert res["trainable_params"] == res["lora_params"] + res["projector_params"]
    # The logical count (two 4-bit values per stored byte) is the same whether or not the LM is quantised.
    assert res["base_params"] == sum(p.numel() for p in _meta_phi(spec).parameters())
    assert (res["base_params_4bit"] > 0) == quantize
    assert res["loss_tokens"] > 0
    assert abs(res["loss"] - math.log(spec["vocab_size"])) < 1.0  # random init: about uniform
    assert res["peak_rss_step_gib"] > 0 and res["step_s"] > 0
    # mmphi --dry-run's formulas agree where the bench measures the same thing: weights and trainable counts.
    from scale_estimate import plan_estimate  # bench/, on the path once the script is loaded

    est = plan_estimate(spec, ft, 64, 2, quantize, sc.PROJECTOR, sc.IMAGE_TOKENS, sc.FEATURE_DIM)
    assert est["trainable_params"] == res["trainable_params"]
    assert est["weights_gb"] == pytest.approx(res["weights_gb"], rel=1e-3)
    assert 0 < est["step_gib"] < res["peak_rss_step_gib"]  # the process itself comes on top


def test_the_bench_estimate_is_the_finetune_dry_run_without_a_cuda_context(sc):
    """What scale_check prints as the estimate is ``mmphi finetune --dry-run``'s plan of the same step (the recipe's
    LM, ViT-B/32 features, mlp2x_gelu, LoRA, seq 64 x batch 2, torch AdamW), less the 1 GiB CUDA context it adds."""
    from scale_estimate import plan_estimate

    from mmphi.config import build
    from mmphi.mm.config import FinetuneConfig
    from mmphi.plan.memory import CUDA_CONTEXT, GIB
    from mmphi.plan.run import step_of
    from mmphi.plan.verbs import plan_finetune

    recipe = load_recipe("phi2")
    ft = sc.finetune_settings(recipe, {})
    for quantize in (True, False):
        est = plan_estimate(sc.model_spec(recipe), ft, 64, 2, quantize, sc.PROJECTOR, sc.IMAGE_TOKENS, sc.FEATURE_DIM)
        cfg = build(FinetuneConfig, recipe["finetune"], {"init": "-", "data": "-", "features": "-", "max_len": 64,
                                                         "batch_size": 2, "optimizer": "adamw", "quantize": quantize})
        planned = plan_finetune(cfg, recipe)
        dry = planned.estimate(step_of(cfg, planned)).total()
        assert (dry - CUDA_CONTEXT) / GIB == pytest.approx(est["step_gib"], rel=1e-9)


def _meta_phi(spec):
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    with torch.device("meta"):
        return PhiForCausalLM(PhiConfig(**spec))


def test_seq_too_short_for_the_image_is_refused(sc):
    from mmphi.tokenizer import build_offline_tokenizer

    with pytest.raises(ValueError, match="too short"):
        sc.make_batch(build_offline_tokenizer(), seq=40, batch=1)


@pytest.mark.slow
def test_cli_end_to_end_on_the_tiny_shape(tmp_path):
    out = tmp_path / "res.json"
    keep = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--recipe", "tiny", "--keep-checkpoint", str(keep),
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "peak step memory bf16 / 4-bit" in proc.stdout
    res = json.loads(out.read_text())
    assert res["peak_ratio"] == pytest.approx(res["bf16"]["peak_rss_step_gib"] / res["nf4"]["peak_rss_step_gib"])
    assert res["nf4"]["trainable_params"] == res["bf16"]["trainable_params"]
    assert (keep / "config.json").exists()  # kept, and reused on a second run
    again = subprocess.run([sys.executable, str(SCRIPT), "--recipe", "tiny", "--keep-checkpoint", str(keep)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the random checkpoint" in again.stdout
