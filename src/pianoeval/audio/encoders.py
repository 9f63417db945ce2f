"""The audio track's frame encoder, a plain `nn.Module` (no Lightning import: `pianoeval score` loads
the audio probe, whose encoder this is, in a fraction of a second rather than Lightning's 5-12 s)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class EmbeddingSequenceEncoder(nn.Module):
    """Frame embeddings `audio_emb [B, F, D]` (+ `audio_mask [B, F]`) → z [B, hidden].

    A linear projection, a small Transformer over frames (context for timing and dynamics
    shapes), attention pooling and a projection; the shared encoder of the audio models.
    """

    def __init__(self, in_dim: int, hidden: int = 128, layers: int = 2, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        from pianoeval.networks.heads import AttentionPooling

        self.hidden_size = hidden
        self.input_norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True, norm_first=True
        )
        self.context = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pool = AttentionPooling(hidden)
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden] from `audio_emb [B, F, D]` and `audio_mask [B, F]` (True = real frame)."""
        x = batch["audio_emb"]
        mask = batch.get("audio_mask")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.context(self.proj(self.input_norm(x)), src_key_padding_mask=~mask)
        return self.out(self.pool(h, mask))
