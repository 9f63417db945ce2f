"""The one scoring network: an encoder and the 19-dimension score heads, `batch -> scores [B, 19]`.

Every trained model is one: the LightningModules (`training/module.py`) hold it as `net` and train
it; scoring (`evaluation/inference.py`) rebuilds the same class from a fold folder and loads its
weights, without Lightning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pianoeval.core.constants import N_DIMS
from pianoeval.networks.heads import ScoreHeads


def encode(encoder: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(z [B, H], the wide part's logit offsets [B, 19] or None) of `batch`: an encoder with a wide
    part (side_input.WithStatistics, the residual fusions) says both through `encode`; any other
    encoder's forward is its embedding."""
    explicit = getattr(encoder, "encode", None)
    return explicit(batch) if explicit is not None else (encoder(batch), None)


class ScoreNetwork(nn.Module):
    """Encoder + score heads: batch → scores [B, n_dims] in (0, 1).

    `ranking=True` adds the heads' ranking utility (the audio models' ranking loss trains it); without
    it the network holds no parameter that no loss trains.
    """

    def __init__(self, encoder: nn.Module, n_dims: int = N_DIMS, dropout: float = 0.1, ranking: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = ScoreHeads(encoder.hidden_size, n_dims, dropout=dropout, ranking=ranking)

    @property
    def hidden_size(self) -> int:
        """Width H of the embedding z."""
        return int(self.encoder.hidden_size)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scores [B, n_dims] in (0, 1)."""
        return self.embed_and_score(batch)[1]

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """The encoder's embedding z [B, H]."""
        return encode(self.encoder, batch)[0]

    def embed_and_score(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [B, H], scores [B, n_dims]) in one pass: the encoder's own scorer when it has one (the
        gated fusion mixes the tracks' scores itself), else the heads on z and the wide offsets."""
        z, offsets = encode(self.encoder, batch)
        return z, self.scores_from(z, offsets, batch)

    def scores_from(self, z: torch.Tensor, offsets: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor:
        """Scores [B, n_dims] from an embedding z [B, H] and the wide offsets [B, n_dims] (or None)."""
        custom = getattr(self.encoder, "predict_scores", None)
        return custom(batch) if custom is not None else self.heads(z, offsets)
