"""The memory estimate of each training verb's step (formulas: ``mmphi.plan.memory``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmphi.plan.facts import LMShape, clip_tower_params
from mmphi.plan.memory import CUDA_CONTEXT, GIB, LOGIT_BYTES, Memory, activations, nf4_bytes, trained


@dataclass(frozen=True)
class Step:
    """What a step's memory depends on besides the model."""

    seq: int  # tokens per example (the longest batch: max_len or seq_len)
    batch: int  # examples per process
    checkpointing: bool
    optimizer: str  # "adamw" or "adamw8bit"
    processes: int = 1
    sharded: bool = False
    context: float = CUDA_CONTEXT  # 0 on a CPU (bench/scale_check.py)

    @property
    def split(self) -> int:
        return self.processes if self.sharded else 1


def _gathered(mem: Memory, step: Step, lm: LMShape) -> None:
    """FSDP with decoder layers as units: the root unit (embeddings, head, final norm) and two layers (the one
    computing, the one prefetched) are whole in bf16 at a time."""
    if step.sharded and step.processes > 1:
        layer, root = lm.layer_params(), lm.params() - lm.layers * lm.layer_params()
        mem.add("sharding: gathered root + 2 layers", 2.0 * (root + 2 * layer),
                f"({root:,} + 2 x {layer:,}) params x 2 B (bf16)")


def _finish(mem: Memory, step: Step) -> Memory:
    if step.context:
        mem.add("CUDA context + allocator slack", step.context, f"{step.context / GIB:.1f} GiB, a round figure")
    mem.checkpointing = step.checkpointing
    return mem


def pretrain_memory(lm: LMShape, step: Step) -> Memory:
    """Stage 0: every parameter trained (fp32 master weights, bf16 autocast), logits at every position."""
    mem = Memory()
    numels = [t.numel for t in lm.tensors()]
    trained(mem, "model", numels, step.optimizer, step.split)
    _gathered(mem, step, lm)
    act, other, how = activations(lm.layers, step.seq, step.batch, lm.hidden, lm.heads, step.checkpointing, 4)
    mem.add("activations", act, how)
    mem.other_activations = other
    positions = step.seq * step.batch
    mem.add("LM head logits", LOGIT_BYTES * positions * lm.vocab, f"{positions:,} positions x {lm.vocab:,} ids x "
            f"{LOGIT_BYTES} B")  # a live head's ids are the corpus's, not counted in a plan: the full vocabulary
    return _finish(mem, step)


@dataclass(frozen=True)
class Adapters:
    r: int
    targets: tuple[str, ...]
    dropout: float


@dataclass(frozen=True)
class Images:
    tokens: int  # LM positions an image takes
    patches: int  # feature vectors per image
    dim: int  # width of a feature vector
    projector: tuple[int, ...]  # the projector's tensor sizes
    width: int  # the projector's widest activation (its hidden width, or the LM's)


def stage_memory(lm: LMShape, step: Step, images: Images, quantize: bool, lora: Adapters | None) -> Memory:
    """Stage 1 (``lora`` None: LM frozen, projector trained) or stage 2 (LoRA + projector; QLoRA if quantised)."""
    mem = Memory()
    tensors = lm.tensors()
    split = step.split
    if quantize:
        linear = [t.numel for t in tensors if t.kind == "linear"]
        rest = sum(t.numel for t in tensors if t.kind != "linear")
        packed, scales = nf4_bytes(linear)
        mem.add("LM weights: 4-bit NF4 linears", packed / split, f"{sum(linear):,} params x 0.5 B")
        mem.add("LM weights: NF4 quantisation constants", scales / split, "1 B per 64 + 4 B per 16,384 + code tables")
        size, why = (4, "fp32 (prepare_model_for_kbit_training)") if lora else (2, "bf16")
        mem.add("LM weights: embeddings, head, norms, biases", size * rest / split,
                f"{rest:,} params x {size} B, {why}")
    else:
        n = sum(t.numel for t in tensors)
        mem.add("LM weights: bf16", 2.0 * n / split, f"{n:,} params x 2 B")
    _gathered(mem, step, lm)
    extra = 0.0
    if lora:
        shapes = lm.linears()
        sizes = [n for t in lora.targets for n in (lora.r * shapes[t][0], shapes[t][1] * lora.r)]
        trained(mem, f"LoRA r={lora.r}", sizes * lm.layers, step.optimizer, split)
        inputs = sum(shapes[t][0] for t in lora.targets)
        tokens = step.seq * step.batch
        extra = tokens * (3.0 * inputs * (lora.dropout > 0) + 2.0 * lora.r * len(lora.targets))
    trained(mem, "projector", list(images.projector), step.optimizer)
    stream = 4 if (quantize and lora) else 2  # the residual stream follows the embeddings' dtype
    act, other, how = activations(lm.layers, step.seq, step.batch, lm.hidden, lm.heads, step.checkpointing, stream,
                                  extra)
    mem.add("activations", act, how)
    mem.other_activations = other
    feats = step.batch * images.patches * (4.0 * images.dim + 8.0 * images.width)
    mem.add("image features + projector activations", feats,
            f"b x {images.patches} x (4*{images.dim} + 8*{images.width}) B")
    positions = step.batch * max(step.seq - images.tokens, 1)
    mem.add("LM head logits (loss positions)", LOGIT_BYTES * positions * lm.head_ids,
            f"<= b*(s - {images.tokens} image) = {positions:,} positions x {lm.head_ids:,} ids x {LOGIT_BYTES} B")
    return _finish(mem, step)


def clip_memory(model: dict[str, Any], step: Step, text_len: int) -> Memory:
    """``mmphi clip``: both towers trained in full; the step holds both towers' activations."""
    v, t = model["vision_config"], model["text_config"]
    proj = model.get("projection_dim", 512)
    n = clip_tower_params(v, text=False) + clip_tower_params(t, text=True) + proj * (v["hidden_size"] +
                                                                                   t["hidden_size"]) + 1
    mem = Memory()
    trained(mem, "CLIP", [n], step.optimizer, step.split)
    v_seq = (v["image_size"] // v["patch_size"]) ** 2 + 1
    acts = [activations(c["num_hidden_layers"], s, step.batch, c["hidden_size"], c["num_attention_heads"],
                        step.checkpointing, 4) for c, s in ((v, v_seq), (t, text_len))]
    mem.add("activations", acts[0][0] + acts[1][0], f"vision {acts[0][2]}; text {acts[1][2]}")
    mem.other_activations = acts[0][1] + acts[1][1]
    return _finish(mem, step)
