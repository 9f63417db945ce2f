"""Heads shared by every track: masked attention pooling, the 19-dimension score heads, a projection head.

The network that puts an encoder and the score heads together is `networks/scorer.py: ScoreNetwork`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pianoeval.core.constants import LABEL_MAX, LABEL_MIN, N_DIMS


class AttentionPooling(nn.Module):
    """Masked attention pooling: states `[B, T, H]` and mask `[B, T]` (True = real) → `[B, H]`, or with
    `stats` → `[B, 2H]`: the weighted mean beside the weighted standard deviation of each channel
    (attentive statistics pooling, Okabe et al. 2018). A weighted mean cannot carry how much a channel
    varies over the piece (a velocity spread, a dynamic range); the deviation does (`out_size`).

    A learned scorer gives each step a weight; padded steps get exactly zero weight, and a row with
    no real step pools to the zero vector (rather than NaN).
    """

    def __init__(self, hidden: int, stats: bool = False) -> None:
        super().__init__()
        # A small tanh MLP scorer (Bahdanau-style) rather than a single vector: it lets the weight
        # depend on feature combinations at no real cost.
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.stats = stats
        self.out_size = 2 * hidden if stats else hidden

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooling weights `[B, T]`: sum to 1 over real steps, exactly 0 on padding (all 0 if no real step)."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        mask = mask.to(device=x.device, dtype=torch.bool)
        logits = self.score(x).squeeze(-1)
        # An all-padding row would be softmax over all -inf = NaN; give it finite logits and zero it below.
        has_real = mask.any(dim=1, keepdim=True)
        logits = logits.masked_fill(~mask & has_real, float("-inf"))
        return torch.softmax(logits, dim=1) * mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled `[B, out_size]` from `x [B, T, H]` and `mask [B, T]`."""
        w = self.weights(x, mask)
        # Padded states may be garbage (even NaN from fully padded attention rows): 0 * NaN is NaN, so zero them.
        if mask is not None:
            x = x.masked_fill(~mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1), 0.0)
        mean = torch.einsum("bt,bth->bh", w, x)
        if not self.stats:
            return mean
        return torch.cat([mean, weighted_std(torch.einsum("bt,bth->bh", w, x * x), mean)], dim=-1)


def weighted_std(second_moment: torch.Tensor, mean: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The standard deviation from a weighted second moment and mean; floored at sqrt(eps), where rounding
    can make the variance slightly negative and the square root's gradient would be infinite."""
    return torch.sqrt((second_moment - mean * mean).clamp(min=eps))


def _mlp(hidden: int, n_dims: int, dropout: float) -> nn.Sequential:
    """One head: `z [B, hidden]` → `[B, n_dims]` through a hidden layer, with dropout before each linear."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_dims)
    )


class ScoreHeads(nn.Module):
    """The 19-dimension heads on an embedding `z [B, H]`.

    - Regression: an MLP + sigmoid → `scores [B, n_dims]` in (0, 1).
    - Ranking (`ranking=True`, for a loss that trains it): a separate MLP gives a per-dimension utility
      `u(z) [B, n_dims]`; `rank_logits(z_a, z_b) = u(z_a) - u(z_b)` is the logit that a ranks above b on
      each dimension. A difference of utilities is exactly antisymmetric (IEEE subtraction is) and
      transitive, unlike an MLP on the pair. With dropout active (train mode) the two utilities draw
      separate masks. Without it (the symbolic and fusion modules rank on the regression logits) the
      heads hold no parameter that no loss trains.
    """

    def __init__(self, hidden: int, n_dims: int = N_DIMS, dropout: float = 0.1, ranking: bool = False) -> None:
        super().__init__()
        self.n_dims = n_dims
        self.regression = _mlp(hidden, n_dims, dropout)
        self.ranking = _mlp(hidden, n_dims, dropout) if ranking else None

    def init_bias(self, mean: torch.Tensor) -> None:
        """Set the regression output bias so an all-zero hidden state predicts `mean [n_dims]`."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.n_dims:
            raise ValueError(f"init_bias: expected {self.n_dims} means, got {mean.numel()}")
        # Clamp inside the label range (and away from 0/1) so the logit is finite.
        mean = mean.clamp(min=max(1e-4, LABEL_MIN / 2), max=min(1 - 1e-4, LABEL_MAX - 1e-4))
        last = self.regression[-1]
        with torch.no_grad():
            last.bias.copy_(torch.logit(mean).to(last.bias))

    def forward(self, z: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Scores `[B, n_dims]` in (0, 1) from `z [B, H]` (plus logit offsets `[B, n_dims]` if given)."""
        logits = self.regression(z)
        return torch.sigmoid(logits if offset is None else logits + offset)

    def utility(self, z: torch.Tensor) -> torch.Tensor:
        """Per-dimension ranking utility `[B, n_dims]` (unbounded) from `z [B, H]`."""
        if self.ranking is None:
            raise ValueError("these score heads have no ranking utility: build them with ranking=True")
        return self.ranking(z)

    def rank_logits(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Logits `[B, n_dims]` that a ranks above b per dimension; `rank_logits(a, b) == -rank_logits(b, a)`."""
        return self.utility(z_a) - self.utility(z_b)


class ProjectionHead(nn.Module):
    """SimCLR-style projection for contrastive losses: `z [B, H]` → L2-normalised `[B, out]`."""

    def __init__(self, hidden: int, out: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Unit-norm projections `[B, out]`."""
        return F.normalize(self.net(z), dim=-1)


def without_untrained(
    state: dict[str, torch.Tensor], module: nn.Module, prefixes: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """`state` without the entries `module` no longer has because no loss trained them: a ranking utility
    anywhere (checkpoints written before the heads dropped it: symbolic `heads.ranking.*`, F3's
    `*_head.ranking.*`), and entries under `prefixes` (e.g. a contrastive projection at weight 0)."""
    wanted = set(module.state_dict())

    def untrained(key: str) -> bool:
        return "ranking" in key.split(".") or key.startswith(prefixes)

    return {k: v for k, v in state.items() if k in wanted or not untrained(k)}
