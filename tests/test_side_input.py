"""The wide & deep side input: shapes, standardisation, and how the registry and featurizer use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pianoeval.config import validate_config
from pianoeval.pipeline.featurize import featurize_file, kind_meta
from pianoeval.side_input import WithStatistics
from pianoeval.symbolic.stats import ALL_STAT_NAMES
from pianoeval.training.registry import build_encoder, build_network


class _Constant(nn.Module):
    """An encoder that ignores its input: z is all zeros, so only the side path can vary."""

    hidden_size = 8

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.zeros(batch["stats"].shape[0], self.hidden_size)


def test_side_input_shape_and_signal() -> None:
    net = WithStatistics(_Constant(), n_stats=5, side=4)
    stats = torch.randn(6, 5) * torch.tensor([1.0, 10.0, 100.0, 1e3, 1e4])
    z = net({"stats": stats})
    assert z.shape == (6, 12)
    assert net.hidden_size == 12
    assert torch.allclose(z[:, :8], torch.zeros(6, 8))
    # The statistics reach z: different rows give different side embeddings.
    assert z[:, 8:].std(dim=0).min() > 0


def test_side_input_standardises_with_training_moments() -> None:
    net = WithStatistics(_Constant(), n_stats=3, side=4)
    train = torch.randn(64, 3) * 1000.0 + 5000.0
    for _ in range(50):
        net({"stats": train})
    assert torch.allclose(net.norm.running_mean, train.mean(dim=0), rtol=0.05)
    net.eval()
    one = net({"stats": train[:1]})  # eval: a batch of one works and uses the running moments
    assert torch.isfinite(one).all()
    net.train()
    assert torch.isfinite(net({"stats": train[:1]})).all()  # training batch of one: no BatchNorm error


def test_gradients_reach_both_paths() -> None:
    base = nn.Linear(3, 8)
    base.hidden_size = 8
    net = WithStatistics(base, n_stats=3, side=4)

    class Wrap(nn.Module):
        hidden_size = 8

        def __init__(self) -> None:
            super().__init__()
            self.lin = base

        def forward(self, batch: dict) -> torch.Tensor:
            return self.lin(batch["x"])

    net.base = Wrap()
    net({"x": torch.randn(4, 3), "stats": torch.randn(4, 3)}).sum().backward()
    assert base.weight.grad is not None and base.weight.grad.abs().sum() > 0
    assert net.side[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("enabled", [True, False], ids=["wrapped", "bare"])
def test_registry_wraps_symbolic_encoders(enabled: bool) -> None:
    config = validate_config({"symbolic": {"stats_side_input": enabled, "hidden": 32, "layers": 2, "heads": 2}})
    meta = kind_meta("curves", config["features"])
    net = build_network("s3", meta, config)
    assert isinstance(net, WithStatistics) is enabled
    assert not isinstance(build_encoder("s3", meta, config), WithStatistics)


@pytest.mark.parametrize("kind", ["tokens", "graphs", "curves", "stats"])
def test_every_feature_kind_carries_statistics(kind: str, tiny_midi) -> None:
    config = validate_config({})
    item = featurize_file(kind, str(tiny_midi()), config["features"])
    assert item["stats"].shape == (len(ALL_STAT_NAMES),)
    assert torch.isfinite(item["stats"]).all()
    assert kind_meta(kind, config["features"])["n_stats"] == len(ALL_STAT_NAMES)
