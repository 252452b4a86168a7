"""Run engine generations for an asyncio server: admission control, a bounded queue, a time limit.

The engine decodes up to ``max_batch`` requests together (continuous batching), so up to
``max_batch`` requests run at once, each in a worker thread that prepares its prompt (audio
transcribed, image encoded) and then streams its tokens from the shared batch. At most
``queue_size`` more wait for a free slot, on the event loop (no thread is parked per waiting
request). Anything beyond is refused at once with :class:`Busy` (the API's 503 with
``Retry-After``) instead of piling up until clients time out. Every request has ``timeout_s``
from its arrival: one still waiting then gets :class:`Busy` too; one generating ends its answer
there. Whoever stops listening (a client that disconnected, an error) sets the ``stop`` event,
and the engine drops that row from the batch at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from mmphi.errors import MmphiError
from mmphi.infer.assistant import Assistant, Event
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import Message

logger = logging.getLogger(__name__)
_END = object()


class Busy(Exception):
    """The server cannot take the request now: the queue is full, or the request waited its whole time limit."""

    def __init__(self, message: str, code: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code, self.retry_after_s = code, retry_after_s


@dataclass
class Stats:
    """Counters shown by /health, for operators (and tests) to see what the server did."""

    completed: int = 0
    cancelled: int = 0
    refused_busy: int = 0  # the queue was full
    timed_out: int = 0  # waited the whole time limit without starting
    cut_by_time_limit: int = 0  # answered, but the answer was cut at the time limit
    bad_input: int = 0  # refused by the engine (e.g. prompt over the context, no speech in the audio)
    failed: int = 0  # anything else: a bug or a broken model
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Runner:
    """Admits up to ``max_batch + queue_size`` requests: ``max_batch`` running, the rest waiting."""

    def __init__(self, max_batch: int, queue_size: int, timeout_s: float) -> None:
        self.max_batch, self.queue_size, self.timeout_s = max_batch, queue_size, timeout_s
        self.admitted = 0  # touched only on the event loop thread: no lock needed
        self.stats = Stats()
        self._slots = asyncio.Semaphore(max_batch)
        self._free = max_batch

    @property
    def running(self) -> int:
        return self.max_batch - self._free

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.running)

    def retry_after_s(self) -> int:
        """A hint for refused clients: about the time for the line ahead of them to clear (1 s at least)."""
        return max(1, round(self.timeout_s / 10))

    async def events(self, assistant: Assistant, messages: Sequence[Message], params: GenerationParams,
                     stop: threading.Event) -> AsyncGenerator[Event, None]:
        """The engine's events for one request; raises :class:`Busy` if the line is full or the wait too long.

        Engine errors (bad input found by the engine) are raised from here. When the consumer stops
        iterating (done, error, or cancelled because its client left), ``stop`` is set.
        """
        if self.admitted >= self.max_batch + self.queue_size:
            self.stats.add("refused_busy")
            raise Busy(f"the server is busy: {self.admitted} requests are already running or waiting "
                       f"(max_batch {self.max_batch}, queue_size {self.queue_size}); retry shortly",
                       "queue_full", self.retry_after_s())
        self.admitted += 1
        deadline = time.monotonic() + self.timeout_s
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
            except asyncio.TimeoutError:  # noqa: UP041 - not the builtin before Python 3.11
                self.stats.add("timed_out")
                raise Busy(f"the server is busy: the request waited its whole time limit ({self.timeout_s:g} s) "
                           "for a free slot; retry shortly", "queue_timeout", self.retry_after_s()) from None
            self._free -= 1
            queue: asyncio.Queue = asyncio.Queue()
            self._start_worker(assistant, messages, params, stop, deadline, queue)
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # no one is listening any more: the engine stops at its next token
            self.admitted -= 1

    def _release(self) -> None:
        self._free += 1
        self._slots.release()

    def _start_worker(self, assistant: Assistant, messages: Sequence[Message], params: GenerationParams,
                      stop: threading.Event, deadline: float, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()

        def on_loop(fn, *args) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed (server shutting down): nobody to tell
                loop.call_soon_threadsafe(fn, *args)

        def hand(item: object) -> None:
            on_loop(queue.put_nowait, item)

        def work() -> None:
            stream = assistant.stream(messages, params, stop=stop, deadline=deadline)
            try:
                for event in stream:
                    if stop.is_set():  # the client left: stop now, even if more tokens are already generated
                        self.stats.add("cancelled")
                        break
                    if event.kind == "done" and event.reply is not None:
                        self.stats.add(_outcome(event.reply))
                    hand(event)
            except BaseException as err:  # handed to the consumer, which turns it into the right response
                self.stats.add("bad_input" if isinstance(err, MmphiError) else "failed")
                hand(err)
            finally:
                stream.close()  # the engine's row leaves the batch (a no-op when it has finished)
                hand(_END)
                on_loop(self._release)  # the slot is free once the engine has returned, not before

        threading.Thread(target=work, name="mmphi-request", daemon=True).start()


def _outcome(reply) -> str:
    """The counter a finished reply adds to."""
    if reply.finish_reason == "time":
        return "cut_by_time_limit" if reply.tokens else "timed_out"
    return "cancelled" if reply.finish_reason == "cancelled" else "completed"
