"""Every bad request gets its 4xx in OpenAI's error shape, fast, and the server stays healthy."""

from __future__ import annotations

import base64
import io
import math
import struct
import wave

import httpx
import pytest
from PIL import Image


def _png(size: tuple[int, int], mode: str = "RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav(seconds: float, tone: bool = False) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        n = int(seconds * 16000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8)) if tone else 0) for i in range(n)))
    return base64.b64encode(buf.getvalue()).decode()


def _user(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, *parts]}]


def _image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _audio(data: str) -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


CASES = {
    # name: (request body, status, error code, a word of the message)
    "malformed base64 image": ({"messages": _user(_image("data:image/png;base64,iVBOR!!w0KGgo"))}, 400,
                               "invalid_base64", "base64"),
    "data URL without base64": ({"messages": _user(_image("data:image/png,abc"))}, 400, "invalid_image_url",
                                "data URL"),
    "bytes that are not an image": ({"messages": _user(_image("data:image/png;base64,"
                                                              + base64.b64encode(b"hello" * 50).decode()))},
                                    400, "invalid_image", "not an image"),
    "too many pixels": ({"messages": _user(_image(_png((9000, 9000), "1")))}, 400, "invalid_image", "megapixels"),
    "remote image URL (SSRF)": ({"messages": _user(_image("http://169.254.169.254/latest/meta-data"))}, 400,
                                "remote_images_disabled", "remote"),
    "file URL": ({"messages": _user(_image("file:///etc/passwd"))}, 400, "invalid_image_url", "data: URL"),
    "malformed base64 audio": ({"messages": _user(_audio("UklGR%%%"))}, 400, "invalid_base64", "base64"),
    "bytes that are not audio": ({"messages": _user(_audio(base64.b64encode(b"\x01\x02" * 500).decode()))}, 400,
                                 "invalid_audio", "audio"),
    "audio too long": ({"messages": _user(_audio(_wav(12)))}, 400, "invalid_audio", "limit"),
    "audio with no speech": ({"messages": _user(_audio(_wav(1.5)))}, 400, "invalid_audio", "no speech"),
    "max_tokens 0": ({"messages": _user(), "max_tokens": 0}, 400, "invalid_request", "greater than 0"),
    "max_tokens negative": ({"messages": _user(), "max_tokens": -5}, 400, "invalid_request", "greater than 0"),
    "max_completion_tokens 0": ({"messages": _user(), "max_completion_tokens": 0}, 400, "invalid_request",
                                "greater than 0"),
    "prompt over the context": ({"messages": [{"role": "user", "content": "word " * 300}]}, 400,
                                "context_length_exceeded", "context"),
    "prompt over the context, streamed": ({"messages": [{"role": "user", "content": "word " * 300}],
                                           "stream": True}, 400, "context_length_exceeded", "context"),
    "max_tokens over the context": ({"messages": _user(), "max_tokens": 500}, 400, "context_length_exceeded",
                                    "context"),
    "unknown model": ({"model": "gpt-4o", "messages": _user()}, 404, "model_not_found", "gpt-4o"),
    "no messages": ({"messages": []}, 400, "invalid_request", "messages"),
    "unknown role": ({"messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_request", "messages"),
    "unknown content part": ({"messages": _user({"type": "video_url", "video_url": {"url": "x"}})}, 400,
                             "invalid_request", "messages[0].content"),
    "ends with the assistant": ({"messages": [{"role": "user", "content": "a"},
                                              {"role": "assistant", "content": "b"}]}, 400, "invalid_value",
                                "end with a user"),
    "empty user message": ({"messages": [{"role": "user", "content": "  "}]}, 400, "invalid_value", "empty"),
    "image on an assistant turn": ({"messages": [{"role": "assistant", "content": [_image(_png((4, 4)))]},
                                                 {"role": "user", "content": "a"}]}, 400, "invalid_value",
                                   "only user messages"),
    "temperature below 0": ({"messages": _user(), "temperature": -1}, 400, "invalid_request", "temperature"),
    "n above 1": ({"messages": _user(), "n": 3}, 400, "invalid_request", "n"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request(server, name):
    body, status, code, words = CASES[name]
    r = httpx.post(server + "/v1/chat/completions", json={"model": "mmphi", **body}, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert words.lower() in error["message"].lower(), error["message"]


def test_body_over_the_limit_is_413(server):
    padding = "A" * (3 * 2**20)  # the test server takes 2 MB
    r = httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": padding}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    # The same without a Content-Length (chunked upload): counted while reading.
    chunks = (b'{"messages": [{"role": "user", "content": "' + b"A" * 2**20, b"A" * 2**20, b"A" * 2**20, b'"}]}')
    r = httpx.post(server + "/v1/chat/completions", content=iter(chunks), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_not_json(server):
    r = httpx.post(server + "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.get(server + "/v1/nothing-here")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_still_healthy_after_all_that(server):
    health = httpx.get(server + "/health")
    assert health.status_code == 200 and health.json()["failed"] == 0
    r = httpx.post(server + "/v1/chat/completions", json={"messages": _user(), "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None


def test_remote_images_when_the_server_allows_them(start_server, scene_path):
    """Opt-in fetching (here from a loopback file server): works, refuses redirects, reports HTTP errors."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    files = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(scene_path.parent)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files.server_address[1]}"
    try:
        with start_server(allow_remote_images=True) as url:
            def ask(image_url: str) -> httpx.Response:
                return httpx.post(url + "/v1/chat/completions", json={"messages": _user(_image(image_url)),
                                                                      "max_tokens": 2})

            assert ask(f"{base}/{scene_path.name}").status_code == 200
            for path, code in [("/redirect", "image_fetch_failed"), ("/missing.png", "image_fetch_failed")]:
                r = ask(base + path)
                assert r.status_code == 400 and r.json()["error"]["code"] == code
    finally:
        files.shutdown()
