"""An exponential moving average (EMA) of a network's trainable weights, which dev selection, the saved
checkpoints and the predictions then use in place of the raw weights (config `training.ema_decay`).

Why: on PercePiano's ~900 training segments a fold's dev score moves by several points from one epoch
to the next (docs/benchmarks.md, issue 15), and R² suffers more from that noise than ranking does. An
average over the last ~1/(1 - decay) optimiser steps is a cheap ensemble of nearby weights.

Why not Lightning's `EMAWeightAveraging`: it averages every buffer too (or none, and then swaps stale
copies of them in), and the wide part's buffers are integer trees and fixed moments that an average
must not touch. This one keeps a shadow of the parameters only, started from each parameter when it
first trains (a frozen parameter is its own average), and swaps them in for validation. A checkpoint
holds the averaged weights as its `state_dict` (what `model.ckpt`, deep start and scoring read) and the
raw ones under `ema_raw`, which a resumed run continues from.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


class WeightEMA(Callback):
    """EMA of the trainable parameters: shadow ← decay · shadow + (1 − decay) · weights after each
    optimiser step; validation and checkpoints see the shadow."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {}
        self._last_step = 0
        self._swapped = False

    def _trained(self, module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step <= self._last_step:
            return  # no optimiser step in this batch (gradient accumulation)
        self._last_step = trainer.global_step
        for name, p in self._trained(pl_module).items():
            avg = self.shadow.get(name)
            if avg is None:
                self.shadow[name] = p.detach().clone()
            else:
                avg.lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def _swap(self, pl_module: Any) -> None:
        params = dict(pl_module.named_parameters())
        for name, avg in self.shadow.items():
            raw = params[name].detach().clone()
            params[name].copy_(avg)
            avg.copy_(raw)
        self._swapped = not self._swapped

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._swapped:
            self._swap(pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # The module left behind is the averaged one, as every checkpoint is.
        if not self._swapped:
            self._swap(pl_module)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        live = {name: avg for name, avg in self.shadow.items() if name in state}
        if self._swapped:  # the module holds the averages, the shadow the raw weights
            checkpoint["ema_raw"] = {name: raw.clone() for name, raw in live.items()}
        else:
            checkpoint["ema_raw"] = {name: state[name].clone() for name in live}
            state.update({name: avg.clone() for name, avg in live.items()})

    @torch.no_grad()
    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # Lightning has loaded the averaged `state_dict` into the module: those become the shadow,
        # and the raw weights go back into the module, which training continues from.
        raw = checkpoint.get("ema_raw")
        if raw is None:
            return  # a checkpoint of a run without EMA: the shadow starts at its weights
        params = dict(pl_module.named_parameters())
        self.shadow = {name: params[name].detach().clone() for name in raw}
        for name, value in raw.items():
            params[name].copy_(value)
        self._swapped = False

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict.get("last_step", 0))
