"""training/schedule.py and `training.lr_schedule`: the learning rate each optimiser step trains with."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tiny_modules import MeanEncoder

from pianoeval.core.errors import ConfigError
from pianoeval.training.schedule import LR_FLOOR, warmup_cosine_factor

LR, SCALE, EPOCHS, BATCHES = 1e-2, 0.1, 3, 4  # 4 optimiser steps per epoch, 12 in all


class _Batches(torch.utils.data.Dataset):
    """BATCHES ready-made batches of 4 performances of one segment group."""

    def __len__(self) -> int:
        return BATCHES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {
            "x": torch.randn(4, 5, 4, generator=g),
            "labels": torch.rand(4, 19, generator=g),
            "group": torch.zeros(4, dtype=torch.long),
        }


def _lrs_of_each_step(**schedule: object) -> list[list[float]]:
    """Fit a PerformanceModule for EPOCHS epochs; the [head, encoder] learning rates of each step."""
    import lightning as L

    from pianoeval.training.module import PerformanceModule

    seen: list[list[float]] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            seen.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    module = PerformanceModule(MeanEncoder(), lr=LR, max_epochs=EPOCHS, encoder_lr_scale=SCALE, **schedule)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Record()],
    )
    loader = torch.utils.data.DataLoader(_Batches(), batch_size=None)
    trainer.fit(module, loader)
    assert len(seen) == EPOCHS * BATCHES
    return seen


def test_the_default_is_the_per_epoch_cosine_every_earlier_run_had() -> None:
    """Without the setting (and with `epoch_cosine`, the schema's default) each epoch trains at
    lr × (1 + cos(π e / max_epochs)) / 2, the encoder at encoder_lr_scale of it: runs are unchanged."""
    from pianoeval.core.config import validate_config
    from pianoeval.core.settings import TrainingSettings

    training = TrainingSettings.from_config(validate_config({}))
    assert (training.lr_schedule, training.warmup_epochs) == ("epoch_cosine", 0)
    expected = [LR * (1 + math.cos(math.pi * e / EPOCHS)) / 2 for e in range(EPOCHS) for _ in range(BATCHES)]
    for lrs in (_lrs_of_each_step(), _lrs_of_each_step(lr_schedule="epoch_cosine")):
        assert [head for head, _ in lrs] == pytest.approx(expected)
        assert [enc for _, enc in lrs] == pytest.approx([SCALE * e for e in expected])


def test_constant_keeps_the_learning_rate() -> None:
    lrs = _lrs_of_each_step(lr_schedule="constant")
    assert lrs == [pytest.approx([LR, SCALE * LR])] * (EPOCHS * BATCHES)


def test_warmup_cosine_warms_up_then_decays_to_the_floor_step_by_step() -> None:
    """1 warm-up epoch = 4 steps at 1/4, 2/4, 3/4, 4/4 of lr, then a cosine that reaches LR_FLOOR × lr at
    the last of the 12 steps; the encoder's group keeps its encoder_lr_scale."""
    lrs = _lrs_of_each_step(lr_schedule="warmup_cosine", warmup_epochs=1)
    head = [h for h, _ in lrs]
    assert head[:4] == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR])
    assert head[-1] == pytest.approx(LR_FLOOR * LR)
    decay = head[4:]
    assert all(a > b for a, b in itertools.pairwise(decay)), "the cosine falls at every step"
    assert head == pytest.approx([LR * warmup_cosine_factor(s, 4, 12) for s in range(12)])
    assert [e for _, e in lrs] == pytest.approx([SCALE * h for h in head])


@pytest.mark.parametrize(
    ("step", "factor"),
    [(0, 0.5), (1, 1.0), (2, 1.0), (6, 0.5 + 0.5 * LR_FLOOR), (10, LR_FLOOR), (99, LR_FLOOR)],
    ids=["warm-up", "warm-up-end", "decay-start", "half-way", "last-step", "past-the-end"],
)
def test_warmup_cosine_factor(step: int, factor: float) -> None:
    assert warmup_cosine_factor(step, warmup_steps=2, total_steps=11) == pytest.approx(factor)


def test_a_warmup_longer_than_the_run_is_a_config_error() -> None:
    from pianoeval.training.schedule import lr_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=LR)
    with pytest.raises(ConfigError, match=r"training\.warmup_epochs"):
        lr_scheduler(opt, "warmup_cosine", max_epochs=2, warmup_epochs=2, total_steps=8)
    with pytest.raises(ConfigError, match="lr_schedule 'linear' is unknown"):
        lr_scheduler(opt, "linear", max_epochs=2)


def test_a1_to_a3_refuse_a_schedule_they_do_not_follow() -> None:
    """A1-A3's modules have their own per-epoch cosine: another `lr_schedule` is a one-line error, not ignored."""
    from pianoeval.core.config import validate_config
    from pianoeval.core.settings import FitSettings
    from pianoeval.training.registry import build_module

    settings = FitSettings.from_config(validate_config({"training": {"lr_schedule": "constant"}}))
    with pytest.raises(ConfigError, match=r"a3: training\.lr_schedule 'constant'"):
        build_module("a3", torch.nn.Linear(1, 1), settings, label_mean=None)
