"""Memory per GPU of a training step, estimated from the shapes and settings (nothing is allocated).

Each figure is a line with the formula it came from. Sizes, as the code paths allocate them on CUDA:

* weights: bf16 (2 B) for a frozen LM; fp32 (4 B) for a model trained in full (stage 0, CLIP: fp32 master
  weights under bf16 autocast); 4-bit NF4 for QLoRA: 0.5 B per linear-layer weight plus its quantisation
  constants (double quantisation: a 1-byte scale per 64 values, an fp32 scale per 256 of those, two small code
  tables per tensor), and every other LM parameter (embeddings, LM head, norms, biases) in fp32, since
  peft's ``prepare_model_for_kbit_training`` upcasts them;
* trained parameters (LoRA adapters, the projector, a whole model) in fp32, their gradients in fp32, AdamW's two
  states in fp32 (8 B) or, with 8-bit AdamW (bitsandbytes, blockwise), 2 B plus two fp32 scales per 256 values
  (tensors under 4,096 values keep fp32 states, as bitsandbytes does);
* activations per decoder layer ~ s*b*h*(34 + 5*a*s/h) bytes in half precision (Korthikanti et al. 2022,
  "Reducing Activation Recomputation in Large Transformer Models", no tensor or sequence parallelism). The
  5*a*s/h part is the s x s attention scores, softmax and its dropout mask, which PyTorch's fused SDPA
  kernels (transformers' default attention for Phi) never store; it is shown beside, not added. With
  gradient checkpointing (one checkpoint per decoder layer, as transformers does) a step keeps each layer's
  input, s*b*h values in the residual stream's dtype (fp32 when the embeddings are fp32), and recomputes one
  layer at a time: L*s*b*h*stream + s*b*h*34;
* LoRA adds, per adapted layer, its dropout's output and mask (~3 B per input value, when dropout > 0) and
  the r-wide intermediate (2 B per value); the LM head's logits cost ~10 B each (fp32 log-probabilities kept
  for backward, their fp32 gradient, the bf16 gradient), at every position for stage 0 and at the loss
  positions for stages 1-2 (counted as every text position: an upper bound);
* with sharding (FSDP full shard / ZeRO-3) weights, gradients and optimizer states are split over the
  processes, plus two layers gathered in bf16 (the one computing and the one prefetched);
* a CUDA context overhead (context, cuBLAS workspace, allocator slack).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

GIB = 2**30
CUDA_CONTEXT = 1.0 * GIB  # a PyTorch CUDA context is ~0.3-0.8 GiB on recent GPUs; the rest is allocator slack
MIN_8BIT = 4096  # bitsandbytes keeps fp32 states for tensors with fewer values
LOGIT_BYTES = 10


@dataclass
class Line:
    label: str
    bytes: float
    how: str


@dataclass
class Memory:
    """The lines of one estimate; ``activations`` is the line that gradient checkpointing changes."""

    lines: list[Line] = field(default_factory=list)
    checkpointing: bool = False
    other_activations: float = 0.0  # the activation line with the other checkpointing setting
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, nbytes: float, how: str) -> None:
        self.lines.append(Line(label, nbytes, how))

    def total(self) -> float:
        return sum(line.bytes for line in self.lines)

    def total_other(self) -> float:
        """The total with gradient checkpointing switched the other way."""
        act = next(line.bytes for line in self.lines if line.label.startswith("activations"))
        return self.total() - act + self.other_activations

    def gib(self) -> dict[str, float]:
        return {line.label: round(line.bytes / GIB, 3) for line in self.lines}


def adamw_bytes(numels: Sequence[int], kind: str) -> float:
    """AdamW's two states for tensors of these sizes: fp32, or bitsandbytes' blockwise 8-bit."""
    if kind == "adamw":
        return 8.0 * sum(numels)
    return float(sum(8 * n if n < MIN_8BIT else 2 * n + 2 * 4 * -(-n // 256) for n in numels))


def nf4_bytes(numels: Sequence[int]) -> tuple[float, float]:
    """(packed 4-bit weights, quantisation constants) of bitsandbytes NF4 with double quantisation."""
    packed = sum(-(-n // 2) for n in numels)
    scales = sum(-(-n // 64) + 4 * -(-n // (64 * 256)) + 4 * (16 + 256) + 4 for n in numels)
    return float(packed), float(scales)


def layer_activations(s: int, b: int, h: int, a: int) -> tuple[float, float]:
    """(stored without the attention scores, the scores' part) of one layer: s*b*h*34, s*b*h*5*a*s/h."""
    return 34.0 * s * b * h, 5.0 * a * s * s * b


def activations(layers: int, s: int, b: int, h: int, a: int, checkpointing: bool, stream: int,
                extra_per_layer: float = 0.0) -> tuple[float, float, str]:
    """(bytes with the given checkpointing, with the other, formula) for a stack of ``layers`` layers."""
    one, scores = layer_activations(s, b, h, a)
    full = layers * (one + extra_per_layer)
    ckpt = layers * s * b * h * stream + one + extra_per_layer
    extra = f" + LoRA {extra_per_layer / GIB:.2f} GiB/layer" if extra_per_layer else ""
    if checkpointing:
        how = f"{layers} x s*b*h*{stream} B (layer inputs) + 1 layer s*b*h*34 B{extra}; s={s}, b={b}, h={h}"
    else:
        how = f"{layers} x s*b*h*34 B{extra}; s={s}, b={b}, h={h} (eager attention would add " \
              f"{layers * scores / GIB:.1f} GiB: 5*a*s/h, a={a})"
    return (ckpt, full, how) if checkpointing else (full, ckpt, how)


def trained(mem: Memory, what: str, numels: Sequence[int], optimizer: str, split: int = 1) -> None:
    """fp32 parameters, their gradients and AdamW's states for tensors of these sizes (``split`` ways)."""
    n = sum(numels)
    mem.add(f"{what}: fp32 weights + grads", 8.0 * n / split, f"{n:,} params x (4 + 4) B" + _over(split))
    state = "8 B" if optimizer == "adamw" else "8-bit: 2 B + scales"
    mem.add(f"{what}: AdamW states", adamw_bytes(numels, optimizer) / split, f"{optimizer}, {state}" + _over(split))


def _over(split: int) -> str:
    return f", / {split} processes (sharded)" if split > 1 else ""
