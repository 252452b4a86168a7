"""Settings of ``mmphi eval``."""

from __future__ import annotations

from dataclasses import dataclass

from mmphi.config import check, opt
from mmphi.infer.config import ASR_PROMPT_HELP


@dataclass
class EvalConfig:
    model: str = opt("", "model folder: a stage-2 final/ (or merged/), a stage-1 final/, or a plain causal LM",
                     required=True)
    data: str = opt("", "a held-out split folder, e.g. WORLD/test (instruct.json, captions.json, images/, "
                        "speech.json, corpus.txt)", required=True)
    out: str = opt("runs/eval", "report folder: results.json, results.md and charts")
    limit: int = opt(0, "at most this many typed questions (0 = all)")
    captions: int = opt(100, "images captioned for BLEU-4 / CIDEr (0 = skip)")
    spoken: bool = opt(True, "answer the spoken questions (speech.json) through speech recognition")
    asr_model: str = opt("", "faster-whisper model for the spoken questions; empty = the bundled Whisper tiny.en")
    asr_prompt: str = opt("", ASR_PROMPT_HELP)
    describe_first: bool = opt(False, "also ask every typed question after the model has described the image "
                                      "(a two-turn conversation, greedy), reported beside the direct answers; "
                                      "the spoken questions are then answered that way too, beside their typed "
                                      "twins so asked")
    batch_size: int = opt(32, "questions answered per generate() call")
    examples: int = opt(6, "example images with question, answer and truth in the report")
    seed: int = opt(0, "unused (decoding is greedy); accepted for a uniform CLI")

    def __post_init__(self) -> None:
        check(bool(self.model), "model is required (--model)")
        check(bool(self.data), "data is required (--data)")
        check(self.limit >= 0 and self.captions >= 0 and self.examples >= 0, "limit, captions, examples must be >= 0")
        check(self.batch_size > 0, "batch_size must be > 0")
