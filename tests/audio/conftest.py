"""Spoken test audio (espeak-ng, a required test tool: missing means failing, not skipping) and encoders.

Encoding goes through PyAV's FFmpeg encoders (libmp3lame, libopus, flac, pcm) except Ogg/Vorbis:
FFmpeg's own vorbis encoder is experimental (mono refused, stereo output broken) and PyAV ships
without libvorbis, so Vorbis files are written by libsndfile (soundfile), which bundles libvorbis.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mmphi.world.speech import speak

# (extension, PyAV container, PyAV codec) — "sndfile-vorbis" means: written by soundfile.
CODECS = {
    "wav": ("wav", "wav", "pcm_s16le"),
    "flac": ("flac", "flac", "flac"),
    "mp3": ("mp3", "mp3", "libmp3lame"),
    "opus": ("ogg", "ogg", "libopus"),
    "vorbis": ("ogg", "ogg", "sndfile-vorbis"),
}

Speech = tuple[np.ndarray, int]  # (mono float32 samples, sample rate)


def encode(x: np.ndarray, rate: int, codec: str, channels: int = 1, out_rate: int | None = None,
           options: dict[str, str] | None = None) -> bytes:
    """Encode mono float samples ``x`` at ``rate`` as a ``codec`` file (see CODECS) with ``channels`` at ``out_rate``.

    Stereo carries the speech at full level on the left and at 60% on the right, so a decoder that
    dropped or mixed channels wrongly would show up as a level change. ``options`` go to the muxer.
    """
    _, fmt, codec_name = CODECS[codec]
    out_rate = out_rate or rate
    layout = "stereo" if channels == 2 else "mono"
    planar = np.stack([x, 0.6 * x]) if channels == 2 else x[None, :]
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar, dtype=np.float32), format="fltp", layout=layout)
    frame.sample_rate = rate
    buf = io.BytesIO()
    if codec_name == "sndfile-vorbis":
        resampled = _resample(frame, "flt", layout, out_rate)  # (1, n * channels), interleaved
        sf.write(buf, resampled.reshape(-1, channels), out_rate, format="OGG", subtype="VORBIS")
        return buf.getvalue()
    with av.open(buf, "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec_name, rate=out_rate, layout=layout)
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=out_rate)
        for out in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(out):
                container.mux(packet)
    return buf.getvalue()


def _resample(frame: av.AudioFrame, fmt: str, layout: str, rate: int) -> np.ndarray:
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    return np.concatenate([f.to_ndarray() for f in [*resampler.resample(frame), *resampler.resample(None)]], axis=1)


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    """Linear-interpolation resampling, independent of FFmpeg, for building reference signals."""
    n = int(round(x.size * 16_000 / rate))
    return np.interp(np.arange(n) * rate / 16_000, np.arange(x.size), x).astype(np.float32)


def normalise(text: str) -> list[str]:
    """Words for WER: case, punctuation and US/UK spelling of our sentences are not recognition errors."""
    text = text.lower().replace("colour", "color").replace("centre", "center")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words), by word-level edit distance."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return row[-1], len(ref)




@pytest.fixture(scope="session")
def say(tmp_path_factory) -> Callable[[str], Speech]:
    """``say(text)`` -> espeak-ng's (samples, 22050) for ``text``; cached, as synthesis takes ~0.1 s a sentence."""
    folder: Path = tmp_path_factory.mktemp("espeak")
    cache: dict[str, Speech] = {}

    def _say(text: str) -> Speech:
        if text not in cache:
            out = folder / f"{len(cache)}.wav"
            speak(text, out, voice="en-us", speed=140)
            data, rate = sf.read(out, dtype="float32")
            cache[text] = (data, rate)
        return cache[text]

    return _say


# The helpers as fixtures: test modules cannot import this conftest by name (tests/conftest.py is
# also "conftest"), and a fixture keeps them usable under any pytest import mode.
@pytest.fixture(scope="session")
def encoder() -> Callable[..., bytes]:
    return encode


@pytest.fixture(scope="session")
def resample_16k() -> Callable[[np.ndarray, int], np.ndarray]:
    return to_16k


@pytest.fixture(scope="session")
def errors_and_words() -> Callable[[str, str], tuple[int, int]]:
    return word_errors
