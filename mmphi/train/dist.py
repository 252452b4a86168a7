"""Process state for multi-process runs (``accelerate launch``), on GPUs or CPUs alike."""

from __future__ import annotations

import torch


def process_state():
    """accelerate's ``PartialState``; on a machine without CUDA it must be told so, or a run started by
    ``accelerate launch --multi_gpu --num_processes N`` (torchrun, gloo) silently runs N single processes."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
