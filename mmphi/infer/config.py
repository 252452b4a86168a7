"""Settings of ``mmphi chat`` (and the generation knobs shared by the app and the API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmphi.config import check, opt

# Speech settings shared by chat, app, serve and eval.
ASR_MODEL_HELP = "faster-whisper model for audio; empty = the bundled Whisper tiny.en"
ASR_PROMPT_HELP = ("words to expect in the speech (e.g. the names users will say), given to Whisper as its "
                   "initial prompt; empty = none")
AudioRoute = Literal["asr", "embed"]
AUDIO_ROUTE_HELP = ("how speech reaches the model: asr = Whisper's transcript joins the text; embed = Whisper's "
                    "encoder features through the model's audio projector (a model given one by `mmphi "
                    "speech-align` and `speech-finetune`; docs/speech.md)")


@dataclass
class GenerationArgs:
    max_new_tokens: int = opt(128, "most tokens to generate per answer")
    temperature: float = opt(0.0, "sampling temperature; 0 = greedy")
    top_p: float = opt(1.0, "nucleus sampling: keep the smallest set of tokens with this much probability")
    top_k: int = opt(0, "sample among the k most likely tokens; 0 = no limit")
    repetition_penalty: float = opt(1.0, "penalise tokens already generated (>1); 1 = off")
    no_repeat_ngram: int = opt(0, "repetition guard: never repeat an n-gram of this size; 0 = off")
    describe_first: bool = opt(False, "answer a question about an image after the model's own description of it "
                                      "(shown first; once per image): on the shapes world count 88 -> 95%, "
                                      "docs/accuracy.md")

    def __post_init__(self) -> None:
        check(self.max_new_tokens > 0, "max_new_tokens must be > 0")
        check(self.temperature >= 0 and 0 < self.top_p <= 1 and self.top_k >= 0,
              "need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
        check(self.repetition_penalty > 0 and self.no_repeat_ngram >= 0,
              "need repetition_penalty > 0 and no_repeat_ngram >= 0")

    def params(self, seed: int | None = None):
        from mmphi.infer.generate import GenerationParams

        return GenerationParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k,
                                self.repetition_penalty, self.no_repeat_ngram, seed)


@dataclass
class ChatConfig(GenerationArgs):
    model: str = opt("", "model folder: a stage-2 final/ (or merged/), a stage-1 final/, or a plain causal LM",
                     required=True)
    text: str = opt("", "the question; without it, chat interactively", positional=True)
    image: str = opt("", "an image file to ask about")
    audio: str = opt("", "an audio file (wav, flac, mp3, ogg) whose speech joins the question")
    asr_model: str = opt("", ASR_MODEL_HELP)
    asr_prompt: str = opt("", ASR_PROMPT_HELP)
    audio_route: AudioRoute = opt("asr", AUDIO_ROUTE_HELP)
    seed: int = opt(0, "sampling seed")
    out: str = opt("", "unused; accepted for a uniform CLI")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.model), "model is required (--model)")
