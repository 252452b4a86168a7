"""mmphi.quiet keeps library notices a user cannot act on out of the terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest

# What peft does on every adapter load, and what importing bitsandbytes does on an AVX512-BF16 CPU.
SCRIPT = """
import sys
if sys.argv[1] == "quiet":
    from mmphi.quiet import quiet_library_notices
    quiet_library_notices()
import bitsandbytes  # noqa: F401
from transformers import PhiConfig, PhiForCausalLM
model = PhiForCausalLM(PhiConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2))
print(getattr(model, "is_gradient_checkpointing", None))
"""


def _stderr(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("mode", ["quiet", "loud"])
def test_library_notices_are_silenced(mode):
    err = _stderr(mode)
    if mode == "loud":  # the control: without the call the deprecation does reach the terminal
        assert "`is_gradient_checkpointing` is deprecated" in err
    else:
        assert "is_gradient_checkpointing" not in err
        assert "Failed to load CPU gemm_4bit_forward" not in err
