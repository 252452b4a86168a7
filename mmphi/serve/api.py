"""``mmphi serve``: an OpenAI-compatible HTTP API (FastAPI) in front of the engine.

    mmphi serve --model runs/demo/finetune/final
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="mmphi", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What colour is the circle?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}])

Routes: ``POST /v1/chat/completions`` (plain or ``stream: true`` server-sent events),
``GET /v1/models``, ``GET /health`` (503 until the model has loaded in the background). What was
heard in an audio part is returned in the extra ``mmphi.transcripts`` field (streamed: in a chunk
before the first token, and in the last chunk). Every error has OpenAI's JSON shape; bad input is
always a 4xx; a full waiting line (or a request that waited its whole time limit) a fast 503 with
``Retry-After``; a model still loading a 503. Concurrent requests are decoded together in one
batch (``max_batch``); ``/health`` reports how many run and wait.

System (and "developer") messages are prepended to the first user message: the models have no
system role of their own. Images must come inline as base64 data URLs unless the server is started
with ``--allow-remote-images`` (off by default: fetching any URL a client names is an SSRF risk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mmphi.errors import MmphiError
from mmphi.infer.assistant import Assistant, Event
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import InputError
from mmphi.serve import openai_types as oa
from mmphi.serve.config import ServeConfig
from mmphi.serve.edges import FrontDoor, engine_error, install_error_handlers
from mmphi.serve.openai_types import ApiError, ChatRequest
from mmphi.serve.parse import Limits, to_messages
from mmphi.serve.runner import Busy, Runner

logger = logging.getLogger(__name__)
AssistantLoader = Callable[[ServeConfig], Assistant]
DISCONNECT_POLL_S = 0.2


def load_assistant(cfg: ServeConfig) -> Assistant:
    return Assistant.load(cfg.model, asr_model=cfg.asr_model or None, describe_first=cfg.describe_first,
                          asr_prompt=cfg.asr_prompt or None, audio_route=cfg.audio_route, max_batch=cfg.max_batch)


class ModelHolder:
    """Loads the model in a background thread so the server answers /health (503) while it loads."""

    def __init__(self, cfg: ServeConfig, loader: AssistantLoader) -> None:
        self.cfg, self.loader = cfg, loader
        self.assistant: Assistant | None = None
        self.error: str | None = None
        self.started = int(time.time())

    def start(self) -> None:
        threading.Thread(target=self._load, name="mmphi-load-model", daemon=True).start()

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            self.assistant = self.loader(self.cfg)
            logger.info("model %s loaded in %.1f s", self.cfg.model, time.perf_counter() - start)
        except Exception as err:  # shown by /health and every request, instead of a dead server
            logger.exception("could not load the model %s", self.cfg.model)
            self.error = f"{type(err).__name__}: {err}" if not isinstance(err, MmphiError) else str(err)

    def get(self) -> Assistant:
        if self.assistant is not None:
            return self.assistant
        if self.error is not None:
            raise ApiError(503, f"the model could not be loaded: {self.error}", "server_error", code="model_not_loaded")
        raise ApiError(503, "the model is still loading; retry in a few seconds", "server_error", code="model_loading")


# ---------------------------------------------------------------------------- front door (ASGI middleware)
@contextlib.asynccontextmanager
async def stop_on_disconnect(request: Request, stop: threading.Event) -> AsyncIterator[None]:
    """Set ``stop`` if the client goes away while the block runs (before a streamed response has started)."""

    async def watch() -> None:
        while not stop.is_set():
            if await request.is_disconnected():
                stop.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


def _params(body: ChatRequest, cfg: ServeConfig) -> GenerationParams:
    """Engine parameters: the request's values over the server's defaults."""
    try:
        return GenerationParams(
            max_new_tokens=body.max_completion_tokens or body.max_tokens or cfg.max_new_tokens,
            temperature=cfg.temperature if body.temperature is None else body.temperature,
            top_p=cfg.top_p if body.top_p is None else body.top_p,
            top_k=cfg.top_k if body.top_k is None else body.top_k,
            repetition_penalty=cfg.repetition_penalty if body.repetition_penalty is None else body.repetition_penalty,
            no_repeat_ngram=cfg.no_repeat_ngram, seed=body.seed, min_new_tokens=body.min_tokens or 0)
    except InputError as err:
        raise ApiError(400, str(err), code="invalid_value") from err


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _stream(events: AsyncGenerator[Event, None], head: list[Event], body: ChatRequest,
                  name: str) -> StreamingResponse:
    """Server-sent ``chat.completion.chunk``s: role, heard transcripts, token deltas, finish, [DONE]."""
    cid = oa.completion_id()
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def chunks() -> AsyncIterator[str]:
        try:
            yield _sse(oa.chunk(cid, name, {"role": "assistant", "content": ""}))
            async for event in _chain(head, events):
                if event.kind in ("transcript", "description"):
                    yield _sse(oa.chunk(cid, name, {}, mmphi={event.kind: event.text}))
                elif event.kind == "token":
                    yield _sse(oa.chunk(cid, name, {"content": event.text}))
                elif event.kind == "done" and event.reply is not None:
                    yield _sse(oa.final_chunk(cid, name, event.reply))
                    if include_usage:
                        yield _sse(oa.usage_chunk(cid, name, event.reply))
            yield "data: [DONE]\n\n"
        except Exception as err:  # headers are sent: the error goes in the stream, as OpenAI does
            yield _sse(engine_error(err).body())
        finally:
            await events.aclose()  # sets the stop event if the client left mid-stream

    return StreamingResponse(chunks(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chain(head: list[Event], rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    for event in head:
        yield event
    async for event in rest:
        yield event


def _add_routes(app: FastAPI, cfg: ServeConfig, holder: ModelHolder, runner: Runner) -> None:
    limits = Limits(cfg.max_pixels, cfg.max_audio_seconds, cfg.allow_remote_images)
    name = cfg.model_name

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "ok" if holder.assistant is not None else ("error" if holder.error else "loading")
        engine = getattr(holder.assistant, "generator", None)
        info = {"status": status, "model": name, "running": runner.running, "waiting": runner.waiting,
                "max_batch": runner.max_batch, "queue_size": runner.queue_size, "timeout_s": runner.timeout_s,
                "batch_rows": engine.running if engine is not None else 0, **runner.stats.snapshot()}
        if holder.error:
            info["error"] = holder.error
        return JSONResponse(info, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [oa.model_card(name, holder.started)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        if model_id != name:
            raise ApiError(404, f"the model {model_id!r} does not exist; this server has {name!r}",
                           param="model", code="model_not_found")
        return oa.model_card(name, holder.started)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request, body: ChatRequest) -> JSONResponse | StreamingResponse:
        if body.model is not None and body.model != name:
            raise ApiError(404, f"the model {body.model!r} does not exist; this server has {name!r}",
                           param="model", code="model_not_found")
        assistant = holder.get()
        params = _params(body, cfg)
        messages = await run_in_threadpool(to_messages, body, limits)  # decoding images/audio is CPU work
        stop = threading.Event()
        events = runner.events(assistant, messages, params, stop)
        head: list[Event] = []
        try:
            async with stop_on_disconnect(request, stop):
                # Engine errors (prompt over the context, no speech...) come before the first token:
                # wait for it so that they are a proper 4xx, not an error inside a 200 stream.
                async for event in events:
                    head.append(event)
                    if body.stream and event.kind == "token":
                        break
        except Exception as err:
            await events.aclose()
            raise engine_error(err) from err
        reply = head[-1].reply if head else None
        if reply is not None and reply.finish_reason == "time" and not reply.tokens:  # streamed or not: no answer
            raise engine_error(Busy(f"the server is busy: the request reached its time limit ({runner.timeout_s:g} s) "
                                    "before its first token; retry shortly", "queue_timeout", runner.retry_after_s()))
        if body.stream:
            return await _stream(events, head, body, name)
        if reply is None:  # stopped without a reply: the client has gone (nginx's 499), nobody reads this
            return JSONResponse(ApiError(499, "client closed the request", code="client_closed").body(), 499)
        return JSONResponse(oa.completion(oa.completion_id(), name, reply))


def create_app(cfg: ServeConfig, assistant_loader: AssistantLoader | None = None) -> FastAPI:
    """The API app; the model is loaded by ``assistant_loader(cfg)`` in a background thread at startup."""
    holder = ModelHolder(cfg, assistant_loader or load_assistant)
    runner = Runner(cfg.max_batch, cfg.queue_size, cfg.timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder.start()
        yield

    app = FastAPI(title="mmphi", summary="OpenAI-compatible multimodal chat API", lifespan=lifespan)
    app.state.holder, app.state.runner = holder, runner
    app.add_middleware(FrontDoor, api_key=cfg.resolved_api_key(), max_body=int(cfg.max_body_mb * 2**20))
    install_error_handlers(app)
    _add_routes(app, cfg, holder, runner)
    return app


def run_serve(cfg: ServeConfig) -> None:
    """Serve until interrupted (``mmphi serve``)."""
    import uvicorn

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.resolved_api_key():
        logger.warning("serving on %s without an API key: anyone who can reach this port can use the model",
                       cfg.host)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=5)
