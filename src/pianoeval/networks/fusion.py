"""Fusion of the audio and symbolic tracks: cross-attention (F1), concat (F2), per-dimension gating (F3).

Every fusion network reads precomputed per-performance embeddings from the fold's single-track
winners: `z_audio [B, Ha]`, `z_symbolic [B, Hs]`, their own predicted scores `scores_audio`,
`scores_symbolic [B, 19]`, and, with score conditioning, `score_stats [B, S]`: the performance
measured against its aligned score MIDI (tempo ratio, rubato, timing deviation, played/notated
durations and dynamics, extra/missed notes; `symbolic/score_stats.py`, the last column the
"aligned" flag). Those are performance-minus-score differences by construction: the fusion then
models what the player did *relative to* the notation, beside the two tracks' views.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pianoeval.core.constants import N_DIMS, SCORE_COLUMNS


def n_score_stats() -> int:
    """Width S of `score_stats`: the score-relative statistics and their "aligned" flag."""
    return SCORE_COLUMNS.stop - SCORE_COLUMNS.start


class _Inputs(nn.Module):
    """Normalises and projects both tracks to a common width; adds the score-relative view."""

    def __init__(
        self, audio_dim: int, symbolic_dim: int, hidden: int, score_conditioning: bool, dropout: float
    ) -> None:
        super().__init__()
        self.score_conditioning = score_conditioning
        self.audio = nn.Sequential(
            nn.LayerNorm(audio_dim + N_DIMS), nn.Dropout(dropout), nn.Linear(audio_dim + N_DIMS, hidden)
        )
        sym_in = symbolic_dim + N_DIMS
        if score_conditioning:
            # The statistics' scales differ by orders of magnitude: standardised by training moments.
            self.score_norm = nn.BatchNorm1d(n_score_stats())
            sym_in += n_score_stats()
        self.symbolic = nn.Sequential(nn.LayerNorm(sym_in), nn.Dropout(dropout), nn.Linear(sym_in, hidden))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio [B, hidden], symbolic [B, hidden])."""
        a = torch.cat([batch["z_audio"], batch["scores_audio"]], dim=-1)
        s_parts = [batch["z_symbolic"], batch["scores_symbolic"]]
        if self.score_conditioning:
            # Model the performance relative to the score: what the player changed. Rows without an
            # aligned score (flag 0) get that view at the training mean (0 after standardising).
            stats = batch["score_stats"].to(a.dtype)
            x = self._eval_norm(stats) if self.training and stats.shape[0] == 1 else self.score_norm(stats)
            s_parts.append(x * (stats[:, -1:] > 0.5))
        return self.audio(a), self.symbolic(torch.cat(s_parts, dim=-1))

    def _eval_norm(self, stats: torch.Tensor) -> torch.Tensor:
        """BatchNorm with its running moments (for a one-row training batch, which has no variance)."""
        n = self.score_norm
        return nn.functional.batch_norm(stats, n.running_mean, n.running_var, n.weight, n.bias, eps=n.eps)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-4, 1 - 1e-4))


class _Residual(nn.Module):
    """Fusion that starts from a track's own predictions and learns corrections to them.

    Trained from scratch on a few hundred performances, a fusion network fell far below the symbolic
    winner it was fed (demo: pairwise 0.72 against 0.88). Here the heads add their logits to the
    offsets `logit(track scores) - logit(training label mean)`; with the heads' last layer at zero
    (PerformanceModule zeroes it for `starts_from_offsets` encoders), epoch 0 predicts exactly the
    symbolic winner's scores, and early stopping on dev keeps what the audio view adds, if anything.
    """

    starts_from_offsets = True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("label_logit", torch.zeros(N_DIMS))

    def init_bias(self, mean: torch.Tensor) -> None:
        """Remember the training label mean's logit (the heads' initial bias)."""
        self.label_logit.copy_(_logit(torch.as_tensor(mean, dtype=torch.float32).reshape(-1)))

    def offset(self, scores: torch.Tensor) -> torch.Tensor:
        """Logit offsets [B, 19] that turn the heads' initial output into `scores [B, 19]`."""
        return _logit(scores) - self.label_logit


class ConcatFusion(_Residual):
    """F2: concatenate both tracks and mix with an MLP → z [B, hidden]; scores start at the symbolic track's."""

    def __init__(
        self,
        audio_dim: int,
        symbolic_dim: int,
        hidden: int = 128,
        score_conditioning: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.inputs = _Inputs(audio_dim, symbolic_dim, hidden, score_conditioning, dropout)
        self.mix = nn.Sequential(nn.GELU(), nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Dropout(dropout))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden] (see `encode`)."""
        return self.encode(batch)[0]

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [B, hidden], the symbolic scores as logit offsets [B, 19] for the heads)."""
        a, s = self.inputs(batch)
        return self.mix(torch.cat([a, s], dim=-1)), self.offset(batch["scores_symbolic"])


