"""Token generation from ``inputs_embeds`` with ``transformers``' ``generate``.

The prompt (with the image features spliced in) is consumed once in the prefill; decoding then
runs from the KV cache, one token at a time. Tokens are streamed through a queue as they come;
a stop event (e.g. a client that went away) ends generation at the next token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


@dataclass
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0  # repetition guard: never repeat an n-gram of this size (0 = off)
    seed: int | None = None
    min_new_tokens: int = 0  # EOS is suppressed until this many tokens (benchmarks: fixed-length work)

    def __post_init__(self) -> None:
        from mmphi.infer.inputs import InputError

        if self.max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise InputError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0 and repetition_penalty > 0")

    def generate_kwargs(self) -> dict:
        kw: dict = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.min_new_tokens:
            kw["min_new_tokens"] = self.min_new_tokens
        if self.no_repeat_ngram:
            kw["no_repeat_ngram_size"] = self.no_repeat_ngram
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


class _QueueStreamer(BaseStreamer):
    """Receives token ids from ``generate`` and hands them to the consuming thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._first = True

    def put(self, value: torch.Tensor) -> None:
        if self._first and value.ndim > 1:  # the prompt (empty when generating from embeddings)
            self._first = False
            return
        self._first = False
        for tok in value.flatten().tolist():
            self.queue.put(tok)

    def end(self) -> None:
        self.queue.put(None)


class _StopOnEvent(StoppingCriteria):
    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        stop = any(e.is_set() for e in self.events)
        done = torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, done)  # transformers annotates the legacy BoolTensor: it means a bool tensor


def stream_tokens(lm, embeds: torch.Tensor, params: GenerationParams, eos_id: int, pad_id: int,
                  stop: threading.Event | None = None) -> Iterator[int]:
    """Yield generated token ids (EOS excluded) for one prompt given as embeddings (1, T, C)."""
    streamer = _QueueStreamer()
    stop = stop or threading.Event()
    done = threading.Event()  # set when the consumer stops reading (finished or abandoned)
    errors: list[BaseException] = []
    attention = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    generator_state = None
    if params.seed is not None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(params.seed)

    def work() -> None:
        try:
            with torch.no_grad():
                lm.generate(inputs_embeds=embeds, attention_mask=attention, eos_token_id=eos_id, pad_token_id=pad_id,
                            streamer=streamer, stopping_criteria=StoppingCriteriaList(
                                [_StopOnEvent(stop, done)]), **params.generate_kwargs())
        except BaseException as err:  # surfaced in the consumer thread
            errors.append(err)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (tok := streamer.queue.get()) is not None:
            if stop.is_set():
                break  # cancelled: tokens already generated are not handed out
            if tok == eos_id:
                continue
            yield tok
    finally:
        done.set()  # the consumer stopped early (or finished): let generate return
        thread.join()
        if generator_state is not None:
            torch.random.set_rng_state(generator_state)
    if errors:
        raise errors[0]


@torch.no_grad()
def greedy_by_recomputing(lm, embeds: torch.Tensor, max_new_tokens: int, eos_id: int | None = None,
                          min_new_tokens: int = 0) -> list[int]:
    """Greedy decoding the slow way, as a reference: the whole sequence (prompt embeddings plus the
    tokens so far) goes through the model again for every new token, with no KV cache.

    This is what an implementation that cannot call ``generate`` with embeddings ends up doing. It
    checks the cached path (same tokens) and is its benchmark baseline. EOS ends the answer (and is
    not returned), except within the first ``min_new_tokens``, where it cannot be picked (as in
    ``generate``).
    """
    table = lm.get_input_embeddings()
    seq = embeds
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = lm(inputs_embeds=seq, use_cache=False).logits[:, -1]
        if eos_id is not None and len(out) < min_new_tokens:
            logits[:, eos_id] = float("-inf")
        tok = int(logits.argmax(-1))
        if tok == eos_id:
            break
        out.append(tok)
        seq = torch.cat([seq, table(torch.tensor([[tok]], device=seq.device)).to(seq.dtype)], dim=1)
    return out
