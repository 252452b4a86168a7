"""Speech as features: Whisper's encoder output, trimmed to the speech and stacked to a few tokens a second.

The embedding route of the audio input (docs/speech.md, "Speech as embeddings"): instead of the
transcript, the LM reads projected encoder states, as it reads projected image patches.

- The speech is found by the Silero VAD (as the transcript route finds it) and only its span (plus
  ``MARGIN_S`` on each side) is encoded. CTranslate2's Whisper encoder accepts inputs shorter than
  its 30 s window: a 2.5 s question encodes in ~25 ms on 2 cores instead of ~340 ms for the whole
  window (tiny.en, int8; ``bench`` figures in docs/speech.md).
- Longer speech is cut into 30 s windows, each encoded on its own; the frames are concatenated.
- Whisper's encoder gives 50 frames a second (384 wide for tiny.en); ``stack`` consecutive frames
  are concatenated into one feature vector (LLaMA-Omni's downsampling), so 5 gives 10 tokens a
  second of 5 x 384 = 1920 features.

Unusable audio raises what the transcript route raises: :class:`AudioError` (corrupt, empty,
too long, see :func:`load_audio`) and :class:`NoSpeechError` (silence, noise).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import ctranslate2
import faster_whisper
import numpy as np
import torch
from faster_whisper.vad import VadOptions, get_speech_timestamps

from mmphi.audio.asr import WINDOW_S, NoSpeechError, load_speech, resolve_device, resolve_model
from mmphi.audio.decode import SAMPLE_RATE, AudioSource
from mmphi.common.cores import usable_cores
from mmphi.errors import MmphiError

logger = logging.getLogger(__name__)

HOP = 160  # samples per mel frame (100 frames a second); the encoder halves that to 50
FRAMES_PER_S = 50
MARGIN_S = 0.1  # kept around the VAD's speech span: it cuts close to the first and last phoneme
DEFAULT_STACK = 5


def weights_digest(model_dir: str) -> str:
    """A short digest of a CTranslate2 model's weights (size and first/last MiB: instant, and any
    other model differs in them)."""
    path = Path(model_dir) / "model.bin"
    if not path.is_file():
        return model_dir  # a hub name: the name is all we know before a download
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


class AudioEncoder:
    """A loaded Whisper encoder that turns audio into stacked features; safe to share between threads."""

    def __init__(self, model: str | Path | None = None, stack: int = DEFAULT_STACK, device: str = "auto",
                 compute_type: str = "auto", max_seconds: float = 600.0, vad: bool = True) -> None:
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        self.model_name = resolve_model(model)
        self.device, self.compute_type = resolve_device(device, compute_type)
        self.stack, self.max_seconds, self.vad = stack, max_seconds, vad
        self._lock = threading.Lock()
        try:
            self.model = faster_whisper.WhisperModel(self.model_name, device=self.device,
                                                     compute_type=self.compute_type, cpu_threads=usable_cores())
        except Exception as exc:  # CTranslate2 load errors, hub errors
            raise MmphiError(f"could not load Whisper model {self.model_name!r} for its encoder: {exc}") from exc
        probe = self._encode_window(np.zeros(HOP * 2 * stack, np.float32))
        self.frame_dim = int(probe.shape[1])

    @property
    def feature_dim(self) -> int:
        return self.frame_dim * self.stack

    def identity(self) -> dict:
        """What decides the features: recorded in stores and model folders, compared when they meet."""
        return {"encoder": self.model_name, "family": "whisper-ct2", "weights": weights_digest(self.model_name),
                "stack": self.stack, "frame_dim": self.frame_dim, "feature_dim": self.feature_dim,
                "tokens_per_s": FRAMES_PER_S / self.stack, "vad": self.vad}

    def speech(self, audio: AudioSource) -> np.ndarray:
        """The samples of ``audio`` from its first to its last speech (VAD), or an error if there is none."""
        samples = load_speech(audio, self.max_seconds)
        duration = samples.size / SAMPLE_RATE
        if not self.vad:
            return samples
        found = get_speech_timestamps(samples, VadOptions())
        if not found:
            raise NoSpeechError(f"no speech detected in the audio (voice activity detection found none in "
                                f"{duration:.1f} s)")
        margin = int(MARGIN_S * SAMPLE_RATE)
        return samples[max(0, found[0]["start"] - margin): found[-1]["end"] + margin]

    def encode(self, audio: AudioSource) -> torch.Tensor:
        """(tokens, feature_dim) float32: ``stack`` encoder frames per token, ``tokens_per_s`` a second."""
        samples = self.speech(audio)
        window = int(WINDOW_S * SAMPLE_RATE)
        start = time.perf_counter()
        with self._lock:
            try:
                frames = np.concatenate([self._encode_window(samples[i:i + window])
                                         for i in range(0, samples.size, window)])  # (F, frame_dim)
            except RuntimeError as exc:  # CTranslate2 failures
                raise MmphiError(f"the speech encoder failed: {exc}") from exc
        k = self.stack
        n = frames.shape[0] // k
        stacked = frames[: n * k].reshape(n, k * frames.shape[1])  # (F / k, k * frame_dim)
        logger.debug("encoded %.2f s of speech into %d tokens in %.3f s", samples.size / SAMPLE_RATE, n,
                     time.perf_counter() - start)
        return torch.from_numpy(np.ascontiguousarray(stacked))

    def _encode_window(self, samples: np.ndarray) -> np.ndarray:
        """Up to 30 s of samples -> (frames, frame_dim) encoder states, a whole number of stacks."""
        step = HOP * 2 * self.stack  # samples per stacked token
        mel_frames = min(3000, -(-samples.size // step) * 2 * self.stack)
        padded = np.pad(samples, (0, max(0, mel_frames * HOP - samples.size)))
        mel = np.ascontiguousarray(self.model.feature_extractor(padded)[:, :mel_frames])
        out = self.model.encode(mel)
        if self.device != "cpu":
            out = out.to_device(ctranslate2.Device.cpu)
        return np.asarray(out, dtype=np.float32)[0]  # (mel_frames / 2, frame_dim)
