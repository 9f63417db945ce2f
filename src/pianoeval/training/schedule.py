"""Learning-rate schedules of `PerformanceModule` (`training.lr_schedule`): what multiplies each parameter
group's learning rate (so `encoder_lr_scale` keeps its ratio) as training goes on."""

from __future__ import annotations

import math
from typing import Any

import torch

from pianoeval.core.errors import ConfigError

# epoch_cosine: cosine from lr to 0 over max_epochs, stepped once per epoch (the schedule every run had
# before the setting existed, hence the default). constant: lr throughout. warmup_cosine: per optimiser
# step, linear warm-up over `warmup_epochs`, then cosine down to LR_FLOOR × lr at the last step.
LR_SCHEDULES = ("epoch_cosine", "constant", "warmup_cosine")
# warmup_cosine's last learning rate as a fraction of lr: small, but the last epochs still learn.
LR_FLOOR = 0.01


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, floor: float = LR_FLOOR) -> float:
    """The factor on lr at optimiser step `step` (0-based): (step + 1) / warmup_steps during the warm-up,
    then half a cosine from 1 down to `floor`, reached at step total_steps - 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    max_epochs: int,
    warmup_epochs: float = 0.0,
    total_steps: int | None = None,
) -> dict[str, Any] | None:
    """The Lightning `lr_scheduler` entry of schedule `kind` for `optimizer`, or None (constant).

    `total_steps`: the optimiser steps of the whole run (`trainer.estimated_stepping_batches`), needed by
    warmup_cosine, whose warm-up lasts `warmup_epochs` × total_steps / max_epochs steps.
    """
    if kind == "epoch_cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs))
        return {"scheduler": sched, "interval": "epoch"}
    if kind == "constant":
        return None
    if kind == "warmup_cosine":
        if not total_steps or total_steps < 1:
            raise ConfigError("training.lr_schedule warmup_cosine needs the run's number of optimiser steps")
        warmup = round(warmup_epochs * total_steps / max(1, max_epochs))
        if warmup >= total_steps:
            raise ConfigError(
                f"training.warmup_epochs ({warmup_epochs}) leaves no step to decay within training.max_epochs "
                f"({max_epochs}); lower it"
            )
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine_factor(step, warmup, int(total_steps))
        )
        return {"scheduler": sched, "interval": "step"}
    raise ConfigError(f"training.lr_schedule {kind!r} is unknown; known: {', '.join(LR_SCHEDULES)}")
