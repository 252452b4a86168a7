"""``--dry-run`` of a training verb: the plan printed, the settings refused when they cannot fit the GPU.

Nothing heavy is loaded: no weights, no tokenizer, no torch; model configs are read from local folders
or are built-in facts (``mmphi.plan.facts``), data files are only counted. The plan is for CUDA GPUs
(bf16 autocast and 8-bit AdamW where the settings say ``auto``), whatever machine prints it.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import replace
from typing import Any

from mmphi.config import TrainArgs
from mmphi.errors import MmphiError
from mmphi.mm.sampling import batches_per_epoch
from mmphi.plan.estimates import Step
from mmphi.plan.memory import GIB, Memory
from mmphi.plan.verbs import PLANNERS, Planned


def processes(cfg: TrainArgs) -> tuple[int, str]:
    if cfg.processes:
        return cfg.processes, "--processes"
    launched = os.environ.get("WORLD_SIZE")
    if launched and launched.isdigit():
        return int(launched), "the launcher (WORLD_SIZE)"
    return 1, "no launcher; plan more with --processes N"


def sharded(cfg: TrainArgs) -> tuple[bool, str]:
    if cfg.sharding != "auto":
        return cfg.sharding == "full", f"--sharding {cfg.sharding}"
    for var, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(var, "").lower() == "true":
            return True, f"accelerate's launch environment says {name}"
    return False, "no FSDP or DeepSpeed in accelerate's launch environment; --sharding full plans it"


def step_of(cfg: TrainArgs, planned: Planned) -> Step:
    n, _ = processes(cfg)
    optimizer = "adamw8bit" if cfg.optimizer == "auto" else cfg.optimizer
    return Step(planned.seq, cfg.batch_size, cfg.grad_checkpointing, optimizer, n, sharded(cfg)[0])


def steps_per_epoch(cfg: Any, planned: Planned, n_proc: int) -> int | None:
    """Optimizer steps in one epoch: whole global micro-batches (per modality when batches hold one), accumulated."""
    count = planned.data
    if count.examples is None:
        return None
    parts = [count.examples - count.text_only, count.text_only] if planned.modality_parts else [count.examples]
    micro = batches_per_epoch(parts, cfg.batch_size * n_proc)
    return -(-micro // cfg.grad_accum)


def _settings(cfg: Any) -> str:
    text = ", ".join(f"{k}={v}" for k, v in vars(cfg).items())
    return textwrap.fill(text, 116, initial_indent="  ", subsequent_indent="  ")


def render(verb: str, recipe: str, cfg: Any, planned: Planned, mem: Memory) -> str:
    n, from_where = processes(cfg)
    split, split_why = sharded(cfg)
    per_epoch = steps_per_epoch(cfg, planned, n)
    lines = [f"mmphi {verb} --dry-run (recipe {recipe}): a plan; no weights, tokenizer or data loaded", "settings:",
             _settings(cfg), *planned.models,
             f"processes: {n} ({from_where}); model state {'sharded' if split else 'whole on each'} ({split_why})",
             f"global batch: {n} processes x {cfg.batch_size} per process x {cfg.grad_accum} accumulated = "
             f"{n * cfg.batch_size * cfg.grad_accum:,} examples per optimizer step"]
    if per_epoch is None:
        lines.append(f"data: {planned.data.what}; steps per epoch unknown")
    else:
        lines.append(f"data: {planned.data.what} -> {per_epoch:,} steps per epoch; max_steps {cfg.max_steps:,} = "
                     f"{cfg.max_steps / per_epoch:.2f} epochs")
    ckpt = "on" if mem.checkpointing else "off"
    lines.append(f"memory per GPU (estimate, GiB; bf16 autocast, {step_of(cfg, planned).optimizer}, "
                 f"{planned.seq} tokens x {cfg.batch_size} per micro-batch, gradient checkpointing {ckpt}):")
    lines += [f"  {line.label:44s} {line.bytes / GIB:7.2f}  {line.how}" for line in mem.lines]
    lines.append(f"  {'total':44s} {mem.total() / GIB:7.2f}  (gradient checkpointing "
                 f"{'off' if mem.checkpointing else 'on'}: {mem.total_other() / GIB:.2f})")
    if cfg.precision == "fp32":
        lines.append("  note: --precision fp32 keeps activations in fp32: about twice the activation line")
    if cfg.gpu_memory:
        lines.append(f"fits --gpu-memory {cfg.gpu_memory:g}: {'yes' if mem.total() <= cfg.gpu_memory * GIB else 'NO'}")
    return "\n".join(lines)


def _ways_to_fit(cfg: Any, planned: Planned, budget: float) -> list[str]:
    """Setting changes (same global batch) that the estimate says would fit."""
    out = []
    if not cfg.grad_checkpointing:
        total = planned.estimate(replace(step_of(cfg, planned), checkpointing=True)).total()
        if total <= budget:
            out.append(f"--grad-checkpointing ({total / GIB:.1f} GiB)")
    b, accum, ckpt = cfg.batch_size, cfg.grad_accum, True
    while b > 1:
        b, accum = b // 2, accum * 2
        total = planned.estimate(replace(step_of(cfg, planned), batch=b, checkpointing=ckpt)).total()
        if total <= budget:
            out.append(f"--batch-size {b} --grad-accum {accum} --grad-checkpointing ({total / GIB:.1f} GiB)")
            break
    n, _ = processes(cfg)
    if not sharded(cfg)[0]:
        for procs in sorted({max(n, 2), 4, 8}):
            if procs < n:
                continue
            step = replace(step_of(cfg, planned), processes=procs, sharded=True, checkpointing=True)
            total = planned.estimate(step).total()
            if total <= budget:
                out.append(f"{procs} GPUs with FSDP full shard: --processes {procs} --sharding full "
                           f"--grad-checkpointing ({total / GIB:.1f} GiB)")
                break
    return out


def dry_run(verb: str, cfg: Any, recipe: dict) -> dict | None:
    """Print the plan of ``verb`` with settings ``cfg``; refuse (MmphiError) settings that cannot fit ``gpu_memory``."""
    if verb == "base":  # the base is a stage-0 run on a world of its own: planned as that pretrain run
        from mmphi.lm.config import base_plan, base_stage0

        first, extend, out = base_stage0(cfg, recipe).max_steps, cfg.extend_to, cfg.out
        cfg = base_plan(cfg, recipe)
        planned = PLANNERS["pretrain"](cfg, recipe)
        planned.models.append(f"mmphi base: stage 0 (the recipe's pretrain section) on a world of its own, "
                              f"{first:,} steps" + (f", then resumed to {extend:,} (extend_to)" if extend else "")
                              + f"; the run builds and tokenises that world in {out} (a dry run after it counts it)")
    else:
        planned = PLANNERS[verb](cfg, recipe)
    mem = planned.estimate(step_of(cfg, planned))
    main = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, one process prints
    if main:
        print(render(verb, recipe.get("name", "?"), cfg, planned, mem))
    budget = cfg.gpu_memory * GIB
    if cfg.gpu_memory and mem.total() > budget:
        ways = _ways_to_fit(cfg, planned, budget)
        hint = ("; would fit: " + "; or ".join(ways)) if ways else "; no change of batch size, checkpointing or " \
                                                                   "sharding tried here fits"
        raise MmphiError(f"these settings need ~{mem.total() / GIB:.1f} GiB per GPU (estimate), more than "
                         f"--gpu-memory {cfg.gpu_memory:g}{hint}")
    if not main:
        return None
    n, _ = processes(cfg)
    return {"verb": verb, "dry_run": True, "processes": n, "global_batch": n * cfg.batch_size * cfg.grad_accum,
            "steps_per_epoch": steps_per_epoch(cfg, planned, n), "examples": planned.data.examples,
            "memory_gib": round(mem.total() / GIB, 2), "memory_gib_other_checkpointing": round(
                mem.total_other() / GIB, 2), "grad_checkpointing": mem.checkpointing,
            "fits": (mem.total() <= budget) if cfg.gpu_memory else None, "lines_gib": mem.gib()}
