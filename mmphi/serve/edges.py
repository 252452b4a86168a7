"""The API's edges: the front door (API key, body size) and every error as OpenAI's JSON shape.

Engine errors map to their HTTP status here (bad input 4xx, a full waiting line 503 with
``Retry-After``); anything unexpected is logged and answered 500 without its details.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmphi.audio import AudioError
from mmphi.infer.inputs import ImageError, InputError, PromptTooLong
from mmphi.serve.openai_types import ApiError
from mmphi.serve.runner import Busy

logger = logging.getLogger("mmphi.serve.api")


def _error_response(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer", **err.headers} if err.status == 401 else err.headers
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


class FrontDoor:
    """Checks the API key and the body size before any of the request is parsed.

    The body is read here, counted, and replayed to the app: a request over ``max_body`` bytes gets
    its 413 without the whole upload being held in memory (a Content-Length over the limit is refused
    before reading anything).
    """

    def __init__(self, app: ASGIApp, api_key: str, max_body: int) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key and scope["path"].startswith("/v1/"):
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                err = ApiError(401, "missing or incorrect API key: send 'Authorization: Bearer YOUR_KEY'",
                               code="invalid_api_key")
                await _error_response(err)(scope, receive, send)
                return
        too_big = ApiError(413, f"the request body is over the limit of {self.max_body / 2**20:g} MB",
                           code="request_too_large")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _error_response(too_big if length.isdigit() else ApiError(400, "bad Content-Length"))(
                scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _error_response(too_big)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to disconnect, as usual

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------------- errors
def engine_error(err: BaseException) -> ApiError:
    """Map an error raised while answering to an API error: the user's fault is a 4xx, ours a 500."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, PromptTooLong):  # the engine's "max_new_tokens" is the request's max_tokens
        return ApiError(400, str(err).replace("max_new_tokens", "max_tokens"), param="messages",
                        code="context_length_exceeded")
    if isinstance(err, ImageError):
        return ApiError(400, str(err), param="messages", code="invalid_image")
    if isinstance(err, AudioError):
        return ApiError(400, str(err), param="messages", code="invalid_audio")
    if isinstance(err, InputError):
        return ApiError(400, str(err), param="messages", code="invalid_value")
    if isinstance(err, Busy):
        return ApiError(503, str(err), "server_error", code=err.code,
                        headers={"Retry-After": str(err.retry_after_s)})
    logger.error("error while answering", exc_info=err)
    return ApiError(500, f"internal error: {type(err).__name__}: {err}", "server_error", code="internal_error")


def _param_name(loc: list) -> str | None:
    """("messages", 0, "content") -> "messages[0].content", the form the other errors use."""
    out = ""
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in ("str", "function-after")):
            continue  # pydantic names the union member it tried ("list[tagged-union[...]]"): not a field
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # Of a union's alternatives' errors, the deepest says most ("unknown part type" beats "not a string").
        first: dict[str, Any] = max(err.errors(), key=lambda e: len(e.get("loc", ())), default={})
        param = _param_name([p for p in first.get("loc", ()) if p != "body"])
        message = f"{param}: {first.get('msg', 'invalid request')}" if param else first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message, param = "the request body is not valid JSON", None
        return _error_response(ApiError(400, message, param=param, code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error_response(ApiError(err.status_code, str(err.detail), code=f"http_{err.status_code}"))

    @app.exception_handler(Exception)
    async def crash(_: Request, err: Exception) -> JSONResponse:
        return _error_response(engine_error(err))


# ---------------------------------------------------------------------------- chat completions
