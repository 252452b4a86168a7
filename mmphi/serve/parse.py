"""Turn an OpenAI-format chat request into the engine's ``Message``s, refusing bad input with a 4xx.

Everything a client can get wrong is checked here, before the request waits for the model, so a
bad upload costs a few milliseconds and gets a message that names the offending field:
base64 that does not decode, bytes that are not an image, too many pixels, audio that is not
audio or is too long, remote image URLs (refused unless the server opted in: fetching whatever URL
a client names lets it probe the server's own network, i.e. SSRF).

System (and "developer") messages: the tiny models have no system role of their own beyond the
fixed line they were trained with, so a request's system text is prepended to the first user
message, the way chat templates without a system role (e.g. Gemma's) do it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmphi.audio import AudioError, load_audio
from mmphi.infer.inputs import MAX_IMAGE_BYTES, ImageError, Message, load_image
from mmphi.serve.openai_types import ApiError, AudioPart, ChatMessage, ChatRequest, ImagePart, TextPart

_WHITESPACE = re.compile(rb"\s+")
REMOTE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Limits:
    max_pixels: int
    max_audio_seconds: float
    allow_remote_images: bool
    max_image_bytes: int = MAX_IMAGE_BYTES


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def decode_base64(data: str | bytes, param: str) -> bytes:
    """Strict base64 (line breaks tolerated): a typo is an error, not silently dropped characters."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    try:
        out = base64.b64decode(_WHITESPACE.sub(b"", raw), validate=True)
    except (binascii.Error, ValueError) as err:
        raise _bad(f"{param} is not valid base64 ({err})", param, "invalid_base64") from err
    if not out:
        raise _bad(f"{param} is empty", param)
    return out


def _fetch(url: str, limits: Limits, param: str) -> bytes:
    """GET a remote image with a timeout and a size cap, never following redirects (they could point inward)."""
    import httpx

    try:
        with httpx.Client(timeout=REMOTE_TIMEOUT_S, follow_redirects=False) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise _bad(f"fetching {param} returned HTTP {response.status_code}", param, "image_fetch_failed")
            data = bytearray()
            for piece in response.iter_bytes():
                data += piece
                if len(data) > limits.max_image_bytes:
                    raise _bad(f"the image at {param} is over {limits.max_image_bytes // 2**20} MB", param)
            return bytes(data)
    except httpx.HTTPError as err:
        raise _bad(f"could not fetch {param}: {err}", param, "image_fetch_failed") from err


def read_image(url: str, limits: Limits, param: str) -> Image.Image:
    """A validated RGB image from a ``data:`` URL (or, if allowed, an http(s) URL)."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise _bad(f"{param} must be a base64 data URL like 'data:image/png;base64,...'", param,
                       "invalid_image_url")
        data = decode_base64(payload, param)
    elif url.startswith(("http://", "https://")):
        if not limits.allow_remote_images:
            raise _bad(f"{param}: remote image URLs are disabled on this server (the server would fetch any "
                       "address it is given); send the image inline as a base64 data URL", param,
                       "remote_images_disabled")
        data = _fetch(url, limits, param)
    else:
        raise _bad(f"{param} must be a data: URL (or http(s) if the server allows remote images)", param,
                   "invalid_image_url")
    try:
        # The pixel limit is read from the header before anything is decoded.
        return load_image(data, max_pixels=limits.max_pixels)
    except ImageError as err:
        raise _bad(f"{param}: {err}", param, "invalid_image") from err


def read_audio(part: AudioPart, limits: Limits, param: str) -> np.ndarray:
    """16 kHz mono samples, decoded once here so that bad or over-long audio is refused before queueing."""
    data = decode_base64(part.input_audio.data, param + ".data")
    try:
        return load_audio(data, max_seconds=limits.max_audio_seconds)
    except AudioError as err:
        raise _bad(f"{param}: {err}", param, "invalid_audio") from err


def _one_message(msg: ChatMessage, i: int, limits: Limits) -> tuple[str, Image.Image | None, np.ndarray | None]:
    """(text, image, audio) of one message, with at most one image and one audio clip."""
    if msg.content is None or isinstance(msg.content, str):
        return msg.content or "", None, None
    texts: list[str] = []
    image = audio = None
    for j, part in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        if msg.role != "user":
            raise _bad(f"{param}: only user messages may carry images or audio", param)
        if isinstance(part, ImagePart):
            if image is not None:
                raise _bad(f"{param}: one image per message (the model has one image slot)", param)
            image = read_image(part.image_url.url, limits, param + ".image_url.url")
        elif audio is not None:
            raise _bad(f"{param}: one audio clip per message", param)
        else:
            audio = read_audio(part, limits, param + ".input_audio")
    return "\n".join(t for t in texts if t), image, audio


def to_messages(request: ChatRequest, limits: Limits) -> list[Message]:
    """The engine's conversation for ``request`` (system text prepended to the first user message)."""
    system: list[str] = []
    out: list[Message] = []
    for i, msg in enumerate(request.messages):
        text, image, audio = _one_message(msg, i, limits)
        if msg.role in ("system", "developer"):
            if text.strip():
                system.append(text.strip())
            continue
        # The engine accepts 16 kHz float arrays as audio (Transcriber.transcribe does), saving a second decode.
        out.append(Message(msg.role, text, image=image, audio=audio))  # type: ignore[arg-type]
    if system:
        first = next((m for m in out if m.role == "user"), None)
        if first is None:
            raise _bad("the conversation has no user message", "messages")
        first.text = "\n".join([*system, first.text]).strip()
    return out
