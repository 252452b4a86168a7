"""Settings of ``mmphi app`` / ``mmphi serve``: safe defaults, validation, the API key from the environment."""

from __future__ import annotations

import pytest

from mmphi.config import ConfigError, build
from mmphi.serve.config import AppConfig, ServeConfig


def test_safe_defaults():
    app = build(AppConfig, {"model": "m"})
    assert app.host == "127.0.0.1" and app.share is False and app.max_upload_mb > 0 and app.queue_size > 0
    api = build(ServeConfig, {"model": "m"})
    assert api.host == "127.0.0.1" and api.port == 8000 and api.allow_remote_images is False
    assert api.max_body_mb > 0 and api.max_pixels > 0 and api.max_audio_seconds > 0


@pytest.mark.parametrize("cls, settings, words", [
    (AppConfig, {}, "model is required"),
    (ServeConfig, {}, "model is required"),
    (AppConfig, {"model": "m", "port": 0}, "port"),
    (ServeConfig, {"model": "m", "max_pixels": 10**9}, "max_pixels"),
    (ServeConfig, {"model": "m", "queue_size": -1}, "queue_size"),
    (ServeConfig, {"model": "m", "max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_settings(cls, settings, words):
    with pytest.raises(ConfigError, match=words):
        build(cls, settings)


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("MMPHI_API_KEY", raising=False)
    assert build(ServeConfig, {"model": "m"}).resolved_api_key() == ""
    monkeypatch.setenv("MMPHI_API_KEY", "from-env")
    assert build(ServeConfig, {"model": "m"}).resolved_api_key() == "from-env"
    assert build(ServeConfig, {"model": "m", "api_key": "flag"}).resolved_api_key() == "flag"
