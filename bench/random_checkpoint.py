"""A randomly initialised ``PhiForCausalLM`` of a recipe's exact shape, saved as a bf16 checkpoint (+ the
offline tokenizer) for the bench scripts that need real shapes without the real weights."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from procmem import memory

SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def checkpoint_matches(path: Path, spec: dict[str, Any]) -> bool:
    cfg_file = path / "config.json"
    if not cfg_file.exists() or not any(path.glob("*.safetensors")):
        return False
    saved = json.loads(cfg_file.read_text())
    return all(saved.get(k) == spec[k] for k in SHAPE_KEYS if k in spec)


@torch.no_grad()
def build_checkpoint(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """A random bf16 ``PhiForCausalLM`` of shape ``spec`` saved to ``out`` (written to a temp dir, then renamed).

    Built on the meta device and materialised directly in bf16, so no fp32 copy of the weights ever exists
    (2.78B params: 5.6 GB instead of 11 GB).
    """
    from transformers import PhiForCausalLM

    from mmphi.lm.model import phi_config
    from mmphi.tokenizer import build_offline_tokenizer

    start = time.perf_counter()
    tokenizer = build_offline_tokenizer()
    cfg = phi_config(spec, tokenizer)
    with torch.device("meta"):
        model = PhiForCausalLM(cfg).to(torch.bfloat16)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():  # GPT-2 style init: N(0, 0.02) matrices, zero biases, unit norms
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.normal_(0.0, cfg.initializer_range, generator=gen)
        elif isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)
        if getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor):
            module.bias.zero_()
    # Buffers (rotary inv_freq) are left uninitialised: they are not persistent, so never saved; loading recomputes.
    if set(model.state_dict()) & {n for n, _ in model.named_buffers()}:
        raise RuntimeError("the model has persistent buffers; initialise them before saving")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return {"build_s": time.perf_counter() - start, "checkpoint_gb": size / 1e9, "peak_rss_gib": memory()["VmHWM"]}
