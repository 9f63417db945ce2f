"""The statistics loss (`training.loss_weights.statistics`): a deep encoder's embedding regresses the hand-made
statistics every item carries; a training-only head, standardised on the training rows."""

from __future__ import annotations

import pytest
import torch
from tiny_modules import MeanEncoder

from pianoeval.training.module import STATS_CLIP, PerformanceModule, statistics_loss


def test_statistics_loss_standardises_clips_and_skips_constant_columns() -> None:
    mean, std = torch.tensor([1.0, 0.0, 5.0]), torch.tensor([2.0, 1.0, 0.0])
    stats = torch.tensor([[3.0, 100.0, 5.0], [1.0, -1.0, 7.0]])
    # Standardised: [[1, 100 → clipped, (constant column left out)], [0, -1, .]].
    target = torch.tensor([[1.0, STATS_CLIP], [0.0, -1.0]])
    pred = torch.tensor([[1.0, STATS_CLIP, 123.0], [0.0, -1.0, -9.0]])
    assert statistics_loss(pred, stats, mean, std).item() == 0.0
    off = pred.clone()
    off[0, 0] += 2.0
    expected = torch.nn.functional.mse_loss(off[:, :2], target)
    assert torch.isclose(statistics_loss(off, stats, mean, std), expected)


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, 4, generator=g)
    # Statistics the embedding can reach: linear in the mean over T, plus a constant column.
    stats = torch.cat([x.mean(1) @ torch.randn(4, 3, generator=g) * 3 + 1, torch.full((n, 1), 2.0)], dim=1)
    return {"x": x, "stats": stats, "labels": torch.rand(n, 19, generator=g), "group": torch.arange(n) // 2}


def test_the_statistics_term_trains_a_head_the_served_network_does_not_hold() -> None:
    batch = _batch()
    scale = (batch["stats"].mean(0).tolist(), batch["stats"].std(0, unbiased=False).tolist())
    module = PerformanceModule(MeanEncoder(), loss_weights={"statistics": 1.0}, stats_scale=scale)
    _, parts, _ = module.compute_losses(batch)
    assert set(parts) == {"ranking", "regression", "statistics"}
    first = parts["statistics"].item()
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        module.compute_losses(batch)[1]["statistics"].backward()
        opt.step()
    assert module.compute_losses(batch)[1]["statistics"].item() < 0.2 * first
    assert any(k.startswith("stats_head.") for k in module.state_dict())
    net_keys = [k for k in module.state_dict() if k.startswith("net.")]
    assert net_keys and not any("stats" in k for k in net_keys)  # what `pianoeval score` loads
    # Off by default, and no head then; on without the training statistics is a programming error.
    plain = PerformanceModule(MeanEncoder())
    assert plain.stats_head is None and "statistics" not in plain.compute_losses(batch)[1]
    with pytest.raises(ValueError, match="stats_scale"):
        PerformanceModule(MeanEncoder(), loss_weights={"statistics": 1.0})
