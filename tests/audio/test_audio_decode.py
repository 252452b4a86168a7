"""load_audio: every common format/rate/layout decodes to the right 16 kHz mono signal; bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from mmphi.audio import SAMPLE_RATE, AudioError, load_audio
from mmphi.errors import MmphiError

SENTENCE = "The red circle is to the left of the blue square."

# Opus only encodes at 8/12/16/24/48 kHz, so it is not asked for 22.05 or 44.1 kHz.
CASES = [(codec, channels, rate)
         for codec in ("wav", "flac", "mp3", "vorbis", "opus")
         for channels in (1, 2)
         for rate in (8000, 22050, 44100, 48000)
         if not (codec == "opus" and rate in (22050, 44100))]


def envelope(x: np.ndarray, hop: int = 320) -> np.ndarray:
    """RMS per 20 ms: what must survive any codec and resampler if the speech is intact."""
    n = x.size // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> float:
    """Highest correlation of two envelopes over small lags (codecs may shift the signal by a few ms)."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(x.size, y.size)
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


@pytest.fixture(scope="module")
def speech(say, resample_16k) -> tuple[np.ndarray, int, np.ndarray]:
    """espeak-ng audio at its native rate, and a 16 kHz reference made without FFmpeg."""
    x, rate = say(SENTENCE)
    assert rate == 22050
    return x, rate, resample_16k(x, rate)


@pytest.mark.parametrize(("codec", "channels", "rate"), CASES, ids=[f"{c}-{n}ch-{r}" for c, n, r in CASES])
def test_every_format_rate_and_layout_decodes_to_the_same_speech(speech, encoder, tmp_path, codec, channels, rate):
    x, native_rate, reference = speech
    data = encoder(x, native_rate, codec, channels=channels, out_rate=rate)
    path = tmp_path / f"clip.{'ogg' if codec in ('opus', 'vorbis') else codec}"
    path.write_bytes(data)
    for got in (load_audio(path), load_audio(data)):  # from a file and from uploaded bytes
        assert got.dtype == np.float32 and got.ndim == 1
        assert abs(got.size - reference.size) / SAMPLE_RATE < 0.06, f"length {got.size} vs {reference.size}"
        corr = best_correlation(envelope(got), envelope(reference))
        assert corr > 0.95, f"decoded audio does not follow the speech (envelope correlation {corr:.3f})"
        # Left at full level, right at 60%: the down-mix is their average (0.8), not a louder sum.
        level = np.sqrt((got ** 2).mean()) / np.sqrt((reference ** 2).mean())
        assert level == pytest.approx(0.8 if channels == 2 else 1.0, abs=0.07), f"level ratio {level:.2f}"


def test_array_input_is_taken_as_16k_mono(speech):
    x = speech[2].astype(np.float64)
    got = load_audio(x)
    assert got.dtype == np.float32 and np.allclose(got, x, atol=1e-6)


@pytest.mark.parametrize(("array", "reason"), [
    (np.zeros((2, 16000), np.float32), "1-D"),
    (np.zeros(16000, np.int16), "float samples"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.0, np.nan, 0.1], np.float32), "NaN"),
])
def test_bad_arrays_are_refused(array, reason):
    with pytest.raises(AudioError, match=reason):
        load_audio(array)


def test_wav_text_file_random_and_empty_inputs_are_refused_with_a_reason(tmp_path):
    text = tmp_path / "question.wav"
    text.write_text("What colour is the circle?\nThis is a text file, not a recording.\n" * 20)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    random = np.random.default_rng(0).bytes(20_000)
    cases = [
        (b"", "empty"),
        (empty, "empty"),
        (random, "not a recognised audio format"),
        (text, "not a recognised audio format"),
        (tmp_path / "missing.wav", "not found"),
        (tmp_path, "directory"),
        (b"\x89PNG\r\n\x1a\n" + random, "contains no audio"),
    ]
    for src, reason in cases:
        with pytest.raises(AudioError, match=reason) as info:
            load_audio(src)
        assert isinstance(info.value, MmphiError)  # the CLI and server show MmphiError messages to the user
        if isinstance(src, type(tmp_path)) and reason != "empty":
            assert src.name in str(info.value)  # a file error names the file


@pytest.mark.parametrize("codec", ["wav", "mp3", "flac"])
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_files_are_refused(speech, encoder, tmp_path, codec, keep):
    data = encoder(speech[0], speech[1], codec)
    cut = data[: int(len(data) * keep)]
    with pytest.raises(AudioError, match="truncated"):
        load_audio(cut)
    path = tmp_path / f"cut.{codec}"
    path.write_bytes(cut)
    with pytest.raises(AudioError, match="truncated") as info:
        load_audio(path)
    assert f"cut.{codec}" in str(info.value)


def test_mp3_without_a_length_header_is_not_mistaken_for_truncated(speech, encoder):
    """Without a Xing/Info frame FFmpeg only estimates an MP3's length, so no truncation check applies."""
    plain = encoder(speech[0], speech[1], "mp3", options={"write_xing": "0"})
    assert b"Xing" not in plain and b"Info" not in plain
    # Nothing is lost; without LAME's gapless info the encoder delay and padding (~70 ms) stay in.
    assert 0 <= load_audio(plain).size - speech[2].size < 0.15 * SAMPLE_RATE


def test_header_without_samples_is_refused(speech, encoder):
    wav = encoder(speech[0], speech[1], "wav")
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(wav[: wav.index(b"data") + 8])  # everything up to where the samples would start


@pytest.mark.parametrize("codec", ["wav", "mp3"])
def test_audio_over_max_seconds_is_refused_naming_length_and_limit(speech, encoder, codec):
    x, rate, _ = speech
    long = np.concatenate([x] * 5)
    seconds = long.size / rate
    assert 12 < seconds < 20
    data = encoder(long, rate, codec)
    assert load_audio(data, max_seconds=20).size / SAMPLE_RATE == pytest.approx(seconds, abs=0.06)
    with pytest.raises(AudioError) as info:
        load_audio(data, max_seconds=10)
    message = str(info.value)
    assert f"{seconds:.1f} s" in message and "limit of 10 s" in message, message
    with pytest.raises(AudioError, match=rf"is {seconds:.1f} s long, over the limit of 10 s"):
        load_audio(np.tile(speech[2], 5), max_seconds=10)  # arrays too
