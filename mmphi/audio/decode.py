"""Turn whatever a user hands us (a path, uploaded bytes, an array) into 16 kHz mono float32 samples.

Decoding goes through PyAV (FFmpeg), the same library faster-whisper uses, so every common format
(wav, flac, mp3, ogg/vorbis, ogg/opus, m4a, ...) at any sample rate and channel count works. What
this module adds on top is strictness: an upload that is empty, not audio, cut short or too long
is refused with an :class:`AudioError` that says what is wrong, instead of FFmpeg's terse errors
(or, worse, silently transcribing half a file).
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from mmphi.errors import MmphiError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper (and Silero VAD) expect

AudioSource = str | Path | bytes | bytearray | memoryview | np.ndarray

# How much shorter than its header promises a file may decode before we call it truncated. Codec
# priming/padding accounts for a few tens of milliseconds; a cut-off upload loses far more.
_TRUNCATION_SLACK_S = 0.1
_TRUNCATION_SLACK_FRAC = 0.02
_HEAD_BYTES = 64 * 1024  # enough to hold a WAV header or an MP3's ID3 tag + Xing frame


class AudioError(MmphiError):
    """The audio input cannot be used (corrupt, not audio, empty, truncated, too long); the message says why."""


def load_audio(src: AudioSource, max_seconds: float = 600.0) -> np.ndarray:
    """Decode ``src`` to a 1-D float32 array of 16 kHz mono samples in [-1, 1].

    ``src`` is a path to an audio file, the bytes of one (e.g. an HTTP upload), or an array that
    is taken to be 16 kHz mono float samples already. Stereo is down-mixed and any sample rate is
    resampled. Raises :class:`AudioError` if the input is missing, empty, not audio, corrupt,
    truncated, or longer than ``max_seconds`` (decoding stops there, so a huge upload costs little).
    """
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if isinstance(src, np.ndarray):
        return _check_array(src, max_seconds)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise AudioError("the audio is empty (0 bytes were given)")
        return _decode(io.BytesIO(data), "the uploaded audio", data[:_HEAD_BYTES], len(data), max_seconds)
    if isinstance(src, (str, Path)):
        path = Path(src).expanduser()
        # Checked here rather than left to FFmpeg: it would also accept URLs and devices, and its
        # "No such file or directory" does not say which file.
        if not path.exists():
            raise AudioError(f"audio file not found: {path}")
        if not path.is_file():
            raise AudioError(f"not an audio file (it is a directory or a device): {path}")
        size = path.stat().st_size
        if size == 0:
            raise AudioError(f"the audio file is empty (0 bytes): {path}")
        try:
            file = path.open("rb")  # a file object, not the name: FFmpeg would read "concat:..." as a protocol
        except OSError as exc:
            raise AudioError(f"cannot read audio file {path}: {exc.strerror or exc}") from exc
        with file:
            head = file.read(_HEAD_BYTES)
            file.seek(0)
            return _decode(file, f"audio file {path}", head, size, max_seconds)
    raise TypeError(f"audio must be a path, bytes or a numpy array, not {type(src).__name__}")


def _check_array(x: np.ndarray, max_seconds: float) -> np.ndarray:
    """Validate an in-memory waveform: the caller promised 16 kHz mono floats, so check what we can."""
    if x.ndim != 1:
        raise AudioError(f"an audio array must be 1-D 16 kHz mono samples, got shape {x.shape}; "
                         "down-mix and resample it first, or pass the file instead")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"an audio array must hold float samples in [-1, 1], got dtype {x.dtype}; "
                         "for 16-bit PCM divide by 32768")
    if x.size == 0:
        raise AudioError("the audio is empty (an array of 0 samples was given)")
    _check_length(x.size / SAMPLE_RATE, max_seconds)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AudioError("the audio array contains NaN or infinite samples")
    return x


def _check_length(seconds: float, max_seconds: float, qualifier: str = "") -> None:
    if seconds > max_seconds:
        raise AudioError(f"the audio is {qualifier}{seconds:.1f} s long, over the limit of {max_seconds:g} s "
                         "(max_seconds); send a shorter clip or raise the limit")


def _decode(file: BinaryIO, what: str, head: bytes, size: int, max_seconds: float) -> np.ndarray:
    """Decode the first audio stream of ``file`` with PyAV, refusing anything incomplete or too long."""
    try:
        container = av.open(file, mode="r", metadata_errors="ignore")
    except av.error.EOFError as exc:  # the format was recognised but the data stops inside its header
        raise AudioError(f"{what} is truncated: it ends before its header does") from exc
    except av.error.FFmpegError as exc:
        raise AudioError(f"{what} is not a recognised audio format, or is corrupt "
                         f"(FFmpeg could not open it: {_reason(exc)})") from exc
    with container:
        if not container.streams.audio:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["no streams"]
            raise AudioError(f"{what} contains no audio (FFmpeg read it as '{container.format.name}' "
                             f"with {', '.join(kinds)})")
        stream = container.streams.audio[0]
        # The container's duration may only be an estimate (from the bit rate), so it is used for
        # the length message, not to refuse a file before we have decoded past the limit.
        hinted = container.duration / av.time_base if container.duration else 0.0
        samples = _decode_stream(container, stream, what, max_seconds, hinted)
        fmt = container.format.name
        # read while the container is open: PyAV 18 refuses a closed container's stream attributes
        stream_s = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if samples.size == 0:
        raise AudioError(f"{what} contains no audio samples (the header is there but the audio data is missing)")
    decoded_s = samples.size / SAMPLE_RATE
    declared_s = _declared_seconds(fmt, stream_s, head, size, decoded_s)
    if declared_s is not None and decoded_s < declared_s * (1 - _TRUNCATION_SLACK_FRAC) - _TRUNCATION_SLACK_S:
        raise AudioError(f"{what} is truncated: its header says {declared_s:.2f} s of audio but only "
                         f"{decoded_s:.2f} s is present (was the file or upload cut off?)")
    logger.debug("decoded %s: %s, %.2f s", what, fmt, decoded_s)
    return samples


def _decode_stream(container: av.container.InputContainer, stream: av.AudioStream, what: str,
                   max_seconds: float, hinted_s: float) -> np.ndarray:
    """Decode and resample to 16 kHz mono float32, stopping as soon as ``max_seconds`` is passed."""
    # 16-bit output, as faster-whisper's own decoder does: FFmpeg then normalises its down-mix matrix
    # (stereo becomes (L + R) / 2; with float output it would be 0.707 * (L + R), which can exceed 1).
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []  # int16
    n = 0
    limit = int(max_seconds * SAMPLE_RATE)
    try:
        for frame in container.decode(stream):
            frame.pts = None  # resample by content; demuxers' timestamps may jump (as faster-whisper does)
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                n += chunks[-1].size
            if n > limit:  # stop here: the rest of a huge upload is not worth decoding
                so_far = n / SAMPLE_RATE
                _check_length(max(hinted_s, so_far), max_seconds, "about " if hinted_s > so_far else "at least ")
        for out in resampler.resample(None):  # flush the resampler's buffered tail
            chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise AudioError(f"{what} is corrupt or truncated: decoding failed after {n / SAMPLE_RATE:.2f} s "
                         f"({_reason(exc)})") from exc
    except ValueError as exc:  # e.g. the stream changes sample format mid-way, which the resampler refuses
        raise AudioError(f"{what} could not be decoded: {exc}") from exc
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
    _check_length(samples.size / SAMPLE_RATE, max_seconds)
    return samples


def _declared_seconds(fmt: str, stream_s: float | None, head: bytes, size: int, decoded_s: float) -> float | None:
    """How long the file's own header says the audio is, when the header says so exactly; else None.

    ``stream_s``: the audio stream's own duration as FFmpeg read it from the header (None if unknown).

    FFmpeg re-estimates a WAV's length from the file size, so for WAV we read the RIFF ``data``
    chunk size ourselves. For MP3 only a Xing/Info/VBRI frame states the length (without one,
    FFmpeg guesses from the bit rate, which is wrong for VBR files, so no check is made). FLAC's
    STREAMINFO always states it.
    """
    names = set(fmt.split(","))
    if "wav" in names:
        promised = _wav_data_bytes(head)
        available = size - promised[1] if promised else 0
        if promised and available > 0 and promised[0] > available:
            return decoded_s * promised[0] / available
        return None
    exact = "flac" in names or ("mp3" in names and any(tag in head for tag in (b"Xing", b"Info", b"VBRI")))
    return stream_s if exact else None


def _wav_data_bytes(head: bytes) -> tuple[int, int] | None:
    """(size promised by the RIFF ``data`` chunk header, offset where the data starts), if readable.

    Streaming writers put 0 or 0xFFFFFFFF there when they cannot seek back; those are "unknown".
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, chunk_size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk_id == b"data":
            return (chunk_size, pos + 8) if 0 < chunk_size < 0xFFFFFFFF else None
        pos += 8 + chunk_size + (chunk_size & 1)  # RIFF chunks are padded to even sizes
    return None


def _reason(exc: av.error.FFmpegError) -> str:
    """FFmpeg's own words without the errno and the '<none>' file name PyAV appends for in-memory input."""
    return getattr(exc, "strerror", None) or str(exc)