class CrossAttentionFusion(_Residual):
    """F1: each track becomes `n_tokens` tokens; bidirectional cross-attention, then pooling → z [B, hidden];
    scores start at the symbolic track's."""

    def __init__(
        self,
        audio_dim: int,
        symbolic_dim: int,
        hidden: int = 128,
        score_conditioning: bool = False,
        dropout: float = 0.2,
        n_tokens: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.n_tokens = n_tokens
        self.inputs = _Inputs(audio_dim, symbolic_dim, hidden * n_tokens, score_conditioning, dropout)
        self.a_to_s = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.s_to_a = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm_a, self.norm_s = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.out = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Dropout(dropout))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden] (see `encode`)."""
        return self.encode(batch)[0]

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [B, hidden], the symbolic scores as logit offsets [B, 19] for the heads)."""
        a, s = self.inputs(batch)
        b = a.shape[0]
        a = a.view(b, self.n_tokens, -1)
        s = s.view(b, self.n_tokens, -1)
        a2 = self.norm_a(a + self.a_to_s(a, s, s, need_weights=False)[0])  # audio attends to symbolic
        s2 = self.norm_s(s + self.s_to_a(s, a, a, need_weights=False)[0])  # symbolic attends to audio
        return self.out(torch.cat([a2.mean(dim=1), s2.mean(dim=1)], dim=-1)), self.offset(batch["scores_symbolic"])


def _regression_only(heads: nn.Module) -> nn.Module:
    """F3's per-track heads without their ranking utility, which no loss trains (so it is not saved).
    The heads are built with it and it is then dropped: drawing its weights keeps the random stream, and
    so f3's seeded initialisation (the gate's weights are drawn after the heads') and results, as measured."""
    heads.ranking = None
    return heads


class GatedFusion(_Residual):
    """F3: per-dimension gates g [B, 19] in [0, 1] mix the two tracks' score predictions.

    scores = g * audio_scores + (1 - g) * symbolic_scores, where each track's scores come from
    its own head on its projected embedding, started at that track's own predictions (`_Residual`);
    the gates start near the symbolic track (g ≈ 0.12); `get_gates` exposes g for interpretation.
    """

    def __init__(
        self,
        audio_dim: int,
        symbolic_dim: int,
        hidden: int = 128,
        score_conditioning: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        from pianoeval.networks.heads import ScoreHeads

        self.hidden_size = hidden
        self.inputs = _Inputs(audio_dim, symbolic_dim, hidden, score_conditioning, dropout)
        self.audio_head = _regression_only(ScoreHeads(hidden, N_DIMS, dropout=dropout, ranking=True))
        self.symbolic_head = _regression_only(ScoreHeads(hidden, N_DIMS, dropout=dropout, ranking=True))
        self.gate = nn.Sequential(nn.GELU(), nn.Linear(2 * hidden, N_DIMS))
        with torch.no_grad():
            self.gate[1].bias.fill_(-2.0)

    def init_bias(self, mean: torch.Tensor) -> None:
        """Start each track's head at that track's own predictions (offsets from the label mean)."""
        super().init_bias(mean)
        for head in (self.audio_head, self.symbolic_head):
            head.init_bias(mean)
            with torch.no_grad():
                head.regression[-1].weight.zero_()

    def get_gates(self, batch: dict[str, Any]) -> torch.Tensor:
        """Audio weight per dimension g [B, 19] in [0, 1]."""
        a, s = self.inputs(batch)
        return torch.sigmoid(self.gate(torch.cat([a, s], dim=-1)))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden]: the mean of both projected tracks (for embedding export)."""
        a, s = self.inputs(batch)
        return 0.5 * (a + s)

    def predict_scores(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scores [B, 19] in (0, 1) as the gated mix of both tracks' heads."""
        a, s = self.inputs(batch)
        g = torch.sigmoid(self.gate(torch.cat([a, s], dim=-1)))
        audio = self.audio_head(a, self.offset(batch["scores_audio"]))
        return g * audio + (1 - g) * self.symbolic_head(s, self.offset(batch["scores_symbolic"]))


FUSIONS = {"f1": CrossAttentionFusion, "f2": ConcatFusion, "f3": GatedFusion}


def build_fusion(name: str, audio_dim: int, symbolic_dim: int, hidden: int = 128) -> nn.Module:
    """`f1`/`f2`/`f3`, with `_score` suffix for score conditioning."""
    from pianoeval.core.errors import ConfigError

    base, _, suffix = name.partition("_")
    if base not in FUSIONS or suffix not in ("", "score"):
        raise ConfigError(f"unknown fusion {name!r}; known: f1, f2, f3 (optionally with _score)")
    return FUSIONS[base](audio_dim, symbolic_dim, hidden=hidden, score_conditioning=suffix == "score")
