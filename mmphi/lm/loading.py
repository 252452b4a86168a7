"""Loading a causal LM for the multimodal stages and inference: full precision or 4-bit NF4."""

from __future__ import annotations

from typing import TypeVar

import torch

from mmphi.errors import MmphiError

M = TypeVar("M", bound=torch.nn.Module)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (Phi-2's own dtype), fp32 on CPU (no fast bf16 matmul on most CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_causal_lm(source: str, quantize: bool = False, device: torch.device | None = None):
    """``AutoModelForCausalLM`` from a folder, a hub id or a bundled name (``mmphi/tiny-phi-base``); with
    ``quantize``, every linear layer but the LM head in 4-bit NF4 with double quantisation (QLoRA's recipe)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from mmphi.bundled import resolve_model

    source = resolve_model(source)
    device = device or default_device()
    dtype = compute_dtype(device)
    try:
        if quantize:
            qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=dtype)
            lm = AutoModelForCausalLM.from_pretrained(source, quantization_config=qc, dtype=dtype,
                                                      device_map={"": str(device)})
            disable_cpu_inference_packing(lm)
            return fuse_gelu(lm)
        # transformers wraps PreTrainedModel.to with functools.wraps(nn.Module.to), which mypy types as an
        # unbound function (expecting the model as first argument)
        return fuse_gelu(AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device))  # type: ignore[arg-type]
    except (OSError, ValueError) as err:
        raise MmphiError(f"cannot load the language model {source!r}: {err}") from err


def fuse_gelu(model: M) -> M:
    """Run Phi's ``gelu_new`` as one fused kernel: the same tanh-approximate GELU (outputs within
    float rounding) in one op instead of several: forward + backward of the tiny LM 1.2-1.3x faster on CPU
    (``bench/gelu_speed.py``). Only the modules change; the saved config still says ``gelu_new``."""
    from transformers.activations import NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, torch.nn.GELU(approximate="tanh"))
    return model


def disable_cpu_inference_packing(model) -> None:
    """Keep bitsandbytes' 4-bit layers on one code path on CPU.

    On CPUs with AVX512-BF16, a ``Linear4bit`` that runs in eval mode without gradients repacks its
    weights into an inference-only layout: a training forward afterwards fails (training evaluates
    between steps), and its kernel rejects small layers (seen with hidden size 32). The regular
    4-bit path works for both training and inference, so the repacking is turned off.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
