"""Continuous batching: every concurrent request decodes in one running batch over a shared KV cache.

One scheduler thread owns the model. Each step it (1) decodes one token for every running row in a
single forward pass, (2) prefills the requests that arrived since the last step (together, left
padded) and merges their KV caches into the running batch, and (3) samples each row with its own
settings and hands the token to that request's stream. A row leaves the batch as soon as it
stops (EOS, its token limit, its time limit, or a consumer that went away), and its slot goes to
the next waiting request at the next step: nobody waits for the longest answer of a batch.

Why not ``transformers``' own continuous batching (``generate_batch``): it takes token ids, and
a multimodal prompt is embeddings (image features spliced in). Everything else is transformers:
the model forward with a ``DynamicCache``, and its logits processors for the sampling settings.

Exactness: rows are left padded, padded positions are masked out of attention and each row's
position ids count only its own tokens, so a greedy answer does not depend on what else is in
the batch (``tests/infer/test_batching.py`` checks it token for token against ``generate``).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from typing import cast

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
)

from mmphi.infer.generate import GenerationParams
from mmphi.infer.rows import DONE as _DONE
from mmphi.infer.rows import Generation
from mmphi.infer.rows import Row as _Row

logger = logging.getLogger(__name__)


class BatchedGenerator:
    """Runs up to ``max_batch`` generations at once on ``lm`` (a causal LM taking ``inputs_embeds``).

    ``submit(embeds, params, stop)`` may be called from any number of threads; each call's
    :class:`Generation` yields its own token ids as they come. With ``max_batch=1`` requests run
    one at a time, in arrival order.
    """

    def __init__(self, lm, eos_id: int, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.lm, self.eos_id, self.max_batch = lm, eos_id, max_batch
        self.table = lm.get_input_embeddings()
        # transformers renamed ``past_key_values`` to ``cache`` within 5.x: use whichever this model takes.
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # under peft's wrapper
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self._pending: queue.SimpleQueue[_Row] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Running state (scheduler thread only): rows, their KV cache, attention mask, next positions and tokens
        # (all set whenever rows run; see _running).
        self.rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._pos: torch.Tensor | None = None
        self._next: torch.Tensor | None = None
        self.steps = 0  # decode steps run (for /health and benchmarks)

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def waiting(self) -> int:
        return self._pending.qsize()

    # ------------------------------------------------------------------ the caller's side
    def submit(self, embeds: torch.Tensor, params: GenerationParams, stop: threading.Event | None = None,
               deadline: float | None = None) -> Generation:
        """Queue one prompt given as embeddings (1, T, C) or (T, C); iterate the result for its tokens.

        It ends at EOS, ``params.max_new_tokens``, ``deadline`` (a ``time.monotonic()`` value) or
        once ``stop`` is set; its ``finish`` then says which.
        """
        if embeds.shape[-2] < 1:
            raise ValueError("the prompt is empty")
        row = _Row(embeds.reshape(-1, embeds.shape[-1]).detach(), params, stop, deadline)
        self._ensure_thread()
        self._pending.put(row)
        self._wake.set()
        return Generation(row)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="mmphi-batch", daemon=True)
                self._thread.start()

    # ------------------------------------------------------------------ the scheduler thread
    def _loop(self) -> None:
        while True:
            if not self.rows and self._pending.empty():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                with torch.no_grad():
                    self._step()
            except BaseException as err:  # a broken model: every row gets the error, the loop goes on
                logger.exception("generation step failed")
                for row in self.rows + self._drain():
                    row.out.put(err)
                    row.out.put(_DONE)
                self.rows, self._cache = [], None

    def _drain(self) -> list[_Row]:
        out = []
        while True:
            try:
                out.append(self._pending.get_nowait())
            except queue.Empty:
                return out

    def _admit(self) -> list[_Row]:
        new: list[_Row] = []
        while len(self.rows) + len(new) < self.max_batch:
            try:
                row = self._pending.get_nowait()
            except queue.Empty:
                break
            if row.stopped:
                self._finish(row, "cancelled")
            elif row.deadline is not None and time.monotonic() >= row.deadline:
                self._finish(row, "time")  # timed out while waiting for a slot
            else:
                new.append(row)
        return new

    def _step(self) -> None:
        logits = self._decode() if self.rows else None  # (B, V) for the running rows
        new = self._admit()
        if new:
            new_logits = self._prefill(new)
            logits = new_logits if logits is None else torch.cat([logits, new_logits])
        if logits is None:  # every waiting request had been cancelled or had timed out
            return
        tokens = self._sample(logits)
        self._deliver(tokens)

    def _running(self) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """The running rows' KV cache, attention mask and next positions."""
        assert self._cache is not None and self._mask is not None and self._pos is not None, "set while rows run"
        return self._cache, self._mask, self._pos

    def _decode(self) -> torch.Tensor:
        cache, mask, pos = self._running()
        assert self._next is not None, "set by _deliver after every step that leaves rows running"
        embeds = self.table(self._next[:, None])  # (B, 1, C)
        self._mask = F.pad(mask, (0, 1), value=1)
        out = self._forward(embeds, self._mask, pos[:, None], cache)
        logits, self._cache = out
        self._pos = pos + 1
        self.steps += 1
        return logits

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: DynamicCache) -> tuple[torch.Tensor, DynamicCache]:
        """(last position's logits (B, V) in float32, the updated cache)."""
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                      logits_to_keep=1, **{self._cache_arg: cache})
        return out.logits[:, -1].float(), out[self._cache_arg]

    def _prefill(self, new: list[_Row]) -> torch.Tensor:
        """Run the new prompts together (left padded) and merge their cache into the running batch."""
        width = max(r.embeds.shape[0] for r in new)
        device = new[0].embeds.device
        embeds = torch.stack([F.pad(r.embeds, (0, 0, width - r.embeds.shape[0], 0)) for r in new])  # (n, T, C)
        lengths = torch.tensor([r.embeds.shape[0] for r in new], device=device)
        mask = (torch.arange(width, device=device)[None] >= width - lengths[:, None]).long()  # (n, T)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(embeds, mask, positions, DynamicCache())
        self._merge(new, cache, mask, lengths)
        return logits

    def _merge(self, new: list[_Row], cache: DynamicCache, mask: torch.Tensor, lengths: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self._cache, self._mask, self._pos = new, cache, mask, lengths
            return
        old_cache, old_mask, old_pos = self._running()
        old_t, new_t = old_mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)

        def left(x: torch.Tensor, t: int, dim_from_end: int) -> torch.Tensor:  # pad a time axis on the left
            return F.pad(x, (0, 0) * (dim_from_end - 1) + (width - t, 0))

        layers = [(torch.cat([left(k0, old_t, 2), left(k1, new_t, 2)]), torch.cat([left(v0, old_t, 2),
                                                                                  left(v1, new_t, 2)]))
                  for (k0, v0, *_), (k1, v1, *_) in zip(old_cache, cache, strict=True)]
        self._cache = DynamicCache(layers)
        self._mask = torch.cat([left(old_mask, old_t, 1), left(mask, new_t, 1)])
        self._pos = torch.cat([old_pos, lengths])
        self.rows = self.rows + new

    def _sample(self, logits: torch.Tensor) -> list[int]:
        """One token per row: a batched argmax for plain greedy rows, each row's processors for the rest."""
        tokens = logits.argmax(-1).tolist()
        for i, row in enumerate(self.rows):
            if row.plain_greedy:
                continue
            scores = logits[i:i + 1]
            ids = torch.tensor([row.tokens], dtype=torch.long, device=logits.device).reshape(1, -1)
            ids = cast(torch.LongTensor, ids)  # transformers' processors annotate the legacy LongTensor: a long tensor
            if row.params.min_new_tokens:
                scores = MinNewTokensLengthLogitsProcessor(0, row.params.min_new_tokens, self.eos_id)(ids, scores)
            scores = row.processors(ids, scores)
            if row.params.temperature > 0:
                probs = scores.softmax(-1)
                tokens[i] = int(torch.multinomial(probs, 1, generator=row.generator))
            else:
                tokens[i] = int(scores.argmax(-1))
        return tokens

    def _deliver(self, tokens: list[int]) -> None:
        now = time.monotonic()
        keep: list[int] = []
        for i, (row, tok) in enumerate(zip(self.rows, tokens, strict=True)):
            if row.stopped:
                self._finish(row, "cancelled")
                continue
            if tok == self.eos_id:
                self._finish(row, "stop")
                continue
            row.tokens.append(tok)
            row.out.put(tok)
            if len(row.tokens) >= row.params.max_new_tokens:
                self._finish(row, "length")
            elif row.deadline is not None and now >= row.deadline:
                self._finish(row, "time")
            else:
                keep.append(i)
        next_tokens = torch.tensor(tokens, dtype=torch.long, device=self._running()[1].device)
        if len(keep) == len(self.rows):
            self._next = next_tokens
            return
        self._select(keep)
        self._next = next_tokens[keep]

    def _select(self, keep: list[int]) -> None:
        """Keep only the rows ``keep``; drop the leading columns that are padding in every row left."""
        if not keep:
            self.rows, self._cache, self._mask, self._pos = [], None, None, None
            return
        cache, all_mask, pos = self._running()
        index = torch.tensor(keep, device=all_mask.device)
        mask = all_mask[index]
        start = int((mask.sum(0) > 0).nonzero()[0])  # the first column some remaining row uses
        self._cache = DynamicCache([(k[index, :, start:], v[index, :, start:]) for k, v, *_ in cache])
        self._mask, self._pos = mask[:, start:], pos[index]
        self.rows = [self.rows[i] for i in keep]

    def _finish(self, row: _Row, reason: str) -> None:
        row.finish = reason
        row.out.put(_DONE)
