"""Choosing the Whisper model and device: a fake WhisperModel, so nothing is loaded or downloaded."""

from __future__ import annotations

import pytest

import mmphi.audio.asr as asr
from mmphi.audio import Transcriber
from mmphi.errors import MmphiError


class FakeWhisperModel:
    calls: list[tuple[str, dict]] = []

    def __init__(self, name: str, **kwargs) -> None:
        FakeWhisperModel.calls.append((name, kwargs))


@pytest.fixture
def fake_model(monkeypatch) -> list[tuple[str, dict]]:
    FakeWhisperModel.calls = []
    monkeypatch.setattr(asr.faster_whisper, "WhisperModel", FakeWhisperModel)
    return FakeWhisperModel.calls


def test_default_model_is_the_bundled_tiny_en_on_cpu_int8(fake_model, monkeypatch):
    monkeypatch.setattr(asr.ctranslate2, "get_cuda_device_count", lambda: 0)
    t = Transcriber()
    name, kwargs = fake_model[-1]
    assert name == str(asr.default_model_path()) and (asr.default_model_path() / "model.bin").is_file()
    assert (kwargs["device"], kwargs["compute_type"]) == ("cpu", "int8") == (t.device, t.compute_type)


def test_auto_picks_cuda_float16_when_a_gpu_is_visible(fake_model, monkeypatch):
    monkeypatch.setattr(asr.ctranslate2, "get_cuda_device_count", lambda: 1)
    Transcriber(model="large-v3")
    assert fake_model[-1][0] == "large-v3"
    assert (fake_model[-1][1]["device"], fake_model[-1][1]["compute_type"]) == ("cuda", "float16")
    Transcriber(model="Systran/faster-whisper-small", device="cpu", compute_type="int8_float32")
    assert fake_model[-1][0] == "Systran/faster-whisper-small"
    assert (fake_model[-1][1]["device"], fake_model[-1][1]["compute_type"]) == ("cpu", "int8_float32")


def test_bad_model_settings_fail_clearly_without_touching_the_network(fake_model, tmp_path):
    cases = [("/no/such/whisper-dir", "not found"), ("./models/whisper", "not found"),
             ("tiny-en-typo", "unknown Whisper model"), (str(tmp_path), "no model.bin")]
    for model, reason in cases:
        with pytest.raises(MmphiError, match=reason):
            Transcriber(model=model)
    with pytest.raises(MmphiError, match="device must be"):
        Transcriber(device="tpu")
    assert fake_model == []  # refused before faster-whisper (which would download) was ever called


def test_a_model_that_fails_to_load_is_a_clear_error(monkeypatch):
    def broken(name, **kwargs):
        raise RuntimeError("Cannot find an appropriate cached snapshot folder")

    monkeypatch.setattr(asr.faster_whisper, "WhisperModel", broken)
    with pytest.raises(MmphiError, match=r"could not load Whisper model 'small' .*Hugging Face Hub"):
        Transcriber(model="small", device="cpu")
