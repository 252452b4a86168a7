"""Fixtures for the serving tests: one loaded tiny model, real servers on loopback ports, shapes-world inputs."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mmphi.infer.assistant import Assistant
from mmphi.serve.api import create_app
from mmphi.serve.background import serve_in_thread
from mmphi.serve.config import ServeConfig


@pytest.fixture(scope="session")
def assistant(tiny_mm_dir) -> Assistant:
    """The tiny random multimodal model, loaded once and shared by every server of the session."""
    return Assistant.load(tiny_mm_dir)


def wait_healthy(url: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(url + "/health")
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()
        time.sleep(0.05)


@contextmanager
def _running(app, wait: bool) -> Iterator[str]:
    with serve_in_thread(app) as url:
        if wait:
            wait_healthy(url)
        yield url


@pytest.fixture(scope="session")
def start_server(tiny_mm_dir, assistant) -> Callable:
    """A context manager: ``with start_server(queue_size=2, wrap=...) as url`` runs a real server on loopback.

    ``wrap`` may wrap the shared assistant (e.g. to slow it down) to make timing-dependent behaviour certain.
    """

    def start(wrap: Callable[[Assistant], object] | None = None, loader: Callable | None = None,
              wait: bool = True, **settings):
        cfg = ServeConfig(model=str(tiny_mm_dir), **{"max_new_tokens": 8, **settings})
        app = create_app(cfg, assistant_loader=loader or (lambda _: wrap(assistant) if wrap else assistant))

        return _running(app, wait)

    return start


@pytest.fixture(scope="module")
def server(start_server) -> Iterator[str]:
    """A server with small limits (2 MB bodies, 10 s of audio) so that the limits are cheap to test."""
    with start_server(max_body_mb=2, max_audio_seconds=10, queue_size=16) as url:
        yield url


@pytest.fixture(scope="session")
def scene_path(small_world) -> Path:
    return sorted((small_world / "test" / "images").iterdir())[0]


@pytest.fixture(scope="session")
def image_url(scene_path) -> str:
    return "data:image/png;base64," + base64.b64encode(scene_path.read_bytes()).decode()


@pytest.fixture(scope="session")
def spoken(small_world) -> dict:
    """A spoken shapes-world question: {"wav": Path, "b64": str, "question": str, "image": Path}."""
    item = json.loads((small_world / "test" / "speech.json").read_text())[0]
    wav = small_world / "test" / item["audio"]
    return {"wav": wav, "b64": base64.b64encode(wav.read_bytes()).decode(), "question": item["question"],
            "image": small_world / "test" / "images" / item["image"]}


def heard_enough(heard: str, question: str) -> bool:
    """Whisper tiny heard at least half of the question's words (it may write "color" for "colour")."""
    def words(s: str) -> set[str]:
        return set(s.lower().replace("?", "").replace(".", "").replace("colour", "color").split())

    return len(words(question) & words(heard)) >= len(words(question)) // 2


@pytest.fixture(scope="session")
def heard_ok() -> Callable[[str, str], bool]:
    return heard_enough
