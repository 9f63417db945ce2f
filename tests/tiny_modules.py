"""Tiny networks the tests share (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch


class MeanEncoder(torch.nn.Module):
    """A tiny encoder: the mean of `x [B, T, 4]` over T → z [B, 4]."""

    hidden_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(4))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.scale * batch["x"].mean(1)
