"""Generation speed: KV-cached decoding from embeddings vs. re-running the whole prompt for every token.

One reference implementation could not call ``generate`` with embeddings and re-ran the full model
on the growing sequence for each new token (``greedy_by_recomputing``). Both start from the same
engine-built prompt (an image question); measured side by side in one run:

    .venv/bin/python bench/generate_speed.py [MODEL_DIR] [--tokens 64] [--history 1] [--repeats 3]
        [--hidden 256 --layers 2] [--json out.json]

MODEL_DIR: a multimodal model folder (e.g. runs/demo/finetune/final). Without it, a random model
of ``--hidden`` width and ``--layers`` layers is built in a temp folder (its answers are noise, but
decoding costs the same as a trained model's). ``--history N`` repeats the earlier exchange N
times, for a longer prompt. For a model as small as the tiny recipe's, per-step overheads dominate
and the cache buys little; the saving grows with model size and prompt length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmphi.infer.assistant import Assistant
from mmphi.infer.generate import GenerationParams, greedy_by_recomputing, stream_tokens
from mmphi.infer.inputs import Message


def _image() -> Path:
    import numpy as np

    from mmphi.world.scenes import render, sample_scene

    path = Path(tempfile.mkdtemp()) / "scene.png"
    render(sample_scene(np.random.default_rng(0))).save(path)
    return path


def measure(assistant: Assistant, tokens: int, repeats: int, history_rounds: int = 1) -> dict:
    history = [Message("user", "What shapes are in this picture?", image=_image()),
               Message("assistant", "A small red circle on the left and a large blue square at the top.")]
    for _ in range(history_rounds - 1):
        history += [Message("user", "And again, what do you see?"),
                    Message("assistant", "A small red circle on the left and a large blue square at the top.")]
    history.append(Message("user", "Describe the image in detail."))
    rounds, image, _, _, _ = assistant._rounds(history)  # no audio here
    ex, _ = assistant._fit(rounds, 0, assistant.context - tokens)
    embeds = assistant._embeds(ex, image)
    # A fixed number of tokens for both (EOS suppressed), so the work is identical.
    params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens)
    eos = assistant.tokenizer.eos_token_id
    out = {"prompt_tokens": len(ex), "new_tokens": tokens}
    tokens_of = {}
    for name in ("kv_cache", "rerun"):
        ttft, total = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            if name == "kv_cache":
                first, got = None, []
                for tok in stream_tokens(assistant.lm, embeds, params, eos, assistant.encoder.pad_id):
                    got.append(tok)
                    first = first or time.perf_counter() - start
            else:  # the first token costs one full pass either way
                got = greedy_by_recomputing(assistant.lm, embeds, tokens, eos, min_new_tokens=tokens)
                first = None
            total.append(time.perf_counter() - start)
            ttft.append(first)
            tokens_of[name] = got
        out[name] = {"tokens_per_s": len(tokens_of[name]) / statistics.median(total),
                     "ttft_s": statistics.median(ttft) if ttft[0] is not None else None,
                     "total_s": statistics.median(total)}
    out["same_tokens"] = tokens_of["kv_cache"] == tokens_of["rerun"]
    out["speedup"] = out["kv_cache"]["tokens_per_s"] / out["rerun"]["tokens_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--history", type=int, default=1, help="earlier exchanges in the prompt")
    ap.add_argument("--hidden", type=int, default=256, help="width of the random model (no MODEL_DIR)")
    ap.add_argument("--layers", type=int, default=2, help="layers of the random model (no MODEL_DIR)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    model = args.model
    if model is None:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import make_clip, make_multimodal

        tmp = Path(tempfile.mkdtemp())
        model = str(make_multimodal(tmp, make_clip(tmp / "clip"), max_positions=1024, hidden=args.hidden,
                                        layers=args.layers))
    torch.manual_seed(0)
    res = measure(Assistant.load(model), args.tokens, args.repeats, args.history)
    res["model"] = model
    print(f"{model}: prompt {res['prompt_tokens']} tokens (image included), {res['new_tokens']} new tokens, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'':10s} {'tokens/s':>9s} {'first token (s)':>16s} {'total (s)':>10s}")
    for name in ("kv_cache", "rerun"):
        r = res[name]
        ttft = f"{r['ttft_s']:16.3f}" if r["ttft_s"] is not None else f"{'-':>16s}"
        print(f"{name:10s} {r['tokens_per_s']:9.1f} {ttft} {r['total_s']:10.3f}")
    print(f"KV cache / re-run tokens/s: {res['speedup']:.2f}x (same greedy tokens: {res['same_tokens']})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
