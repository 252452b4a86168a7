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


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp2x_gelu":  # LLaVA-1.5's connector
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    if kind == "resblock":
        return ResBlockProjector(in_dim, out_dim)
    raise ValueError(f"unknown projector kind {kind!r}; choose one of {', '.join(KINDS)}")
