"""The LightningModules that train a `ScoreNetwork` (any encoder `nn.Module` → z [B, H], plus the score
heads) to predict the 19 dimensions: the shared base `ScoreModule` and `PerformanceModule`."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from pianoeval.core.constants import AMBIGUOUS_THRESHOLD, N_DIMS
from pianoeval.networks.heads import ScoreHeads
from pianoeval.networks.scorer import ScoreNetwork
from pianoeval.training.schedule import lr_scheduler

# The layout of the modules' state (`net.encoder.*`, `net.heads.*`): part of the resume key, so that
# Lightning checkpoints of the earlier layout (`encoder.*`, `heads.*`) are not resumed.
STATE_LAYOUT = "net-v2"


class ScoreModule(L.LightningModule):
    """What every training module shares: the plain `ScoreNetwork` it trains (`net`, which is what
    scoring loads), prediction, and the dev metrics that select the epoch (`dev/pairwise_acc`,
    `dev/r2`, `dev/selection`). Subclasses own their losses and optimiser: `PerformanceModule` (symbolic
    encoders, the audio probe, the fusions) and `training/audio_modules.py` (A1-A3)."""

    net: ScoreNetwork

    def __init__(self) -> None:
        super().__init__()
        self._dev_outputs: list[dict[str, torch.Tensor]] = []

    @property
    def encoder(self) -> nn.Module:
        """The network's encoder (batch → z [B, H])."""
        return self.net.encoder

    @property
    def heads(self) -> ScoreHeads:
        """The network's score heads."""
        return self.net.heads

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Predicted scores [B, 19] in (0, 1)."""
        return self.net(batch)

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Encoder embedding z [B, H]."""
        return self.net.embed(batch)

    def embed_and_score(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [B, H], scores [B, 19]) in one pass."""
        return self.net.embed_and_score(batch)

    def record_dev(self, scores: torch.Tensor, batch: dict[str, Any]) -> None:
        """Keep a dev batch's scores [B, 19], labels and groups for the epoch's dev metrics."""
        self._dev_outputs.append(
            {"pred": scores.detach().cpu(), "target": batch["labels"].cpu(), "group": batch["group"].cpu()}
        )

    def on_validation_epoch_end(self) -> None:
        from pianoeval.metrics import pairwise_accuracy, r2_scores

        if not self._dev_outputs:
            return
        pred = torch.cat([o["pred"] for o in self._dev_outputs]).float().numpy()
        target = torch.cat([o["target"] for o in self._dev_outputs]).float().numpy()
        group = torch.cat([o["group"] for o in self._dev_outputs]).numpy()
        self._dev_outputs.clear()
        acc = pairwise_accuracy(pred, target, group, threshold=self.hparams.threshold)["overall"]
        r2 = r2_scores(pred, target)["mean"] if len(pred) > 1 else float("nan")
        # sync_dist: under DDP every rank scores the whole dev split, so the mean is the same number
        # and every rank takes the same early-stopping and checkpoint decisions (no-op on one device).
        self.log("dev/pairwise_acc", float(acc) if acc is not None else 0.5, prog_bar=True, sync_dist=True)
        self.log("dev/r2", float(r2), prog_bar=True, sync_dist=True)
        # One number for model selection: both metrics matter, pairwise first.
        selection = float(acc or 0.5) + 0.5 * float(np.nan_to_num(r2, nan=-1.0))
        self.log("dev/selection", selection, sync_dist=True)


class PerformanceModule(ScoreModule):
    """Trains a `ScoreNetwork` (encoder + score heads) with regression + within-piece ranking (+ contrastive)
    losses.

    Batches hold the encoder's inputs plus `labels [B, 19]` and `group [B]` (musical segment index).
    Ranking pairs are formed inside the batch between performances of the same group, on the regression
    head's logits (the heads carry no separate ranking utility); the batch sampler puts several
    performances of one group in each batch. The contrastive projection exists only when its loss has
    a weight.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_dims: int = N_DIMS,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        loss_weights: dict[str, float] | None = None,
        threshold: float = AMBIGUOUS_THRESHOLD,
        max_epochs: int = 40,
        dropout: float = 0.1,
        label_mean: list[float] | None = None,
        encoder_lr_scale: float = 1.0,
        encoder_frozen_epochs: int = 0,
        lr_schedule: str = "epoch_cosine",
        warmup_epochs: float = 0.0,
        stats_scale: tuple[list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        from pianoeval.networks.heads import ProjectionHead

        self.net = ScoreNetwork(encoder, n_dims, dropout=dropout)
        self.loss_weights = {"ranking": 1.0, "regression": 1.0, "ccc": 0.0, "contrastive": 0.0, "statistics": 0.0}
        self.loss_weights.update(loss_weights or {})
        self.projection = ProjectionHead(encoder.hidden_size, 64) if self.loss_weights["contrastive"] > 0 else None
        # The statistics term: the embedding regresses the performance's hand-made statistics (standardised
        # with the training rows' `stats_scale`, (mean, std) per column), an auxiliary target that every
        # item carries. A training-only head: the served network (`net`) has no part of it.
        self.stats_head: nn.Module | None = None
        if self.loss_weights["statistics"] > 0:
            if stats_scale is None:
                raise ValueError("the statistics loss needs the training rows' statistics (stats_scale)")
            mean, std = (torch.tensor(v, dtype=torch.float32) for v in stats_scale)
            self.register_buffer("stats_mean", mean)
            self.register_buffer("stats_std", std)
            self.stats_head = nn.Linear(encoder.hidden_size, len(mean))
        if label_mean is not None:
            # Start the regression head at the training mean: the first epochs then learn deviations.
            mean = torch.tensor(label_mean, dtype=torch.float32)
            self.heads.init_bias(mean)
            if hasattr(encoder, "init_bias"):
                encoder.init_bias(mean)
            if getattr(encoder, "starts_from_offsets", False):
                # The encoder hands the heads logit offsets of a prediction to start from (fusion):
                # with the last layer at zero, the first prediction is that one.
                with torch.no_grad():
                    self.heads.regression[-1].weight.zero_()

    def compute_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Total loss, its named parts, and the scores [B, 19]."""
        from pianoeval.networks.losses import pairwise_ranking_loss, regression_loss, supervised_contrastive_loss

        z, scores = self.net.embed_and_score(batch)
        labels, groups = batch["labels"], batch["group"]
        parts: dict[str, torch.Tensor] = {}
        w = self.loss_weights
        if w.get("regression", 0.0) > 0:
            parts["regression"] = regression_loss(scores, labels, kind="mse")
        if w.get("ccc", 0.0) > 0:
            parts["ccc"] = regression_loss(scores, labels, kind="ccc")
        if w.get("ranking", 0.0) > 0:
            # Rank on the head's logits so the ranking signal is not squashed by the sigmoid.
            logits = torch.logit(scores.clamp(1e-4, 1 - 1e-4))
            parts["ranking"] = pairwise_ranking_loss(logits, labels, groups, threshold=self.hparams.threshold)
        if self.projection is not None:
            parts["contrastive"] = supervised_contrastive_loss(self.projection(z), groups, temperature=0.1)
        if self.stats_head is not None:
            parts["statistics"] = statistics_loss(self.stats_head(z), batch["stats"], self.stats_mean, self.stats_std)
        total = sum(w[name] * value for name, value in parts.items())
        return total, parts, scores

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        total, parts, _ = self.compute_losses(batch)
        bs = batch["labels"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        return total

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        total, _, scores = self.compute_losses(batch)
        self.log("dev/loss", total, batch_size=batch["labels"].shape[0], sync_dist=True)
        self.record_dev(scores, batch)

    def _deep_parameters(self) -> list[nn.Parameter]:
        """The parameters of the (possibly pretrained) deep encoder: a wide & deep network's `.base`."""
        return list(getattr(self.encoder, "base", self.encoder).parameters())

    def on_train_epoch_start(self) -> None:
        # Fine-tuning a pretrained encoder: the first `encoder_frozen_epochs` epochs train only what
        # sits on top of it (heads, side input), so random heads do not wreck what it learned.
        if not self.hparams.encoder_frozen_epochs:
            return  # nothing is frozen, nothing is touched (parts frozen by design stay frozen)
        if not hasattr(self, "_trainable"):
            self._trainable = [p for p in self._deep_parameters() if p.requires_grad]
        frozen = self.current_epoch < self.hparams.encoder_frozen_epochs
        for p in self._trainable:
            p.requires_grad_(not frozen)

    def configure_optimizers(self) -> Any:
        deep = {id(p) for p in self._deep_parameters()}
        rest = [p for p in self.parameters() if id(p) not in deep]
        groups = [
            {"params": rest},
            # A pretrained encoder moves `encoder_lr_scale` times as fast as the layers on top of it.
            {"params": self._deep_parameters(), "lr": self.hparams.lr * self.hparams.encoder_lr_scale},
        ]
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        h = self.hparams
        # Per-step schedules need the run's optimiser steps, which only the attached trainer knows.
        steps = self.trainer.estimated_stepping_batches if h.lr_schedule == "warmup_cosine" else None
        sched = lr_scheduler(opt, h.lr_schedule, h.max_epochs, warmup_epochs=h.warmup_epochs, total_steps=steps)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}


# Standardised statistics beyond this many standard deviations are clipped (a few are heavy-tailed ratios).
STATS_CLIP: float = 5.0


def statistics_loss(pred: torch.Tensor, stats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """MSE between `pred` [B, S] and the statistics [B, S] standardised by `mean`, `std` [S] and clipped to
    ±STATS_CLIP; columns constant on the training rows (std 0) are left out."""
    used = std > 0
    target = ((stats.float() - mean) / torch.where(used, std, torch.ones_like(std))).clamp(-STATS_CLIP, STATS_CLIP)
    return torch.nn.functional.mse_loss(pred[:, used], target[:, used])
