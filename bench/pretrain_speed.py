"""Stage-0 training speed of the tiny recipe: tokens/s and model-FLOPs utilisation (MFU).

Measured side by side in one run, on the same random batches:
  * full head   - logits over all 51,200 rows of Phi-2's vocabulary (what a plain LM step costs);
  * live vocab  - compact embedding/head over only the ids the corpus uses (the tiny recipe);
  * + compile   - (with --compile) the same through torch.compile, as ``pretrain --compile`` trains
                  (the one-off compile falls in the warm-up steps and is reported apart);
and the fp32 matmul peak of this machine, measured in the same run, as the MFU denominator.

    .venv/bin/python bench/pretrain_speed.py [--steps 20] [--batch 16] [--seq 128] [--compile]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmphi.config import build, load_recipe
from mmphi.lm.config import PretrainConfig
from mmphi.lm.model import CausalLMLoss, phi_config, pin_vocab, train_flops_per_token
from mmphi.tokenizer import build_offline_tokenizer
from mmphi.train.optim import measure_peak_flops

WARMUP = 3  # untimed steps before timing starts (a compile falls in them)


def time_steps(module: torch.nn.Module, batches: list[torch.Tensor], warmup: int = WARMUP,
               compiled: bool = False) -> tuple[float, float]:
    """(seconds per optimizer step (forward, backward, AdamW) after a warm-up, seconds of the warm-up)."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    step = torch.compile(module) if compiled else module
    begin = time.perf_counter()
    for i, ids in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        step(ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / (len(batches) - warmup), start - begin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help=f"steps per variant, the first {WARMUP} untimed")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--live", type=int, default=98, help="live vocabulary size (the shapes world uses ~98 ids)")
    ap.add_argument("--compile", action="store_true", help="also time the live-vocab step through torch.compile")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.steps <= WARMUP:
        ap.error(f"--steps must exceed the {WARMUP} warm-up steps (got {args.steps})")
    tok = build_offline_tokenizer()
    cfg = build(PretrainConfig, load_recipe("tiny")["pretrain"], {"data": "-"})
    arch = phi_config(cfg.model, tok)
    gen = torch.Generator().manual_seed(0)
    vocab = torch.randperm(50257, generator=gen)[: args.live].sort().values
    batches = [vocab[torch.randint(0, args.live, (args.batch, args.seq + 1), generator=gen)]
               for _ in range(args.steps)]
    peak = measure_peak_flops(torch.device("cpu"), seconds=2.0)
    rows, compile_s = [], None
    variants = [("full head", False, False), ("live vocab", True, False)]
    if args.compile:
        variants.append(("+ compile", True, True))
    for name, live, compiled in variants:
        torch.manual_seed(0)
        from transformers import PhiForCausalLM

        lm = PhiForCausalLM(arch)
        if live:
            pin_vocab(lm, vocab)
        sec, warm = time_steps(CausalLMLoss(lm, vocab if live else None), batches, compiled=compiled)
        if compiled:
            compile_s = warm
        tokens = args.batch * args.seq / sec
        flops = train_flops_per_token(arch, args.live if live else arch.vocab_size, args.seq) * tokens
        rows.append((name, sec, tokens, flops / 1e9, flops / peak))
    print(f"tiny recipe (hidden {arch.hidden_size}, {arch.num_hidden_layers} layers), batch {args.batch}x{args.seq}, "
          f"{torch.get_num_threads()} threads; measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'':12s} {'s/step':>8s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'MFU':>6s}")
    for name, sec, tokens, gflops, mfu in rows:
        print(f"{name:12s} {sec:8.3f} {tokens:9.0f} {gflops:8.1f} {mfu:6.1%}")
    print(f"live vocab / full head tokens/s: {rows[1][2] / rows[0][2]:.2f}x")
    if compile_s is not None:
        print(f"compiled / eager live-vocab tokens/s: {rows[2][2] / rows[1][2]:.2f}x "
              f"(after a one-off {compile_s:.0f} s in the {WARMUP} warm-up steps)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "peak_gflops": peak / 1e9, "speedup": rows[1][2] / rows[0][2],
            "compiled_speedup": rows[2][2] / rows[1][2] if compile_s is not None else None,
            "compile_s": compile_s,
            "rows": [{"name": r[0], "s_per_step": r[1], "tokens_per_s": r[2], "gflops": r[3], "mfu": r[4]}
                     for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
