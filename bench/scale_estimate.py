"""``bench/scale_check.py``'s measurement beside what ``mmphi finetune --dry-run``'s formulas (``mmphi.plan``) give
for the same step: the weights as ``get_memory_footprint`` counts them, the trainable parameters, the step's
memory (plus the process itself, which a GPU estimate does not count)."""

from __future__ import annotations

from typing import Any

from mmphi.mm.config import FinetuneConfig


def plan_estimate(spec: dict[str, Any], ft: FinetuneConfig, seq: int, batch: int, quantize: bool, projector: str,
                  image_tokens: int, feature_dim: int) -> dict[str, Any]:
    """What ``mmphi finetune --dry-run``'s formulas (``mmphi.plan``) give for this step as the bench runs it:
    on a CPU (no CUDA context), torch AdamW (fp32 states), this projector; weights as get_memory_footprint
    counts them (the LoRA adapters inside, NF4 quantisation constants not)."""
    from mmphi.mm.config import LORA_TARGETS
    from mmphi.plan.estimates import Adapters, Images, Step, stage_memory
    from mmphi.plan.facts import lm_shape_from, projector_tensors
    from mmphi.plan.memory import GIB

    lm = lm_shape_from(spec, "the recipe's pretrain.model")
    proj = projector_tensors(projector, feature_dim, lm.hidden)
    targets = tuple(ft.lora_targets or LORA_TARGETS["phi"])
    mem = stage_memory(lm, Step(seq, batch, ft.grad_checkpointing, "adamw", context=0),
                       Images(image_tokens, image_tokens, feature_dim, tuple(proj), lm.hidden), quantize,
                       Adapters(ft.lora_r, targets, ft.lora_dropout))
    lora = lm.lora_params(ft.lora_r, list(targets))
    weights = sum(line.bytes for line in mem.lines if line.label.startswith("LM weights")
                  and "constants" not in line.label) + 4 * lora
    return {"weights_gb": weights / 1e9, "trainable_params": lora + sum(proj), "step_gib": mem.total() / GIB}


def report_estimate(res: dict[str, Any], configs: tuple[str, ...]) -> None:
    print("mmphi --dry-run's estimate at this shape (CPU: fp32 AdamW, no CUDA context) beside the measurement:")
    for name in configs:
        m, e = res[name], res[name]["estimate"]
        step = e["step_gib"] + m["rss_before_load_gib"]
        print(f"  {name:5s} weights {e['weights_gb']:.3f} GB vs {m['weights_gb']:.3f} measured; trainable "
              f"{e['trainable_params']:,} vs {m['trainable_params']:,}; step {e['step_gib']:.2f} GiB + the process "
              f"before loading {m['rss_before_load_gib']:.2f} = {step:.2f} GiB vs peak RSS "
              f"{m['peak_rss_step_gib']:.2f} ({step / m['peak_rss_step_gib'] * 100:.0f}%)")
