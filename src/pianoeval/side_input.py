"""Wide & deep: an encoder's embedding joined with hand-made MIDI statistics of the same performance.

Why: the learned encoders see raw tokens, graphs or curves and need many examples to discover
global properties (mean loudness, pedal share, tempo) that one line of numpy measures exactly.
PercePiano has about 900 training performances per fold and the demo 30; on such sizes the
statistics carry most of the signal, and the encoder is left to learn what they miss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WithStatistics(nn.Module):
    """`base(batch) -> z [B, H]` concatenated with an MLP of `batch["stats"] [B, S]` → z [B, H + side].

    `score_columns` (a slice of the statistics) is the part measured against the score; in training
    each row's score part is zeroed with probability `score_dropout`, as if no score had been given,
    so that a model trained on scored data still predicts sensibly for a recording without a score.
    """

    def __init__(
        self,
        base: nn.Module,
        n_stats: int,
        side: int = 64,
        dropout: float = 0.1,
        score_columns: slice | None = None,
        score_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.base = base
        self.score_columns = score_columns
        self.score_dropout = float(score_dropout)
        # BatchNorm standardises the statistics with running moments of the training data (their
        # scales differ by orders of magnitude); eval mode then applies the training moments.
        self.norm = nn.BatchNorm1d(n_stats)
        self.side = nn.Sequential(nn.Linear(n_stats, side), nn.GELU(), nn.Dropout(dropout), nn.Linear(side, side))
        self.hidden_size = int(base.hidden_size) + side

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, H + side] from the base encoder's inputs plus `stats [B, S]`."""
        z = self.base(batch)
        stats = batch["stats"].to(z.dtype)
        if self.training and self.score_dropout > 0 and self.score_columns is not None:
            drop = torch.rand(stats.shape[0], 1, device=stats.device) < self.score_dropout
            stats = stats.clone()
            stats[:, self.score_columns] = stats[:, self.score_columns].masked_fill(drop, 0.0)
        if self.training and stats.shape[0] == 1:
            # BatchNorm cannot estimate a variance from one row: use the running moments.
            side = self.side(nn.functional.batch_norm(stats, self.norm.running_mean, self.norm.running_var))
        else:
            side = self.side(self.norm(stats))
        return torch.cat([z, side], dim=-1)
