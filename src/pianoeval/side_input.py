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

from pianoeval.constants import N_DIMS

# Ridge strengths tried for the wide part (the ridge baseline's grid).
RIDGE_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)


class WithStatistics(nn.Module):
    """`base(batch) -> z [B, H]` concatenated with an MLP of `batch["stats"] [B, S]` → z [B, H + side].

    Wide part: a linear map of the standardised statistics to per-dimension logit offsets
    (`wide_logits`), which the score heads add to their own logits. `init_wide` fits it in closed form
    (ridge on the training labels' logits) and freezes the standardisation at the training moments,
    so training starts from the ridge baseline and the deep part learns what it misses.

    `score_columns` (a slice of the statistics, its last column the "score aligned" flag) is the
    part measured against the score. Rows whose flag is 0 (no score) get that part at the training
    mean (0 after standardisation); in training each row's score part is dropped the same way with
    probability `score_dropout`, so that a model trained on scored data still predicts sensibly for a
    recording without a score.
    """

    def __init__(
        self,
        base: nn.Module,
        n_stats: int,
        side: int = 64,
        dropout: float = 0.1,
        score_columns: slice | None = None,
        score_dropout: float = 0.0,
        n_dims: int = N_DIMS,
    ) -> None:
        super().__init__()
        self.base = base
        self.score_columns = score_columns
        self.score_dropout = float(score_dropout)
        # BatchNorm standardises the statistics with running moments of the training data (their
        # scales differ by orders of magnitude); eval mode then applies the training moments.
        self.norm = nn.BatchNorm1d(n_stats)
        self.side = nn.Sequential(nn.Linear(n_stats, side), nn.GELU(), nn.Dropout(dropout), nn.Linear(side, side))
        self.wide = nn.Linear(n_stats, n_dims, bias=False)
        nn.init.zeros_(self.wide.weight)
        # 1 once init_wide has fixed the moments: BatchNorm then always uses them (no batch noise).
        self.register_buffer("moments_fixed", torch.zeros((), dtype=torch.bool))
        self.hidden_size = int(base.hidden_size) + side

    def standardise(self, stats: torch.Tensor) -> torch.Tensor:
        """Standardised statistics [B, S], the score part of unscored (or dropped) rows at 0."""
        if self.moments_fixed or not self.training or stats.shape[0] == 1:
            # Fixed moments; or BatchNorm cannot estimate a variance from one row.
            x = nn.functional.batch_norm(stats, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
            x = x * self.norm.weight + self.norm.bias
        else:
            x = self.norm(stats)
        cols = self.score_columns
        if cols is None:
            return x
        missing = stats[:, cols.stop - 1 : cols.stop] < 0.5
        if self.training and self.score_dropout > 0:
            missing = missing | (torch.rand(stats.shape[0], 1, device=stats.device) < self.score_dropout)
        x = x.clone()
        x[:, cols] = x[:, cols].masked_fill(missing, 0.0)
        return x

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, H + side] from the base encoder's inputs plus `stats [B, S]`.

        Also sets `batch["wide_logits"] [B, n_dims]`, the wide part's logit offsets for the score heads
        (computed from the same standardised, score-dropped statistics as the side embedding).
        """
        z = self.base(batch)
        x = self.standardise(batch["stats"].to(z.dtype))
        batch["wide_logits"] = self.wide(x)
        return torch.cat([z, self.side(x)], dim=-1)

    @torch.no_grad()
    def init_wide(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_dev: torch.Tensor | None = None,
        y_dev: torch.Tensor | None = None,
        alphas: tuple[float, ...] = RIDGE_ALPHAS,
    ) -> float:
        """Fix the standardisation at the moments of x_train [N, S]; fit the wide part by ridge.

        Targets are the label logits minus the logit of the label mean (the heads' initial bias).
        The ridge strength is chosen on (x_dev, y_dev) by MSE in label space (the largest without a
        dev split). Returns the chosen alpha.
        """
        x_train, y_train = x_train.double(), y_train.double()
        self.norm.running_mean.copy_(x_train.mean(dim=0).to(self.norm.running_mean))
        self.norm.running_var.copy_(x_train.var(dim=0, unbiased=False).to(self.norm.running_var))
        self.norm.weight.fill_(1.0)
        self.norm.bias.zero_()
        self.moments_fixed.fill_(True)
        was_training = self.training
        self.eval()  # no score dropout while fitting
        xs = self.standardise(x_train.to(self.norm.running_mean.dtype)).double()
        base = torch.logit(y_train.mean(dim=0).clamp(1e-4, 1 - 1e-4))
        target = torch.logit(y_train.clamp(1e-4, 1 - 1e-4)) - base
        gram, cross = xs.T @ xs, xs.T @ target
        best: tuple[float, float, torch.Tensor] | None = None
        for alpha in alphas:
            w = torch.linalg.solve(gram + alpha * torch.eye(len(gram), dtype=gram.dtype), cross)
            if x_dev is not None and y_dev is not None and len(x_dev):
                xd = self.standardise(x_dev.to(self.norm.running_mean.dtype)).double()
                err = float(((torch.sigmoid(base + xd @ w) - y_dev.double()) ** 2).mean())
            else:
                err = -alpha
            if best is None or err < best[0]:
                best = (err, alpha, w)
        assert best is not None
        self.wide.weight.copy_(best[2].T.to(self.wide.weight))
        self.train(was_training)
        return best[1]


def pooled_statistics(frames: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of each dimension over frames: [F, D] → [2 D] (float32).

    The audio track's hand-made statistics: what a linear probe on a frozen backbone reads (the
    audio baselines, and the wide part of the wide & deep probe).
    """
    x = frames.float()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected frames [F, D] with F > 0, got {tuple(x.shape)}")
    return torch.cat([x.mean(dim=0), x.std(dim=0, unbiased=False)])
