"""Projectors: vision features (B, N, D_vis) -> LM embeddings (B, N, D_lm)."""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("linear", "mlp2x_gelu", "resblock")


class ResBlockProjector(nn.Module):
    """LLaVA-1.5's "simple residual block": a linear map, then x + MLP(LayerNorm(x))."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.mlp = nn.Sequential(nn.Linear(out_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x + self.mlp(self.norm(x))


class WithPositions(nn.Module):
    """A projector plus a learned embedding per image-token position (zero at start).

    CLIP's patch features carry their grid position only weakly after a few layers of global
    attention (a linear probe recovers the cell of a tiny-CLIP token 71% of the time); an
    explicit per-position vector tells the LM which patch it is looking at ("on the left").
    """

    def __init__(self, base: nn.Module, num_tokens: int, out_dim: int):
        super().__init__()
        self.base = base
        self.positions = nn.Parameter(torch.zeros(num_tokens, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.positions  # (B, N, C) + (N, C)


def build_projector(kind: str, in_dim: int, out_dim: int, positions: int = 0) -> nn.Module:
    """``positions`` > 0 adds a learned embedding for each of that many image-token positions."""
    if kind == "linear":
        proj: nn.Module = nn.Linear(in_dim, out_dim)
    elif kind == "mlp2x_gelu":  # LLaVA-1.5's connector
        proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    elif kind == "resblock":
        proj = ResBlockProjector(in_dim, out_dim)
    else:
        raise ValueError(f"unknown projector kind {kind!r}; choose one of {', '.join(KINDS)}")
    return WithPositions(proj, positions, out_dim) if positions else proj
