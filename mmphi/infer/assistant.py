"""The inference engine every front end uses (CLI chat, Gradio app, HTTP API, evaluation).

    assistant = Assistant.load("runs/demo/finetune/final")
    reply = assistant.reply([Message("user", "What colour is the circle?", image="scene.png")])
    for event in assistant.stream(messages): ...

Any number of threads may call ``stream``/``reply`` at once: each request's audio is transcribed,
its image encoded and its prompt embedded in the caller's thread, then its generation joins the
running batch of the engine's :class:`~mmphi.infer.batching.BatchedGenerator` (up to ``max_batch``
rows; more wait for a free row), each with its own sampling settings and stop conditions.

With ``describe_first``, a conversation with an image is answered after the model has described
the image: its own answer to "Describe the image." (once per image, cached) goes into the
conversation as a first round, and the question follows it (on the shapes world: count 88 -> 95%,
docs/accuracy.md). The description is streamed as a "description" event and kept in the Reply.

A conversation is a list of ``Message``s; user turns may carry text, an image and/or audio.
Audio takes one of two routes (``audio_route``): "asr" transcribes it (Whisper) and the transcript
joins the turn's text, returned so the user sees what was heard; "embed" reads it as stacked
Whisper encoder features through the model's audio projector, at an ``<audio>`` placeholder (a model
given speech by ``mmphi speech-align``/``speech-finetune``; one clip per conversation, the most
recent, as with images; nothing is transcribed). One image per conversation (the LLaVA-style template has one slot): if
several turns carry one, the most recent is used. Old rounds are dropped when the prompt would
not fit the context (never the round holding the image); a single round that does not fit is an
error, not a silent cut.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mmphi.chat import AUDIO, DESCRIBE, IMAGE
from mmphi.infer.batching import BatchedGenerator
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import InputError, Message, PromptTooLong, load_image
from mmphi.lm.loading import default_device
from mmphi.mm.data import ChatEncoder

if TYPE_CHECKING:
    from PIL import Image

    from mmphi.audio import Transcriber

AUDIO_ROUTES = ("asr", "embed")
DESCRIPTION_TOKENS = 48  # as long as the shapes world's descriptions; eval describes with the same budget
DESCRIPTIONS_KEPT = 256  # images whose description is kept for follow-up questions


@dataclass
class Event:
    """A streamed piece of a reply: ``kind`` is "transcript", "description", "token" or "done"."""

    kind: str
    text: str = ""
    reply: Reply | None = None


@dataclass
class Reply:
    text: str
    transcripts: list[str] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str = "stop"  # "stop" (EOS), "length" (max_new_tokens), "time" (time limit) or "cancelled"
    dropped_rounds: int = 0
    warnings: list[str] = field(default_factory=list)
    time_to_first_token_s: float | None = None
    description: str | None = None  # the model's own description of the image (describe_first)
    elapsed_s: float = 0.0


class Assistant:
    def __init__(self, model, tokenizer, multimodal: bool, source: str, asr_model: str | None = None,
                 asr_prompt: str | None = None, max_batch: int = 16, describe_first: bool = False,
                 audio_route: str = "asr"):
        self.model, self.tokenizer, self.multimodal, self.source = model, tokenizer, multimodal, source
        if audio_route not in AUDIO_ROUTES:
            raise InputError(f"audio_route must be one of {', '.join(AUDIO_ROUTES)}, not {audio_route!r}")
        if audio_route == "embed" and not (multimodal and model.spec.get("audio")):
            raise InputError(f"{source} has no audio projector, so speech can only reach it as a transcript "
                             "(--audio-route asr); give it one with `mmphi speech-align` and `mmphi speech-finetune`")
        self.audio_route = audio_route
        self._audio_encoder = None  # loaded on first use (property audio_encoder)
        self.lm = model.lm if multimodal else model
        system = model.spec.get("system", "") if multimodal else ""
        image_tokens = model.image_tokens if multimodal else 0
        self.context = int(getattr(self.lm.config, "max_position_embeddings", 2048))
        self.encoder = ChatEncoder(tokenizer, image_tokens, system, max_len=self.context)
        self._asr_model, self._asr_prompt, self._asr_lock = asr_model, asr_prompt, threading.Lock()
        self._asr: Transcriber | None = None  # loaded on first use (property asr)
        self.generator = BatchedGenerator(self.lm, tokenizer.eos_token_id, max_batch)
        self.describe_first = describe_first and multimodal
        self._descriptions: OrderedDict[str, str] = OrderedDict()  # image digest -> description, recent last
        self._descriptions_lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, device: torch.device | None = None, asr_model: str | None = None,
             quantize: bool | None = None, asr_prompt: str | None = None, max_batch: int = 16,
             describe_first: bool = False, audio_route: str = "asr") -> Assistant:
        """A multimodal directory (mmphi.json) or any plain causal LM folder / hub id (text only).

        ``max_batch``: most generations decoded together (1 = one at a time); ``describe_first``:
        answer after the model's own description of the image (see the module docstring).
        """
        device = device or default_device()
        if (Path(path) / "mmphi.json").exists():
            from mmphi.mm.loading import load_multimodal

            model, tok = load_multimodal(path, device=device, quantize=quantize)
            return cls(model, tok, True, str(path), asr_model, asr_prompt, max_batch, describe_first, audio_route)
        from mmphi.lm.loading import load_causal_lm
        from mmphi.tokenizer import load_tokenizer

        lm = load_causal_lm(str(path), quantize=bool(quantize), device=device).eval()
        return cls(lm, load_tokenizer(str(path)), False, str(path), asr_model, asr_prompt, max_batch,
                   audio_route=audio_route)

    @property
    def asr(self) -> Transcriber:
        with self._asr_lock:  # loaded on first use, once, whichever thread asks first
            if self._asr is None:
                from mmphi.audio import Transcriber

                self._asr = Transcriber(self._asr_model, prompt=self._asr_prompt)
        return self._asr

    @property
    def audio_encoder(self):
        """The speech encoder of the embedding route (the one the audio projector was trained on)."""
        with self._asr_lock:
            if self._audio_encoder is None:
                from mmphi.mm.speech import load_audio_encoder

                self._audio_encoder = load_audio_encoder(self.model.spec)
        return self._audio_encoder

    def _hear(self, audio, text: str, transcripts: list[str]) -> tuple[str, torch.Tensor | None]:
        """The turn's text with its audio joined: the transcript (asr), or an <audio> placeholder and the
        clip's (tokens, D) features (embed)."""
        if self.audio_route == "embed":
            return f"{text}\n{AUDIO}".strip(), self.audio_encoder.encode(audio)
        heard = self.asr.transcribe(audio).text
        transcripts.append(heard)
        return f"{text}\n{heard}".strip(), None

    # ------------------------------------------------------------------ prompt
    def _rounds(self, messages: Sequence[Message]) -> tuple[list[tuple[str, str | None]], object, list[str], list,
                                                             torch.Tensor | None]:
        if not messages or messages[-1].role != "user":
            raise InputError("the conversation must end with a user message")
        rounds: list[tuple[str, str | None]] = []
        transcripts: list[str] = []
        warnings: list[str] = []
        image: Image.Image | None = None
        image_round: int | None = None  # set together with image
        clip = None  # the embedding route's clip: (tokens, D) features of the latest audio
        clip_round: int | None = None
        for m in messages:
            if m.role == "assistant":
                if not rounds or rounds[-1][1] is not None:
                    raise InputError("an assistant message must follow a user message")
                rounds[-1] = (rounds[-1][0], m.text)
                continue
            if rounds and rounds[-1][1] is None:
                raise InputError("two user messages in a row; put them in one message")
            text = (m.text or "").replace(IMAGE, "").strip()
            text = text.replace(AUDIO, "").strip()
            if m.audio is not None:
                text, features = self._hear(m.audio, text, transcripts)
                if features is not None:
                    if clip_round is not None:  # one <audio> slot per conversation: the latest clip takes it
                        warnings.append("only one audio clip per conversation is read as embeddings: the most "
                                        "recent one is used")
                        u, a = rounds[clip_round]
                        rounds[clip_round] = (u.replace(AUDIO, "").strip() or "(audio)", a)
                    clip, clip_round = features, len(rounds)
            if m.image is not None:
                if not self.multimodal:
                    raise InputError(f"{self.source} is a text-only model: it cannot take images")
                if image is not None:
                    warnings.append("only one image per conversation: the most recent one is used")
                image, image_round = load_image(m.image), len(rounds)
            if not text and m.image is None:
                raise InputError("empty message: send some text, an image or audio")
            rounds.append((text, None))
        if image_round is not None:  # an image was attached
            u, a = rounds[image_round]
            rounds[image_round] = (f"{IMAGE}\n{u}" if u else IMAGE, a)
        return rounds, image, transcripts, warnings, clip

    def _fit(self, rounds: list, image_round: int | None, budget: int, clip: torch.Tensor | None = None):
        """Encode, dropping the oldest rounds (not the image's or the clip's) until the prompt fits ``budget``."""
        dropped = 0
        while True:
            ex = self.encoder.encode(rounds, "image" if image_round is not None else None, "", (),
                                     "audio" if clip is not None else None, 0 if clip is None else clip.shape[0])
            if ex is not None and len(ex) <= budget:
                return ex, dropped
            droppable = [i for i in range(len(rounds) - 1) if i != image_round and AUDIO not in rounds[i][0]]
            if not droppable:
                size = "" if ex is None else f" ({len(ex)} tokens)"
                raise PromptTooLong(f"the prompt{size} does not fit the model's context of {self.context} tokens "
                                    "with room for the answer; shorten the message or lower max_new_tokens")
            rounds.pop(droppable[0])
            if image_round is not None and droppable[0] < image_round:
                image_round -= 1
            dropped += 1

    @torch.no_grad()
    def _embeds(self, ex, image, clip: torch.Tensor | None = None) -> torch.Tensor:
        device = next(self.lm.parameters()).device
        ids = torch.tensor([ex.input_ids], device=device)
        if not self.multimodal:
            return self.lm.get_input_embeddings()(ids)
        mask = torch.tensor([ex.image_mask], device=device)
        feats = None
        if image is not None:
            if self.model.encoder is None:
                raise InputError("this model directory has no vision encoder to read raw images")
            feats = self.model.encoder.encode([image])  # (1, N, D)
        audio = {}
        if clip is not None:
            audio = {"audio_mask": torch.tensor([ex.audio_mask], device=device),
                     "audio_features": clip[None].to(device),  # (1, tokens, D)
                     "audio_lengths": torch.tensor([clip.shape[0]], device=device)}
        return self.model.embed(ids, mask, feats, **audio)

    # ------------------------------------------------------------------ replies
    def stream(self, messages: Sequence[Message], params: GenerationParams | None = None,
               stop: threading.Event | None = None, deadline: float | None = None) -> Generator[Event, None, None]:
        """Transcript events first, then token deltas as they are generated, then "done" with the Reply.

        ``stop`` (set by whoever stops listening) ends the generation at the next token; ``deadline``
        (a ``time.monotonic()`` value) ends it there, with ``finish_reason`` "time".
        """
        params = params or GenerationParams()
        start = time.perf_counter()
        rounds, image, transcripts, warnings, clip = self._rounds(messages)
        for t in transcripts:
            yield Event("transcript", t)
        image_round = next((i for i, (u, _) in enumerate(rounds) if IMAGE in u), None)
        description = None
        if self.describe_first and image_round is not None:
            description = self._describe(image, stop, deadline)
            yield Event("description", description)
            question = rounds[image_round][0].replace(IMAGE, "").strip()
            rounds[image_round:image_round + 1] = [(f"{IMAGE}\n{DESCRIBE}", description),
                                                   (question or DESCRIBE, rounds[image_round][1])]
        ex, dropped = self._fit(rounds, image_round, self.context - params.max_new_tokens, clip)
        if dropped:
            warnings.append(f"the {dropped} oldest round(s) were left out to fit the context")
        reply = Reply("", transcripts, 0, len(ex), "stop", dropped, warnings, description=description)
        generation = self.generator.submit(self._embeds(ex, image, clip), params, stop, deadline)
        ids: list[int] = []
        shown = ""
        try:
            for tok in generation:
                if reply.time_to_first_token_s is None:
                    reply.time_to_first_token_s = time.perf_counter() - start
                ids.append(tok)
                # lstrip: the deltas add up to the reply's text (a BPE answer starts with a space token)
                text = self.tokenizer.decode(ids, skip_special_tokens=True).lstrip()
                if text != shown and not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                    yield Event("token", text[len(shown):])
                    shown = text
        finally:
            generation.close()  # a consumer that stops early frees the batch row at the next step
        reply.tokens = len(ids)
        reply.text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        reply.finish_reason = generation.finish
        if generation.finish == "time":
            warnings.append("the answer was cut short by the time limit")
        reply.elapsed_s = time.perf_counter() - start
        yield Event("done", reply=reply)

    def _describe(self, image, stop: threading.Event | None, deadline: float | None) -> str:
        """The model's greedy answer to "Describe the image." for ``image`` (cached per image content)."""
        key = hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()
        with self._descriptions_lock:
            if key in self._descriptions:
                self._descriptions.move_to_end(key)
                return self._descriptions[key]
        ex, _ = self._fit([(f"{IMAGE}\n{DESCRIBE}", None)], 0, self.context - DESCRIPTION_TOKENS)
        generation = self.generator.submit(self._embeds(ex, image), GenerationParams(DESCRIPTION_TOKENS), stop,
                                           deadline)
        text = self.tokenizer.decode(list(generation), skip_special_tokens=True).strip()
        if generation.finish in ("stop", "length"):  # a cut description is not kept for the next question
            with self._descriptions_lock:
                self._descriptions[key] = text
                while len(self._descriptions) > DESCRIPTIONS_KEPT:
                    self._descriptions.popitem(last=False)
        return text

    def reply(self, messages: Sequence[Message], params: GenerationParams | None = None) -> Reply:
        final = None
        for event in self.stream(messages, params):
            if event.kind == "done":
                final = event.reply
        assert final is not None
        return final
