"""Scale check: one QLoRA training step of the exact ``phi2`` recipe shape on CPU, 4-bit NF4 vs. bf16 weights.

A randomly initialised ``PhiForCausalLM`` with the recipe's shape (``configs/phi2.yaml`` ``pretrain.model``:
microsoft/phi-2's 2.78B parameters) is saved once as a bf16 safetensors checkpoint (+ the offline tokenizer),
so both configurations load through the ordinary ``from_pretrained`` path (with bitsandbytes for 4-bit).
Each configuration then runs in its own subprocess, so its peak memory is its own:

* ``nf4``:  every linear layer but the LM head in 4-bit NF4 (double quantisation, bf16 compute), prepared
  with ``prepare_model_for_kbit_training`` and wrapped in LoRA by stage 2's own ``_peft`` (QLoRA);
* ``bf16``: the same model with bf16 weights, the same LoRA (no k-bit preparation, as in
  ``mmphi finetune --no-quantize``).

Both get the fp32 ``mlp2x_gelu`` projector (CLIP ViT-B/32: 49 x 768 patch features -> 2560) and one
AdamW step (forward + backward + ``optimizer.step``) on the same batch: the chat template with 49 image
placeholder positions filled by random features, answers as the only loss positions. Measured side by
side in one run: peak RSS during the step (the high-water mark is reset after loading, once freed heap
has been handed back with ``malloc_trim``), peak RSS while loading, load/step time, the loss, and the
trainable-parameter count against the *logical* parameter count of the base model (a 4-bit ``Params4bit``
stores two values per byte; its ``quant_state.shape`` gives the real shape). LoRA rank/alpha: flags > the
recipe's ``finetune`` section > r=64, alpha=16 (QLoRA's setting; LLaVA-style Phi-2 projects report ~3%
trainable with it).

    .venv/bin/python bench/scale_check.py [--recipe phi2] [--seq 64] [--batch 2] [--lora-r 64] [--lora-alpha 16]
        [--[no-]grad-checkpointing] [--keep-checkpoint DIR] [--json out.json]

``--recipe tiny`` runs the same machinery on the tiny recipe's shape in seconds (the smoke test does).
Needs Linux (/proc/self/status, /proc/self/clear_refs). The temp checkpoint (~5.6 GB for phi2) is deleted
at the end unless ``--keep-checkpoint DIR`` is given; a kept checkpoint of the same shape is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/procmem.py, also when loaded by path
from procmem import AnonPeak, logical_numel, memory, release_freed_heap, reset_peak  # noqa: E402
from random_checkpoint import build_checkpoint, checkpoint_matches  # noqa: E402
from scale_estimate import plan_estimate, report_estimate  # noqa: E402

from mmphi.config import build, load_recipe
from mmphi.lm.config import PretrainConfig
from mmphi.mm.config import FinetuneConfig

IMAGE_TOKENS, FEATURE_DIM = 49, 768  # CLIP ViT-B/32 at 224 px: 7x7 patches (CLS dropped), width 768
PROJECTOR = "mlp2x_gelu"
BENCH_LORA = {"lora_r": 64, "lora_alpha": 16}  # QLoRA's setting; used when the recipe has no finetune section
CONFIGS = ("nf4", "bf16")


# ---------------------------------------------------------------------------- settings
def model_spec(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``pretrain.model`` mapping (PhiConfig fields), validated by ``PretrainConfig``."""
    return build(PretrainConfig, recipe.get("pretrain", {}), {"data": "-"}).model


def finetune_settings(recipe: dict[str, Any], flags: dict[str, Any]) -> FinetuneConfig:
    """Stage 2's own config class: bench defaults < the recipe's finetune section < flags."""
    placeholders = {"data": "-", "features": "-", "init": "-"}
    return build(FinetuneConfig, BENCH_LORA, recipe.get("finetune", {}), flags, placeholders)


