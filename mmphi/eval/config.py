"""Settings of ``mmphi eval``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmphi.config import check, opt
from mmphi.infer.config import ASR_PROMPT_HELP


@dataclass
class EvalConfig:
    model: str = opt("", "model folder: a stage-2 final/ (or merged/), a stage-1 final/, or a plain causal LM",
                     required=True)
    data: str = opt("", "a held-out split folder, e.g. WORLD/test (instruct.json, captions.json, images/, "
                        "speech.json, corpus.txt); not needed with --benchmark", required=True)
    out: str = opt("runs/eval", "report folder: results.json, results.md and charts")
    limit: int = opt(0, "at most this many typed questions (with --benchmark: questions per split; 0 = all)")
    captions: int = opt(100, "images captioned for BLEU-4 / CIDEr (0 = skip)")
    spoken: bool = opt(True, "answer the spoken questions (speech.json) through speech recognition")
    audio_routes: list[str] = opt(["asr"], "routes the spoken questions take, each reported beside typed: asr = "
                                           "Whisper's transcript; embed = the encoder's features through the model's "
                                           "audio projector (docs/speech.md); asr,embed = both")
    asr_model: str = opt("", "faster-whisper model for the spoken questions; empty = the bundled Whisper tiny.en")
    asr_prompt: str = opt("", ASR_PROMPT_HELP)
    describe_first: bool = opt(False, "also ask every typed question after the model has described the image "
                                      "(a two-turn conversation, greedy), reported beside the direct answers; "
                                      "the spoken questions are then answered that way too, beside their typed "
                                      "twins so asked; not with --benchmark, which asks as LLaVA-1.5 does")
    # The names of mmphi.eval.benchmarks.BENCHMARKS (not imported: this module stays light; a test compares).
    benchmark: Literal["", "vqav2", "gqa", "pope", "sqa", "textvqa"] = opt(
        "", "a public benchmark read from its official files instead of --data: vqav2, gqa (testdev-balanced), "
            "pope, sqa (ScienceQA-IMG), textvqa; asked with LLaVA-1.5's prompts, scored by its own rules "
            "(docs/benchmarks.md)")
    benchmark_dir: str = opt("", "the benchmark's folder, holding its official question/annotation files")
    benchmark_split: str = opt("", "the benchmark's split; empty = its usual one (vqav2: val2014, gqa: "
                                   "testdev_balanced, pope: random,popular,adversarial, sqa: test, textvqa: val)")
    benchmark_images: str = opt("", "the benchmark's image folder; empty = where its layout puts them "
                                    "(docs/benchmarks.md)")
    benchmark_blind: bool = opt(True, "with --benchmark, also ask every question with the image removed "
                                      "(the blind baseline) and score it the same way")
    batch_size: int = opt(32, "questions answered per generate() call")
    examples: int = opt(6, "example images with question, answer and truth in the report")
    seed: int = opt(0, "unused (decoding is greedy); accepted for a uniform CLI")

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required (--model)")
        check(bool(self.data) or bool(self.benchmark), "data is required (--data), or a --benchmark")
        check(not self.benchmark or bool(self.benchmark_dir), "--benchmark needs --benchmark-dir")
        check(self.limit >= 0 and self.captions >= 0 and self.examples >= 0, "limit, captions, examples must be >= 0")
        check(self.batch_size > 0, "batch_size must be > 0")
        check(bool(self.audio_routes) and set(self.audio_routes) <= {"asr", "embed"},
              f"audio_routes must be asr, embed or asr,embed, got {','.join(self.audio_routes)}")
