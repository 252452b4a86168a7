"""Optimizer, learning-rate schedule and the hardware peak that utilisation is measured against."""

from __future__ import annotations

import math
import time

import torch

from mmphi.config import TrainArgs


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float) -> list[dict]:
    """Decay matrices only; biases, norms (1-D) and anything frozen are left out of decay.

    A model may set ``lr_overrides = {"name.prefix": lr}`` to give some parameters their own
    peak learning rate (e.g. the projector in stage 2); the schedule scales every group alike.
    """
    overrides: dict[str, float] = getattr(model, "lr_overrides", {}) or {}
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group_lr = next((v for k, v in overrides.items() if name.startswith(k)), lr)
        groups.setdefault((group_lr, weight_decay if p.ndim >= 2 else 0.0), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def make_optimizer(model: torch.nn.Module, args: TrainArgs, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; 8-bit AdamW (bitsandbytes) on CUDA when asked or by default, since it saves 3/4 of the state."""
    groups = param_groups(model, args.weight_decay, args.lr)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    kind = args.optimizer
    if kind == "auto":
        kind = "adamw8bit" if device.type == "cuda" else "adamw"
    if kind == "adamw8bit" and device.type == "cuda":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, lr=args.lr, betas=(0.9, args.beta2))
    # 8-bit state has no benefit (and little support) on CPU: plain AdamW there.
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, args.beta2), foreach=device.type == "cuda")


def cosine_schedule(optimizer: torch.optim.Optimizer, args: TrainArgs) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    warmup, total, floor = args.warmup_steps, args.max_steps, args.min_lr_ratio

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def measure_peak_flops(device: torch.device, seconds: float = 1.0) -> float:
    """Sustained matmul FLOP/s on this device (fp32 on CPU, bf16 on CUDA): the MFU denominator."""
    n = 1024 if device.type == "cpu" else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)  # leave the global RNG (and resume) untouched
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(2):  # warm-up
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    # The best of several short windows: on a shared machine a single timing mostly measures the neighbours.
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        sync()
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - start))
    return best
