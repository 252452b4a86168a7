"""The slice of OpenAI's Chat Completions wire format that ``mmphi serve`` speaks.

Requests are validated by pydantic models (unknown top-level fields are accepted and ignored, as
OpenAI clients send many optional ones); responses are built as plain dicts in OpenAI's shapes.
mmphi-specific information (what was heard in the audio, engine warnings) rides in an extra
``"mmphi"`` object, which OpenAI clients keep as an extra attribute (``response.mmphi``).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mmphi.infer.assistant import Reply


class ApiError(Exception):
    """An error returned to the client as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",  # noqa: A002 - OpenAI's name
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------- requests
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None  # accepted for compatibility; the vision encoder has one resolution


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    data: str  # base64
    # OpenAI documents wav and mp3; the decoder (FFmpeg) sniffs the real format, so others work too.
    format: str = "wav"


class AudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


Part = Annotated[TextPart | ImagePart | AudioPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. "name", "refusal" on assistant turns

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # other OpenAI parameters are accepted and ignored

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per request
    # Extensions (as vLLM accepts them): sampling knobs the engine has and OpenAI does not.
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    min_tokens: int | None = Field(None, ge=0)  # EOS is not picked before this many tokens (benchmarks)


# ---------------------------------------------------------------------------- responses
def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def _finish(reply: Reply) -> str:
    # "cancelled" only happens once the client has gone, so no client sees it; OpenAI has no such value.
    # "time" (cut at the server's time limit) is reported as "length", as OpenAI does any answer cut short.
    return "length" if reply.finish_reason in ("length", "time") else "stop"


def usage(reply: Reply) -> dict[str, int]:
    """Token counts; prompt tokens include the image's placeholder positions (what the model attended to)."""
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.tokens,
            "total_tokens": reply.prompt_tokens + reply.tokens}


def extras(reply: Reply) -> dict[str, Any]:
    return {"transcripts": reply.transcripts, "description": reply.description, "warnings": reply.warnings,
            "time_to_first_token_s": reply.time_to_first_token_s, "elapsed_s": round(reply.elapsed_s, 4)}


def completion(cid: str, model: str, reply: Reply) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object."""
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text, "refusal": None},
                     "logprobs": None, "finish_reason": _finish(reply)}],
        "usage": usage(reply), "mmphi": extras(reply),
    }


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream (``extra`` adds top-level fields, e.g. ``mmphi``)."""
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}


def final_chunk(cid: str, model: str, reply: Reply) -> dict[str, Any]:
    return chunk(cid, model, {}, _finish(reply), mmphi=extras(reply))


def usage_chunk(cid: str, model: str, reply: Reply) -> dict[str, Any]:
    """The extra last chunk OpenAI sends with ``stream_options.include_usage``: no choices, only usage."""
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage(reply)}


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "mmphi"}
