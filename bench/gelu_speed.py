"""Phi's ``gelu_new`` in transformers' Python form vs. one fused kernel (``mmphi.lm.loading.fuse_gelu``).

The same tanh-approximate GELU either way; measured side by side in one run, alternating the two
forms on the same model and batches: one training step of the LM body (forward + backward), as
the uncompiled stages (stage 2, evaluation, chat) run it. Prints the largest output difference
of the two activations too.

    .venv/bin/python bench/gelu_speed.py [MODEL_DIR] [--batch 32] [--seq 80] [--steps 10] [--rounds 5]
        [--json out.json]

MODEL_DIR: a causal LM folder (e.g. runs/demo/pretrain/final). Without it, a random model of the
tiny recipe's shape (stage 2 trains its conversations at batch 32, ~55-100 tokens each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timing import seconds_per_call  # bench/timing.py (scripts run from bench/)
from transformers import AutoModelForCausalLM, PhiForCausalLM
from transformers.activations import NewGELUActivation

from mmphi.config import load_recipe
from mmphi.lm.model import phi_config
from mmphi.tokenizer import build_offline_tokenizer


def _activations(lm: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    return [(m, name) for m in lm.modules() for name, c in m.named_children()
            if isinstance(c, NewGELUActivation) or (isinstance(c, torch.nn.GELU) and c.approximate == "tanh")]


def _set(slots, fused: bool) -> None:
    for module, name in slots:
        setattr(module, name, torch.nn.GELU(approximate="tanh") if fused else NewGELUActivation())


def _step_seconds(body: torch.nn.Module, ids: torch.Tensor, steps: int) -> float:
    def step():
        body(input_ids=ids).last_hidden_state.pow(2).mean().backward()

    return seconds_per_call(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a causal LM folder (default: a random tiny-recipe LM)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=80)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and form")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the fastest round of each counts")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.model:
        lm = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        lm = PhiForCausalLM(phi_config(dict(load_recipe("tiny")["pretrain"]["model"]), build_offline_tokenizer()))
    slots = _activations(lm)
    if not slots:
        raise SystemExit("this model has no gelu_new activation to compare")
    ids = torch.randint(0, 50000, (args.batch, args.seq))
    times: dict[str, list[float]] = {"gelu_new": [], "fused": []}
    for _ in range(args.rounds):
        for form in times:
            _set(slots, form == "fused")
            times[form].append(_step_seconds(lm.get_decoder(), ids, args.steps))
    x = torch.linspace(-8, 8, 100001)
    diff = float((NewGELUActivation()(x) - torch.nn.GELU(approximate="tanh")(x)).abs().max())
    best = {form: min(t) for form, t in times.items()}
    speedup = best["gelu_new"] / best["fused"]
    print(f"{args.model or 'random tiny-recipe LM'}: batch {args.batch} x {args.seq} tokens, "
          f"{len(slots)} activations, best of {args.rounds} rounds of {args.steps} steps")
    for form, sec in best.items():
        print(f"  {form:9s} {sec * 1e3:8.1f} ms per forward+backward")
    print(f"speedup: {speedup:.2f}x; largest difference of the two activations on [-8, 8]: {diff:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"speedup": speedup, "seconds": best, "all_seconds": times,
                                               "max_abs_diff": diff, "batch": args.batch, "seq": args.seq,
                                               "model": args.model or "random tiny"}, indent=1))


if __name__ == "__main__":
    main()
