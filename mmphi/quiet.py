"""Silence library notices that say nothing a user of mmphi can act on (light module: no torch import).

- bitsandbytes, on a CPU with AVX512-BF16, tries at import to fetch a fused 4-bit kernel from the
  Hugging Face Hub through the optional ``kernels`` package and logs "Failed to load CPU
  gemm_4bit_forward" when it cannot. mmphi runs offline and keeps 4-bit layers on bitsandbytes'
  regular CPU path anyway (``mmphi.lm.loading``), so the message only alarms.
- peft asks a transformers model for ``is_gradient_checkpointing``, which transformers 5 deprecates
  with a FutureWarning on every adapter load.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


def quiet_library_notices() -> None:
    """Idempotent; call before bitsandbytes is first imported (the CLI and app.py do, first thing)."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings off inside the block: loading a vision tower from a two-tower checkpoint
    lists every text weight as 'unexpected', and CLIP's image processor announces its PIL fallback
    when torchvision is not installed (mmphi does not need torchvision)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