# ---------------------------------------------------------------------------- one configuration
def load_lm(path: Path, quantize: bool):
    """As ``mmphi.lm.loading.load_causal_lm`` does on CUDA (bf16 compute, the fused GELU), here on the CPU."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from mmphi.lm.loading import fuse_gelu

    if quantize:
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
        return fuse_gelu(AutoModelForCausalLM.from_pretrained(path, quantization_config=qc, dtype=torch.bfloat16,
                                                              device_map={"": "cpu"}))
    return fuse_gelu(AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16))


class RandomFeatures:
    """A stand-in feature store: random 49 x 768 patch features for any key (what ``collate`` reads)."""

    def __contains__(self, key: str) -> bool:
        return True

    def get_many(self, keys: list[str]) -> torch.Tensor:
        return torch.randn(len(keys), IMAGE_TOKENS, FEATURE_DIM)  # (n_images, N, D)


def make_batch(tokenizer, seq: int, batch: int) -> dict[str, torch.Tensor]:
    """``batch`` one-round conversations cut to exactly ``seq`` tokens: image + question, then a long answer."""
    from mmphi.chat import IMAGE
    from mmphi.mm.data import ChatEncoder, collate

    enc = ChatEncoder(tokenizer, IMAGE_TOKENS, system="", max_len=seq)
    answer = ("A small red circle sits on the left, a large blue square at the top and a green triangle "
              "in the centre of the picture. ") * (seq // 8 + 1)
    examples = []
    for i in range(batch):
        ex = enc.encode([(f"{IMAGE}\nDescribe it.", answer)], f"img{i}", id=str(i))
        if ex is None:
            raise ValueError(f"--seq {seq} is too short for {IMAGE_TOKENS} image positions and a question")
        examples.append(ex)
    return collate(examples, enc.pad_id, RandomFeatures())


def run_config(path: Path, quantize: bool, ft: FinetuneConfig, seq: int, batch: int) -> dict[str, Any]:
    """Load, wrap (LoRA + projector), then one AdamW step; peak memory of the step alone."""
    from mmphi.lm.model import count_params
    from mmphi.mm.model import MultimodalLM, base_lm
    from mmphi.mm.projector import build_projector
    from mmphi.mm.stages import _peft
    from mmphi.tokenizer import load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(path))
    data = make_batch(tokenizer, seq, batch)
    before = memory()  # the process itself: Python, torch, transformers, peft, bitsandbytes, the batch
    start = time.perf_counter()
    with AnonPeak() as load_anon:
        lm = _peft(load_lm(path, quantize), SimpleNamespace(**{**vars(ft), "quantize": quantize}))
        if ft.grad_checkpointing and not quantize:  # _peft enables it only with k-bit preparation
            base_lm(lm).gradient_checkpointing_enable()
        torch.manual_seed(1)  # same LoRA / projector init in both configurations
        projector = build_projector(PROJECTOR, FEATURE_DIM, lm.config.hidden_size)  # fp32, as in stage 2
        spec = {"projector": {"kind": PROJECTOR, "in_dim": FEATURE_DIM, "out_dim": lm.config.hidden_size},
                "image_tokens": IMAGE_TOKENS}
        model = MultimodalLM(lm, projector, spec).train()
    load_s = time.perf_counter() - start
    after_load = memory()
    trimmed = release_freed_heap()
    after_trim = memory()

    base = base_lm(lm)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    lora = sum(p.numel() for n, p in trainable.items() if "lora_" in n)
    proj = sum(p.numel() for n, p in trainable.items() if n.startswith("projector."))
    base_logical = sum(logical_numel(p) for n, p in base.named_parameters() if "lora_" not in n)
    expected = count_params(base.config)["total"]
    if base_logical != expected:
        raise RuntimeError(f"logical parameter count {base_logical} != {expected} from the config")
    quantized = sum(logical_numel(p) for p in base.parameters() if hasattr(p, "quant_state"))
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)

    reset_peak()
    with AnonPeak() as step_anon:
        t0 = time.perf_counter()
        loss = model(**data)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        no_grad = [n for n, p in trainable.items() if p.grad is None]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
    peak = memory()["VmHWM"]
    if no_grad:
        raise RuntimeError(f"{len(no_grad)} trainable parameters got no gradient, e.g. {no_grad[0]}")
    trainable_n = sum(p.numel() for p in trainable.values())
    return {
        "quantized": quantize, "seq": seq, "batch": batch, "loss_tokens": int((data["labels"] != -100).sum()),
        "rss_before_load_gib": before["VmRSS"], "load_s": load_s, "weights_gb": base.get_memory_footprint() / 1e9,
        "peak_rss_load_gib": after_load["VmHWM"], "rss_after_load_gib": after_load["VmRSS"], "malloc_trim": trimmed,
        "rss_after_trim_gib": after_trim["VmRSS"], "rss_file_after_trim_gib": after_trim["RssFile"],
        "peak_anon_load_gib": load_anon.peak, "peak_rss_step_gib": peak, "peak_anon_step_gib": step_anon.peak,
        "loss": float(loss.detach()), "forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2,
        "step_s": t3 - t0,
        "base_params": base_logical, "base_params_4bit": quantized, "lora_params": lora, "projector_params": proj,
        "trainable_params": trainable_n, "trainable_pct": 100 * trainable_n / (base_logical + lora + proj),
        "lora": {"r": ft.lora_r, "alpha": ft.lora_alpha, "dropout": ft.lora_dropout,
                 "targets": sorted(next(iter(lm.peft_config.values())).target_modules)},
        "grad_checkpointing": ft.grad_checkpointing, "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------- parent
def spawn(argv: list[str]) -> dict[str, Any]:
    """Run this script as a worker in a fresh process; its last stdout line is a JSON result."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv[:2]} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(res: dict[str, Any]) -> None:
    nf4, bf16 = res["nf4"], res["bf16"]
    print(f"recipe {res['recipe']}: {nf4['base_params'] / 1e9:.3f}B parameters "
          f"({nf4['base_params_4bit'] / 1e9:.3f}B in 4-bit linears), batch {nf4['batch']} x seq {nf4['seq']} "
          f"({IMAGE_TOKENS} image positions, {nf4['loss_tokens']} loss tokens), LoRA r={nf4['lora']['r']} "
          f"alpha={nf4['lora']['alpha']} on {','.join(nf4['lora']['targets'])}, grad checkpointing "
          f"{'on' if nf4['grad_checkpointing'] else 'off'}, {nf4['threads']} threads")
    rows = [("weights (GB, get_memory_footprint)", "weights_gb", "{:.2f}"),
            ("peak RSS while loading (GiB)", "peak_rss_load_gib", "{:.2f}"),
            ("  anonymous only (GiB)", "peak_anon_load_gib", "{:.2f}"),
            ("RSS after load (GiB)", "rss_after_load_gib", "{:.2f}"),
            ("  after gc + malloc_trim (GiB)", "rss_after_trim_gib", "{:.2f}"),
            ("    of which file-backed (GiB)", "rss_file_after_trim_gib", "{:.2f}"),
            ("peak RSS during the step (GiB)", "peak_rss_step_gib", "{:.2f}"),
            ("  anonymous only (GiB)", "peak_anon_step_gib", "{:.2f}"),
            ("load time (s)", "load_s", "{:.1f}"), ("forward (s)", "forward_s", "{:.1f}"),
            ("backward (s)", "backward_s", "{:.1f}"), ("optimizer step (s)", "optimizer_s", "{:.2f}"),
            ("step total (s)", "step_s", "{:.1f}"), ("loss", "loss", "{:.4f}"),
            ("trainable params (M)", "trainable_params", "{:.2f}"), ("trainable %", "trainable_pct", "{:.2f}")]
    print(f"{'':36s} {'4-bit NF4':>10s} {'bf16':>10s} {'bf16/4bit':>10s}")
    for label, key, fmt in rows:
        a, b = nf4[key], bf16[key]
        if key == "trainable_params":
            a, b = a / 1e6, b / 1e6
        ratio = f"{b / a:10.2f}" if key not in ("loss", "trainable_pct") and a else f"{'':10s}"
        print(f"{label:36s} {fmt.format(a):>10s} {fmt.format(b):>10s} {ratio}")
    print(f"peak step memory bf16 / 4-bit: {res['peak_ratio']:.2f}x;  trainable: {nf4['trainable_params']:,} "
          f"= LoRA {nf4['lora_params']:,} + projector {nf4['projector_params']:,} "
          f"= {nf4['trainable_pct']:.2f}% of {nf4['base_params'] + nf4['lora_params'] + nf4['projector_params']:,}")
    print(f"fp32 trainable state (weights + grads + AdamW m, v = 16 B/param): "
          f"{16 * nf4['trainable_params'] / 2**30:.2f} GiB in both")
    per_rank = nf4["lora_params"] / nf4["lora"]["r"]  # LoRA size is linear in the rank

    def pct(r: int) -> float:
        trained = per_rank * r + nf4["projector_params"]
        return 100 * trained / (nf4["base_params"] + trained)

    print("trainable % at other LoRA ranks (same targets, + projector): "
          + ", ".join(f"r={r}: {pct(r):.2f}%" for r in (8, 16, 32, 64, 128)))
    print("note: bf16 weights stay memory-mapped from the safetensors file (file-backed pages) until the step "
          "touches them; the 4-bit load reads the whole bf16 file through the same mapping.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="phi2", help="recipe whose pretrain.model shape is built (phi2, tiny, a path)")
    ap.add_argument("--seq", type=int, default=64, help="tokens per example, 49 image positions included")
    ap.add_argument("--batch", type=int, default=2, help="examples in the batch")
    ap.add_argument("--lora-r", type=int, help="LoRA rank (default: the recipe's finetune section, else 64)")
    ap.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: the recipe's finetune section, else 16)")
    ap.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction,
                    help="recompute activations in backward (default: the recipe's finetune section, else off)")
    ap.add_argument("--keep-checkpoint", help="folder for the random checkpoint, kept (and reused when it matches)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", choices=("build", *CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()

    recipe = load_recipe(args.recipe)
    flags = {k: v for k, v in (("lora_r", args.lora_r), ("lora_alpha", args.lora_alpha),
                                ("grad_checkpointing", args.grad_checkpointing)) if v is not None}
    ft = finetune_settings(recipe, flags)
    if args.worker == "build":
        print(json.dumps(build_checkpoint(model_spec(recipe), Path(args.checkpoint))))
        return
    if args.worker:
        print(json.dumps(run_config(Path(args.checkpoint), args.worker == "nf4", ft, args.seq, args.batch)))
        return

    spec = model_spec(recipe)
    ckpt = Path(args.keep_checkpoint) if args.keep_checkpoint else Path(tempfile.mkdtemp(prefix="scale-check-")) / "lm"
    common = ["--recipe", args.recipe, "--seq", str(args.seq), "--batch", str(args.batch), "--checkpoint", str(ckpt),
              "--lora-r", str(ft.lora_r), "--lora-alpha", str(ft.lora_alpha)]
    common.append("--grad-checkpointing" if ft.grad_checkpointing else "--no-grad-checkpointing")
    res: dict[str, Any] = {"recipe": recipe["name"], "command": " ".join(sys.argv), "cpu_count": os.cpu_count()}
    try:
        if checkpoint_matches(ckpt, spec):
            print(f"reusing the random checkpoint in {ckpt}", flush=True)
            res["build"] = None
        else:
            print(f"building a random {recipe['name']}-shape checkpoint in {ckpt} ...", flush=True)
            res["build"] = spawn(["--worker", "build", *common])
            print(f"  {res['build']['checkpoint_gb']:.2f} GB in {res['build']['build_s']:.0f} s", flush=True)
        for name in CONFIGS:
            print(f"running {name} ...", flush=True)
            res[name] = spawn(["--worker", name, *common])
            res[name]["estimate"] = plan_estimate(spec, ft, args.seq, args.batch, name == "nf4", PROJECTOR,
                                                  IMAGE_TOKENS, FEATURE_DIM)
            print(f"  step {res[name]['step_s']:.1f} s, peak {res[name]['peak_rss_step_gib']:.2f} GiB", flush=True)
    finally:
        if not args.keep_checkpoint:
            shutil.rmtree(ckpt.parent, ignore_errors=True)
    res["peak_ratio"] = res["bf16"]["peak_rss_step_gib"] / res["nf4"]["peak_rss_step_gib"]
    report(res)
    report_estimate(res, CONFIGS)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
