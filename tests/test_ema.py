"""training.ema_decay: the averaged weights are what dev selection scores, the checkpoints hold and the
model predicts with (training/averaging.py); the raw weights go on training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from pianoeval.training.averaging import WeightEMA


class Tiny(L.LightningModule):
    """y = w·x by SGD at lr 1 on a loss whose gradient is 1 everywhere: each step lowers w by exactly 1."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1, bias=False)
        self.frozen = nn.Linear(1, 1, bias=False)
        self.frozen.requires_grad_(False)
        with torch.no_grad():
            self.lin.weight.fill_(10.0)
            self.frozen.weight.fill_(3.0)
        self.seen: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.lin.weight.sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.seen.append(float(self.lin.weight))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.lin.parameters(), lr=1.0)


def _loader(n: int) -> Any:
    return torch.utils.data.DataLoader(torch.zeros(n, 1), batch_size=1)


def _fit(tmp_path: Path, decay: float) -> tuple[Tiny, L.Trainer]:
    module = Tiny()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[WeightEMA(decay), ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, _loader(2), _loader(1))
    return module, trainer


def test_validation_and_checkpoints_see_the_average_of_the_weights(tmp_path: Path) -> None:
    module, _ = _fit(tmp_path, 0.5)
    # Raw weights after the 4 steps: 9, 8, 7, 6. The average starts at the first: 9, 8.5, 7.75, 6.875.
    assert module.seen == [8.5, 6.875]  # each epoch's validation scored the average
    assert float(module.lin.weight) == 6.875  # and the module left behind is the average
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert float(last["state_dict"]["lin.weight"]) == 6.875
    assert float(last["ema_raw"]["lin.weight"]) == 6.0  # what a resumed run trains on from
    # A frozen parameter is not averaged, nor kept twice.
    assert float(last["state_dict"]["frozen.weight"]) == 3.0 and "frozen.weight" not in last["ema_raw"]


def test_a_decay_outside_0_1_is_refused() -> None:
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="decay"):
            WeightEMA(decay)
