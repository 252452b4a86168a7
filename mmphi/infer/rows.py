"""One request in the batch scheduler (:mod:`mmphi.infer.batching`): its row (prompt, settings, sampling
processors, tokens so far) and the :class:`Generation` its caller iterates."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from mmphi.infer.generate import GenerationParams

DONE = object()  # the end of a row's token stream


@dataclass
class Row:
    """One request: its prompt, settings, what it generated so far and where its tokens go."""

    embeds: torch.Tensor  # (T, C)
    params: GenerationParams
    stop: threading.Event | None  # the caller's: set when whoever asked stops listening
    deadline: float | None  # time.monotonic() after which the answer ends
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    tokens: list[int] = field(default_factory=list)
    processors: LogitsProcessorList = field(default_factory=LogitsProcessorList)
    generator: torch.Generator | None = None
    finish: str = ""
    closed: threading.Event = field(default_factory=threading.Event)  # the consumer left the loop

    @property
    def stopped(self) -> bool:
        return self.closed.is_set() or (self.stop is not None and self.stop.is_set())

    def __post_init__(self) -> None:
        p = self.params
        if p.repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
        if p.no_repeat_ngram:
            self.processors.append(NoRepeatNGramLogitsProcessor(p.no_repeat_ngram))
        if p.temperature > 0:
            self.processors.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k:
                self.processors.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                self.processors.append(TopPLogitsWarper(p.top_p))
        if p.seed is not None:
            self.generator = torch.Generator(device=self.embeds.device).manual_seed(p.seed)

    @property
    def plain_greedy(self) -> bool:
        return not self.processors and not self.params.min_new_tokens


class Generation:
    """The token ids (EOS excluded) of one submitted prompt, as they are generated.

    ``finish`` is set once they have all come: "stop" (EOS), "length" (``max_new_tokens``), "time"
    (the deadline passed) or "cancelled" (the caller's stop event was set, or the consumer left).
    Leaving the loop early, or :meth:`close`, frees the batch row at the next step.
    """

    def __init__(self, row: Row) -> None:
        self._row = row

    @property
    def finish(self) -> str:
        return self._row.finish

    def __iter__(self) -> Iterator[int]:
        try:
            while (item := self._row.out.get()) is not DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._row.closed.set()
