"""Settings of ``mmphi align`` (stage 1) and ``mmphi finetune`` (stage 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from mmphi.config import TrainArgs, check, opt
from mmphi.mm.sampling import Grouping

ProjectorKind = Literal["linear", "mlp2x_gelu", "resblock", "geglu"]  # each a branch of build_projector
KINDS: tuple[str, ...] = get_args(ProjectorKind)

# LoRA targets per architecture (attention + MLP projections); --lora-targets overrides.
LORA_TARGETS = {
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass
class StageArgs(TrainArgs):
    data: str = opt("", "a shapes world folder, or a training file (COCO captions for align, LLaVA-Instruct "
                        "JSON for finetune)", required=True)
    val_data: str = opt("", "validation file of the same format (a world brings its own val split)")
    features: str = opt("", "feature store of the images (from `mmphi embed`)", required=True)
    max_len: int = opt(512, "longest sequence in tokens (image placeholders included); later rounds are dropped")
    quantize: bool = opt(False, "load the LM in 4-bit NF4 (bitsandbytes)")
    val_limit: int = opt(300, "validation questions answered by greedy decoding at the end (0 = skip)")
    group_by: Grouping = opt("modality", "which examples share a batch (each batch is padded to its own longest): "
                                         "modality = LLaVA's modality-length grouping (image-bearing and text-only "
                                         "examples apart, mega-batches sorted by length), length = by length alone, "
                                         "none = shuffled, unsorted")
    megabatch: int = opt(32, "global micro-batches per mega-batch sorted by length (group_by modality or length): "
                             "more = less padding, batches of less random make-up")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.data), "data is required (--data)")
        check(bool(self.features), "features is required (--features): a store made by `mmphi embed`")
        check(self.max_len >= 16, f"max_len must be >= 16, got {self.max_len}")
        check(self.val_limit >= 0, "val_limit must be >= 0")
        check(self.megabatch >= 1, f"megabatch must be >= 1, got {self.megabatch}")


@dataclass
class AlignConfig(StageArgs):
    lm: str = opt("", "the language model: a folder (e.g. a pretrain run's final/) or a hub id", required=True)
    vision: str = opt("", "the vision encoder the features came from (folder or hub id), recorded for inference",
                      required=True)
    projector: ProjectorKind = opt("mlp2x_gelu", "projector kind: " + ", ".join(KINDS))
    projector_hidden: int = opt(0, "hidden width of the mlp2x_gelu or geglu projector (0 = the LM's width, "
                                   "as in LLaVA-1.5)")
    image_positions: bool = opt(False, "add a learned code per image-token position to the features, before the "
                                       "projector (for encoders whose patch features hardly encode where they are)")
    tokens_per_feature: int = opt(1, "LM tokens the projector makes from each image feature vector (1 = LLaVA's "
                                     "one token per patch; docs/accuracy.md measures 2 and 4)")
    system: str = opt("", "system line that opens every conversation (LLaVA's phi template uses a long one)")
    candidates: int = opt(1, "train this many projectors (seeds seed, seed+1, ...) and keep the one through which "
                             "the frozen LM answers the held-out conversations best (lowest loss on their answers); "
                             "which projector stage 2 starts from moves its accuracy by many points, and "
                             "finetune --probe-steps tries every candidate")
    select_data: str = opt("", "LLaVA-format conversations that choose among candidates (default: the world's "
                               "val/instruct.json; without any, the lowest val caption loss chooses)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.lm), "lm is required (--lm)")
        check(self.candidates >= 1, f"candidates must be >= 1, got {self.candidates}")
        check(bool(self.vision), "vision is required (--vision)")
        check(self.projector_hidden >= 0, "projector_hidden must be >= 0")
        check(self.tokens_per_feature >= 1, f"tokens_per_feature must be >= 1, got {self.tokens_per_feature}")


@dataclass
class FinetuneConfig(StageArgs):
    quantize: bool = opt(True, "load the LM in 4-bit NF4 (QLoRA); --no-quantize trains plain LoRA")
    init: str = opt("", "stage-1 output folder (align's final/): LM, projector, vision, template", required=True)
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "LoRA dropout")
    lora_targets: list[str] = opt([], "module names to adapt; empty = the architecture's default "
                                      "(Phi: q_proj,k_proj,v_proj,dense,fc1,fc2)")
    projector_lr: float = opt(0.0, "learning rate of the projector; 0 = same as lr")
    loss: Literal["token", "answer"] = opt(
        "token", "loss averaging: 'token' = mean over answer tokens (LLaVA); 'answer' = every answer counts "
                 "once, so long descriptions do not drown one-word answers")
    merge: bool = opt(False, "also export final/ with the adapters merged into full-precision LM weights")
    probe_steps: int = opt(0, "when the stage-1 folder holds several candidate projectors (align --candidates), "
                              "train from each for this many steps and go on from the one with the lowest val "
                              "loss; 0 (or not below max_steps) = start from the one align kept")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.init), "init is required (--init): the output of `mmphi align`")
        check(self.lora_r > 0 and self.lora_alpha > 0, "lora_r and lora_alpha must be > 0")
        check(self.probe_steps >= 0, "probe_steps must be >= 0")
        check(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        check(self.projector_lr >= 0, "projector_lr must be >= 0")
