"""Process memory for the bench scripts (Linux): resident set sizes, resetting the high-water mark, an
anonymous-memory peak sampler, handing freed heap back, and the logical size of 4-bit parameters."""

from __future__ import annotations

import ctypes
import gc
import threading
from pathlib import Path

import torch


def memory() -> dict[str, float]:
    """Current and peak resident set size (GiB) from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 2**20  # kB -> GiB
    return out


def release_freed_heap() -> bool:
    """``gc.collect()`` then glibc's ``malloc_trim(0)``: hand freed heap pages back to the kernel.

    After a 4-bit load on CPU glibc may keep several GiB of freed (per-tensor, <32 MB) staging buffers in
    its heap, more or less depending on timing; without trimming, the step's peak would measure that
    leftover rather than the memory the step needs. False when the C library has no ``malloc_trim``.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


class AnonPeak:
    """Highest anonymous RSS seen by a 20 ms sampler thread (the kernel keeps no high-water mark for it).

    VmHWM also counts file-backed pages: bf16 weights memory-mapped from the safetensors file, and the
    whole source file while a 4-bit load reads it. Those are real while resident but reclaimable.
    """

    def __enter__(self) -> AnonPeak:
        self.peak, self._stop = memory()["RssAnon"], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, memory()["RssAnon"])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, memory()["RssAnon"])


def logical_numel(p: torch.Tensor) -> int:
    """Number of values a parameter stands for: a packed 4-bit ``Params4bit`` holds two per byte."""
    state = getattr(p, "quant_state", None)
    return int(state.shape.numel()) if state is not None else p.numel()
