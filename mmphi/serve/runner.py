"""Run engine generations for an asyncio server: admission control, one at a time, off the event loop.

The model generates one reply at a time (the engine holds a lock), so the server keeps a bounded
waiting line in front of it: at most ``queue_size`` requests wait, one runs, and any more are
refused at once (429) instead of piling up until clients time out. Waiting happens on the event
loop (no thread is parked per waiting request); the running generation gets one worker thread,
whose events are handed back to the loop. Whoever stops listening (a client that disconnected,
an error) sets the ``stop`` event, and the engine stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from mmphi.errors import MmphiError
from mmphi.infer.assistant import Assistant, Event
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import Message

logger = logging.getLogger(__name__)
_END = object()


class QueueFull(Exception):
    """More requests than the waiting line holds."""


@dataclass
class Stats:
    """Counters shown by /health, for operators (and tests) to see what the server did."""

    completed: int = 0
    cancelled: int = 0
    refused_busy: int = 0
    bad_input: int = 0  # refused by the engine (e.g. prompt over the context, no speech in the audio)
    failed: int = 0  # anything else: a bug or a broken model
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"completed": self.completed, "cancelled": self.cancelled, "refused_busy": self.refused_busy,
                    "bad_input": self.bad_input, "failed": self.failed}


class Runner:
    """Admits up to ``queue_size + 1`` requests (one running, the rest waiting) and runs them one by one."""

    def __init__(self, queue_size: int) -> None:
        self.capacity = queue_size + 1
        self.admitted = 0  # touched only on the event loop thread: no lock needed
        self.stats = Stats()
        self._model = asyncio.Semaphore(1)

    @property
    def running(self) -> int:
        return int(self._model.locked())

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.running)

    async def events(self, assistant: Assistant, messages: Sequence[Message], params: GenerationParams,
                     stop: threading.Event) -> AsyncIterator[Event]:
        """The engine's events for one request; raises :class:`QueueFull` at once if the line is full.

        Engine errors (bad input found by the engine) are raised from here. When the consumer stops
        iterating (done, error, or cancelled because its client left), ``stop`` is set.
        """
        if self.admitted >= self.capacity:
            self.stats.add("refused_busy")
            raise QueueFull(f"the server is busy: {self.admitted} requests are already running or waiting "
                            f"(queue_size {self.capacity - 1}); retry shortly")
        self.admitted += 1
        try:
            await self._model.acquire()
            queue: asyncio.Queue = asyncio.Queue()
            self._start_worker(assistant, messages, params, stop, queue)
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # no one is listening any more: the engine stops at its next token
            self.admitted -= 1

    def _start_worker(self, assistant: Assistant, messages: Sequence[Message], params: GenerationParams,
                      stop: threading.Event, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()

        def on_loop(fn, *args) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed (server shutting down): nobody to tell
                loop.call_soon_threadsafe(fn, *args)

        def hand(item: object) -> None:
            on_loop(queue.put_nowait, item)

        def work() -> None:
            stream = assistant.stream(messages, params, stop=stop)
            try:
                for event in stream:
                    if stop.is_set():  # the client left: stop now, even if more tokens are already generated
                        self.stats.add("cancelled")
                        break
                    if event.kind == "done" and event.reply is not None:
                        self.stats.add("cancelled" if event.reply.finish_reason == "cancelled" else "completed")
                    hand(event)
            except BaseException as err:  # handed to the consumer, which turns it into the right response
                self.stats.add("bad_input" if isinstance(err, MmphiError) else "failed")
                hand(err)
            finally:
                stream.close()  # ends the engine's generation thread (a no-op when it has finished)
                hand(_END)
                on_loop(self._model.release)  # the model is free once the engine has returned, not before

        threading.Thread(target=work, name="mmphi-generate", daemon=True).start()
