"""Resumable checkpoints: ``checkpoints/step-N/``, written to a temp dir and renamed.

A checkpoint holds only what training changes: the trainable parameters (safetensors), the
optimizer and scheduler state, every process's RNG state and a ``state.json`` (step, data
position, elapsed time, run facts). ``os.rename`` of the finished temp dir is atomic, so a
``kill -9`` mid-save leaves a ``.tmp-*`` dir that resume ignores, never a half ``step-N``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmphi.errors import MmphiError

STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(MmphiError):
    """A checkpoint is missing, truncated or corrupt; the message names the file."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that receive gradients (the frozen rest is rebuilt from its source on resume)."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, optimizer, scheduler,
                    state: dict[str, Any], rank: int = 0, world: int = 1, barrier=lambda: None) -> Path:
    """Write ``ckpt_root/step-{step}`` atomically. Every rank saves its RNG; rank 0 the rest."""
    tmp = ckpt_root / f".tmp-step-{step}"
    final = ckpt_root / f"step-{step}"
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if rank == 0:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "world_size": world}, indent=1))
    barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    barrier()
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in ckpt_root.glob(".tmp-step-*"):  # left by a killed save
        shutil.rmtree(tmp, ignore_errors=True)


def _load(path: Path, loader):
    if not path.exists():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        return loader(path)
    except Exception as err:  # safetensors / torch raise many types for a damaged file
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated ({type(err).__name__}: {err}); "
                              "delete that checkpoint directory to resume from an earlier one") from err


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> dict[str, Any]:
    """Restore a checkpoint into live objects; returns its ``state.json``."""
    state = _load(path / "state.json", lambda p: json.loads(p.read_text()))
    tensors = _load(path / "trainable.safetensors", load_file)
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise CheckpointError(f"{path / 'trainable.safetensors'} does not match the model being trained "
                              f"(missing {missing[:3]}, unexpected {extra[:3]}); was it written by another recipe?")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(_load(path / "optimizer.pt", lambda p: torch.load(p, map_location="cpu",
                                                                                 weights_only=False)))
    scheduler.load_state_dict(_load(path / "scheduler.pt", lambda p: torch.load(p, weights_only=False)))
    rng_file = path / f"rng-{rank}.pt"
    if rng_file.exists():
        set_rng_state(_load(rng_file, lambda p: torch.load(p, weights_only=False)))
    return state
