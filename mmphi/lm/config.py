"""Settings of ``mmphi corpus``, ``mmphi teacher`` and ``mmphi pretrain`` (stage 0)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from mmphi.config import TrainArgs, build, check, opt

PHI2_ARCH = {  # microsoft/phi-2, for reference and tests
    "vocab_size": 51200, "hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32,
    "intermediate_size": 10240, "partial_rotary_factor": 0.4, "hidden_act": "gelu_new",
    "max_position_embeddings": 2048, "layer_norm_eps": 1e-5, "rope_theta": 10000.0,
}


@dataclass
class CorpusConfig:
    data: str = opt("", "a shapes world folder, text/JSONL files (comma-separated) or hf:DATASET[:CONFIG]",
                    required=True)
    out: str = opt("runs/corpus", "output folder for train.bin / val.bin / meta.json")
    tokenizer: str = opt("offline", "tokenizer: 'offline' (Phi-2's BPE built locally), a hub id or a folder")
    val_frac: float = opt(0.01, "fraction of documents held out for validation (worlds bring their own val)")
    max_tokens: int = opt(0, "stop after this many train tokens; 0 = the whole corpus")
    text_field: str = opt("text", "field holding the text in JSONL files and datasets")
    seed: int = opt(0, "unused; accepted for a uniform CLI")

    def __post_init__(self) -> None:
        check(bool(self.data), "data is required (--data)")
        check(0 <= self.val_frac < 0.5, f"val_frac must be in [0, 0.5), got {self.val_frac}")
        check(self.max_tokens >= 0, f"max_tokens must be >= 0, got {self.max_tokens}")


@dataclass
class TeacherConfig:
    model: str = opt("", "the teacher: any causal LM (hub id or folder), e.g. microsoft/phi-2", required=True)
    out: str = opt("runs/teacher.jsonl", "JSONL file to append generated documents to")
    prompts: str = opt("", "text file with one prompt per line; empty = built-in topic prompts")
    target_mb: float = opt(1.0, "stop when the output file reaches this size")
    batch_size: int = opt(8, "prompts sampled in parallel per generate() call")
    max_new_tokens: int = opt(256, "tokens sampled per document")
    temperature: float = opt(0.8, "sampling temperature")
    top_p: float = opt(0.95, "nucleus sampling")
    min_words: int = opt(30, "quality filter: drop documents with fewer words")
    min_distinct: float = opt(0.5, "quality filter: minimum fraction of distinct word trigrams (repetition guard)")
    max_batches: int = opt(0, "stop after this many batches; 0 = until target_mb")
    seed: int = opt(0, "sampling seed")
    device: str = opt("auto", "auto, cpu or cuda")

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required (--model)")
        check(self.target_mb > 0, "target_mb must be > 0")
        check(self.batch_size > 0 and self.max_new_tokens > 0, "batch_size and max_new_tokens must be > 0")
        check(0 < self.top_p <= 1 and self.temperature > 0, "need 0 < top_p <= 1 and temperature > 0")
        check(0 <= self.min_distinct <= 1, "min_distinct must be in [0, 1]")


@dataclass
class PretrainConfig(TrainArgs):
    data: str = opt("", "a shapes world folder, a prepared corpus folder (meta.json), or text/JSONL files",
                    required=True)
    tokenizer: str = opt("offline", "tokenizer: 'offline' (Phi-2's BPE built locally), a hub id or a folder")
    model: dict = opt({}, "PhiConfig fields of the model trained from scratch "
                          "(JSON; the keys given override the recipe's)")
    head: Literal["full", "live"] = opt(
        "full", "LM head: full vocabulary, or 'live' = only the ids the train corpus uses (others pinned)")
    seq_len: int = opt(128, "training window in tokens")
    max_tokens: int = opt(0, "cap on prepared train tokens; 0 = the whole corpus")
    val_frac: float = opt(0.01, "text/JSONL data: fraction of documents held out for validation")
    reference: str = opt("", "a model (hub id or folder) whose loss on the same val tokens is compared")
    text_qa: int = opt(300, "world data only: held-out questions answered from the scene described in text")
    text_qa_every: int = opt(0, "also measure text-QA accuracy (150 questions) at evaluations every N steps; 0 = off")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.data), "data is required (--data)")
        check(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")
        check(self.text_qa >= 0, "text_qa must be >= 0")
        size = self.model.get("max_position_embeddings", 2048)
        check(self.seq_len <= size, f"seq_len {self.seq_len} exceeds the model's max_position_embeddings {size}")


@dataclass
class BaseConfig:
    recipe: str = opt("tiny-base", "recipe whose world and pretrain sections make the base (filled from --recipe)",
                      cli=False)
    out: str = opt("runs/base", "work folder: world/, pretrain/ (a resumable run), check-world/, model/")
    into: str = opt("", "where to write the bundled model folder (default: OUT/model); "
                        "mmphi/models/tiny-phi-base replaces the one mmphi ships")
    name: str = opt("mmphi/tiny-phi-base", "the bundled name the model card gives the model")
    max_steps: int = opt(0, "stage-0 steps; 0 = the recipe's (tests use a few)")
    extend_to: int = opt(0, "then resume stage 0 up to this many steps, the cosine schedule stretched to the new end "
                            "(so the rate warms back up, as docs/accuracy.md's best LM was made); 0 = stop there")
    scenes: int = opt(0, "image scenes of the base's world; 0 = the recipe's")
    corpus_scenes: int = opt(-1, "extra text-only corpus scenes; -1 = the recipe's")
    check_seed: int = opt(1001, "seed of a fresh world whose val split checks the base's text QA")
    check_scenes: int = opt(4000, "scenes of that fresh world (its val split holds a tenth of them)")
    check_questions: int = opt(600, "held-out text questions the check asks")
    dry_run: bool = opt(False, "plan, do not train: print stage 0's plan as `mmphi pretrain --dry-run` does "
                               "(settings, global batch, steps per epoch, estimated memory per GPU), building no "
                               "world and loading no weights")
    processes: int = opt(0, "processes (GPUs) to plan for; 0 = what the launcher says (accelerate's WORLD_SIZE), "
                            "else 1")
    gpu_memory: float = opt(0.0, "GB (GiB) of memory per GPU: --dry-run refuses settings estimated not to fit; "
                                 "0 = no check")

    def __post_init__(self) -> None:
        check(bool(self.out), "out must be a folder")
        check(self.max_steps >= 0 and self.scenes >= 0, "max_steps and scenes must be >= 0")
        check(self.extend_to >= 0, "extend_to must be >= 0")
        check(self.corpus_scenes >= -1, "corpus_scenes must be >= 0 (or -1 for the recipe's)")
        check(self.check_scenes >= 30 and self.check_questions > 0, "check_scenes >= 30 and check_questions > 0")
        check(self.name.startswith("mmphi/"), f"a bundled name starts with 'mmphi/', got {self.name!r}")
        check(self.processes >= 0 and self.gpu_memory >= 0, "processes and gpu_memory must be >= 0")


def base_stage0(cfg: BaseConfig, recipe: dict) -> PretrainConfig:
    """Stage 0 of ``mmphi base``: the recipe's pretrain section on the base's own world (OUT/world), a resumable
    run in OUT/pretrain; ``--max-steps`` replaces the recipe's steps."""
    steps = {"max_steps": cfg.max_steps} if cfg.max_steps else {}
    return build(PretrainConfig, recipe.get("pretrain") or {}, steps,
                 {"data": str(Path(cfg.out) / "world"), "out": str(Path(cfg.out) / "pretrain"), "resume": True})


def base_plan(cfg: BaseConfig, recipe: dict) -> PretrainConfig:
    """What ``mmphi base --dry-run`` plans: its stage 0 to the last step it trains (``extend_to`` when set)."""
    pre = base_stage0(cfg, recipe)
    return replace(pre, max_steps=max(cfg.extend_to, pre.max_steps), dry_run=True, processes=cfg.processes,
                   gpu_memory=cfg.gpu_memory)
