"""``fit()``: the one training loop every stage uses (pretrain, CLIP, align, finetune).

A stage is a ``Task``: it builds its model (deciding what is frozen or quantised), says how to
make micro-batch number ``i`` and how to compute the loss. The loop owns everything else:
accelerate (devices, DDP, bf16 autocast on CUDA), gradient accumulation, clipping, AdamW (8-bit
on CUDA), the cosine schedule, periodic validation, metrics, atomic checkpoints and resume.

Batches are a pure function of their global index, so the data position is just the step:
a resumed run (model, optimizer, scheduler and RNG restored) sees exactly the batches the
uninterrupted run would have, and its losses match.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from tqdm import tqdm

from mmphi.config import TrainArgs
from mmphi.errors import MmphiError
from mmphi.train import checkpoint as ckpt
from mmphi.train.dist import process_state
from mmphi.train.optim import cosine_schedule, make_optimizer, measure_peak_flops
from mmphi.train.rundir import RunDir

Batch = dict[str, Any]


class Task(Protocol):
    """What a training stage hands to ``fit``."""

    unit: str  # what throughput is counted in: "tokens" or "samples"

    def batch(self, index: int, size: int, rank: int, world: int) -> Batch:
        """This process' share (``size`` items) of global micro-batch ``index``."""

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss of the batch and counts: ``tokens``/``samples`` processed, ``flops`` (fwd+bwd)."""

    def eval_batches(self) -> Iterable[Batch]:
        """Fixed validation micro-batches (the same every evaluation)."""

    def save_final(self, model: torch.nn.Module, path: Path) -> None:
        """Write the self-contained ``final/`` directory."""


def _accelerator(args: TrainArgs):
    from accelerate import Accelerator

    process_state()  # initialise the process group first, CPU-aware (see mmphi.train.dist)
    cuda = torch.cuda.is_available()
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    return Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=not cuda)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_loss(task: Task, model: torch.nn.Module, device: torch.device, max_batches: int) -> float:
    """Mean validation loss, weighted by the tokens (or samples) each batch holds."""
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0.0
    for i, batch in enumerate(task.eval_batches()):
        if i >= max_batches:
            break
        loss, stats = task.loss(model, _to(batch, device))
        w = stats.get("loss_tokens", stats.get(task.unit, 1.0))
        total += float(loss) * w
        weight += w
    model.train(was_training)
    return total / weight if weight else float("nan")


class _Trainer:
    """The state of one ``fit`` call, split into short steps (setup, one step, log, eval, save)."""

    def __init__(self, task: Task, model: torch.nn.Module, args: TrainArgs, run: RunDir, facts: dict[str, Any]):
        self.task, self.args, self.run = task, args, run
        self.acc = _accelerator(args)
        from accelerate.utils import set_seed

        set_seed(args.seed)
        self.rank, self.world, self.main = self.acc.process_index, self.acc.num_processes, self.acc.is_main_process
        if args.processes and args.processes != self.world:
            raise MmphiError(f"--processes {args.processes} but {self.world} process(es) were launched; start "
                             f"`accelerate launch --num_processes {args.processes} ...` or drop --processes")
        run.create()
        enable_checkpointing = getattr(model, "gradient_checkpointing_enable", None)
        if args.grad_checkpointing and enable_checkpointing is not None:
            enable_checkpointing()
        optimizer = make_optimizer(model, args, self.acc.device)
        self.scheduler = cosine_schedule(optimizer, args)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.raw = self.acc.unwrap_model(self.model)
        # Training steps go through the compiled module; evaluation and checkpoints use the plain one.
        # torch.compile of a Module returns a Module (an OptimizedModule); its annotation says any callable
        self.train_model: torch.nn.Module = cast(torch.nn.Module, torch.compile(self.model)) if args.compile \
            else self.model
        self.compiled_ok = False
        self.state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "tokens": 0, "samples": 0}
        self.facts = self._start(facts)
        if self.main:
            print(f"global batch {self.world * args.batch_size * args.grad_accum} = {self.world} processes x "
                  f"batch {args.batch_size} x {args.grad_accum} accumulated")
        self.peak = self.facts["peak_flops_per_s"] * self.world
        self.window = {"t": time.perf_counter(), "work": 0.0, "flops": 0.0}

    def _start(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Resume from the last complete checkpoint, or clear what a previous run left."""
        latest = ckpt.latest_checkpoint(self.run.checkpoints) if self.args.resume else None
        if latest is not None:
            self.state = ckpt.load_checkpoint(latest, self.raw, self.optimizer, self.scheduler, self.rank)
            if self.main:
                self.run.truncate_metrics(self.state["step"])
                print(f"resuming from {latest} (step {self.state['step']})")
            known = self.run.read_json("run.json")
            if known is not None:
                return known
        elif self.main:
            self.run.metrics_file.unlink(missing_ok=True)
            for old in ckpt.list_checkpoints(self.run.checkpoints):  # never resume into a stale run later
                shutil.rmtree(old)
        facts = {**facts, "peak_flops_per_s": measure_peak_flops(self.acc.device), "world_size": self.world,
                 "global_batch": self.world * self.args.batch_size * self.args.grad_accum,
                 "trainable_params": sum(p.numel() for p in self.raw.parameters() if p.requires_grad),
                 "total_params": sum(p.numel() for p in self.raw.parameters())}
        if self.main:
            self.run.write_json("run.json", facts)
        return facts

    def evaluate(self) -> float:
        val = evaluate_loss(self.task, self.raw, self.acc.device, self.args.eval_batches)
        record = {"step": self.state["step"], "split": "val", "eval_loss": val}
        extra = getattr(self.task, "extra_eval", None)
        if extra is not None and self.main:  # task-specific metrics (e.g. answer accuracy), main process only
            record.update(extra(self.raw, self.state["step"]) or {})
        if self.main and not math.isnan(val):
            self.run.log(record)
        return val

    def save(self) -> None:
        ckpt.save_checkpoint(self.run.checkpoints, self.state["step"], self.raw, self.optimizer, self.scheduler,
                             self.state, self.rank, self.world, barrier=self.acc.wait_for_everyone)
        if self.main:
            ckpt.prune_checkpoints(self.run.checkpoints, self.args.keep_checkpoints)

    def _forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        if self.train_model is self.model or self.compiled_ok:
            return self.task.loss(self.train_model, batch)
        try:  # the first compiled call compiles; a machine that cannot (no C compiler...) trains eagerly
            out = self.task.loss(self.train_model, batch)
        except Exception as err:  # noqa: BLE001 - any compiler failure; the eager path is always correct
            if self.main:
                print(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      "training without it")
            self.train_model = self.model
            return self.task.loss(self.model, batch)
        self.compiled_ok = True
        return out

    def step(self) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns global sums of loss and work."""
        args, acc, step = self.args, self.acc, self.state["step"]
        loss_sum, stats = 0.0, {"tokens": 0.0, "samples": 0.0, "flops": 0.0}
        for micro in range(args.grad_accum):
            batch = _to(self.task.batch(step * args.grad_accum + micro, args.batch_size, self.rank, self.world),
                        acc.device)
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = contextlib.nullcontext() if micro == args.grad_accum - 1 else acc.no_sync(self.model)
            with sync:
                with acc.autocast():
                    loss, counts = self._forward(batch)
                acc.backward(loss / args.grad_accum)
            loss_sum += float(loss.detach()) / args.grad_accum
            for k in stats:
                stats[k] += counts.get(k, 0.0)
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), args.grad_clip) if args.grad_clip else None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = acc.reduce(torch.tensor([loss_sum, stats["tokens"], stats["samples"], stats["flops"]],
                                         device=acc.device), reduction="sum")
        self.state["step"] = step + 1
        self.state["tokens"] += int(totals[1])
        self.state["samples"] += int(totals[2])
        self.window["work"] += float(totals[1 if self.task.unit == "tokens" else 2])
        self.window["flops"] += float(totals[3])
        out = {"loss": float(totals[0]) / self.world}
        if grad_norm is not None:
            out["grad_norm"] = float(grad_norm)
        return out

    def log(self, result: dict[str, float]) -> dict[str, Any]:
        dt = max(1e-9, time.perf_counter() - self.window["t"])
        rate = f"{self.task.unit}_per_s"
        record = {"step": self.state["step"], "loss": result["loss"], "lr": self.scheduler.get_last_lr()[0],
                  rate: self.window["work"] / dt, "mfu": self.window["flops"] / dt / self.peak,
                  "elapsed_s": round(self.state["elapsed_s"], 2), **{k: v for k, v in result.items() if k != "loss"}}
        if self.main:
            self.run.log(record)
        self.window = {"t": time.perf_counter(), "work": 0.0, "flops": 0.0}
        return record

    def train(self, stop_at: int = 0) -> None:
        args, state = self.args, self.state
        end = min(stop_at, args.max_steps) if stop_at else args.max_steps
        if state["step"] == 0 and args.eval_batches:
            state["initial_val_loss"] = self.evaluate()
        bar = tqdm(total=args.max_steps, initial=state["step"], desc=Path(self.run.path).name, unit="step",
                   disable=not self.main, mininterval=1.0)
        started = time.perf_counter() - state["elapsed_s"]
        self.model.train()
        try:
            while state["step"] < end:
                if args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes:
                    if self.main:
                        print(f"time budget of {args.max_minutes} min reached at step {state['step']}")
                    break
                result = self.step()
                state["elapsed_s"] = time.perf_counter() - started
                bar.update(1)
                step, last = state["step"], state["step"] == args.max_steps
                if step % args.log_every == 0 or last:
                    record = self.log(result)
                    bar.set_postfix(loss=f"{result['loss']:.3f}", rate=f"{record[f'{self.task.unit}_per_s']:.0f}")
                if args.eval_batches and step % args.eval_every == 0 and not last:
                    self.evaluate()
                if step % args.save_every == 0 and not last:
                    self.save()
        except KeyboardInterrupt:
            if state["step"] % args.save_every:
                self.save()  # nothing lost on Ctrl-C: --resume continues from here
            raise
        finally:
            bar.close()

    def finish(self) -> dict[str, Any]:
        self.state["final_val_loss"] = self.evaluate() if self.args.eval_batches else None
        self.save()
        if self.main:
            self.task.save_final(self.raw, self.run.final)
        self.acc.wait_for_everyone()
        s = self.state
        # A --max-minutes cap that stopped training early is part of the result: reports must say so.
        cut = {"cut_by_time_cap": self.args.max_minutes} if s["step"] < self.args.max_steps else {}
        return {"steps": s["step"], "max_steps": self.args.max_steps, **cut,
                "elapsed_s": round(s["elapsed_s"], 1), "tokens": s["tokens"],
                "samples": s["samples"], "initial_val_loss": s.get("initial_val_loss"),
                "final_val_loss": s["final_val_loss"], "world_size": self.world,
                "trainable_params": self.facts["trainable_params"], "total_params": self.facts["total_params"]}

    def pause(self) -> dict[str, Any]:
        """Stop before ``max_steps`` with a checkpoint (``--resume`` continues the same schedule), no final/."""
        if (self.run.checkpoints / f"step-{self.state['step']}") not in ckpt.list_checkpoints(self.run.checkpoints):
            self.save()
        val = evaluate_loss(self.task, self.raw, self.acc.device, self.args.eval_batches)
        return {"steps": self.state["step"], "paused": True, "val_loss": val, "tokens": self.state["tokens"],
                "elapsed_s": round(self.state["elapsed_s"], 1)}


def fit(task: Task, model: torch.nn.Module, args: TrainArgs, run: RunDir,
        facts: dict[str, Any] | None = None, stop_at: int = 0) -> dict[str, Any]:
    """Train ``model`` on ``task`` per ``args`` into the run directory ``run``; returns a summary.

    ``stop_at``: pause after that step (the schedule still spans ``max_steps``) with a checkpoint,
    and return the val loss there instead of finishing: a probe that ``--resume`` can continue.
    """
    trainer = _Trainer(task, model, args, run, facts or {})
    trainer.train(stop_at)
    if stop_at and trainer.state["step"] < args.max_steps:
        return trainer.pause()
    return trainer.finish()
