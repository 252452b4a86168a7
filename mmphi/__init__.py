"""mmphi: turn a small language model (Phi-2 family) into a multimodal assistant."""

__version__ = "0.1.0"
