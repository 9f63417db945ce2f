"""Losses: hand-computed values, ordering properties, masking, gradients, and no NaN on degenerate batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pianoeval.core.errors import ConfigError
from pianoeval.networks.losses import (
    invariance_loss,
    pairwise_ranking_loss,
    regression_loss,
    supervised_contrastive_loss,
)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_pairwise_ranking_one_pair_hand_computed() -> None:
    scores = torch.tensor([[0.3], [0.8]], requires_grad=True)
    targets = torch.tensor([[0.9], [0.2]])  # row 0 is better, but scored lower
    loss = pairwise_ranking_loss(scores, targets, torch.tensor([0, 0]), threshold=0.05)
    # sign(t0 - t1) = +1, s0 - s1 = -0.5 → softplus(0.5)
    assert loss.item() == pytest.approx(_softplus(0.5), rel=1e-6)
    with_margin = pairwise_ranking_loss(scores, targets, torch.tensor([0, 0]), margin=1.0, scale=2.0)
    assert with_margin.item() == pytest.approx(_softplus(1.0 + 1.0), rel=1e-6)  # margin - (+1)(-0.5)(2)
    loss.backward()
    # d/ds0 softplus(-(s0 - s1)) = -sigmoid(0.5)
    assert scores.grad[0, 0].item() == pytest.approx(-1 / (1 + math.exp(-0.5)), rel=1e-5)


def test_pairwise_ranking_ordered_beats_reversed() -> None:
    targets = torch.tensor([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    groups = torch.zeros(3, dtype=torch.long)
    ordered = pairwise_ranking_loss(targets * 5, targets, groups)
    reversed_ = pairwise_ranking_loss(-targets * 5, targets, groups)
    assert ordered < reversed_


def test_pairwise_ranking_ignores_ambiguous_and_cross_group_pairs() -> None:
    scores = torch.tensor([[0.0], [1.0], [5.0], [-5.0]])
    # Pair (0,1) ambiguous (diff 0.01); rows 2 and 3 are in other groups (badly ordered vs row 0).
    targets = torch.tensor([[0.50], [0.51], [0.1], [0.9]])
    groups = torch.tensor([0, 0, 1, 2])
    loss = pairwise_ranking_loss(scores, targets, groups, threshold=0.05)
    assert loss.item() == 0.0
    # With a lower threshold the (0,1) pair counts: sign(-0.01) = -1, s0 - s1 = -1 → softplus(-1).
    low = pairwise_ranking_loss(scores, targets, groups, threshold=0.001)
    assert low.item() == pytest.approx(_softplus(-1.0), rel=1e-6)


@pytest.mark.parametrize(
    "groups",
    [torch.tensor([0]), torch.tensor([0, 1, 2])],
    ids=["batch-of-one", "all-singleton-groups"],
)
def test_ranking_losses_zero_and_connected_without_pairs(groups: torch.Tensor) -> None:
    scores = torch.rand(len(groups), 3, requires_grad=True)
    targets = torch.rand(len(groups), 3)
    for loss in (pairwise_ranking_loss(scores, targets, groups),):
        assert loss.item() == 0.0
        loss.backward()
        assert scores.grad is not None and torch.isfinite(scores.grad).all()
        assert (scores.grad == 0).all()


def test_regression_mse_and_mask() -> None:
    pred = torch.tensor([[0.5, 0.5], [0.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.5], [float("nan"), float("nan")]])
    mask = torch.tensor([True, False])
    loss = regression_loss(pred, target, "mse", mask=mask)
    assert loss.item() == pytest.approx(0.125)  # (0.25 + 0) / 2
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[1] == 0).all()


def test_regression_ccc() -> None:
    x = torch.tensor([[0.1, 0.9], [0.4, 0.3], [0.8, 0.5]], requires_grad=True)
    assert regression_loss(x, x.detach(), "ccc").item() == pytest.approx(0.0, abs=1e-5)
    # Hand value for one dimension: pred = target + 1 → cov = var, ccc = 2v / (2v + 1).
    t = torch.tensor([[0.0], [1.0], [2.0]])  # population var 2/3
    v = 2 / 3
    assert regression_loss(t + 1, t, "ccc").item() == pytest.approx(1 - 2 * v / (2 * v + 1), rel=1e-5)
    # A single row has no correlation: 0, connected, finite gradient.
    one = torch.rand(1, 4, requires_grad=True)
    loss = regression_loss(one, torch.rand(1, 4), "ccc")
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(one.grad).all()
    with pytest.raises(ConfigError):
        regression_loss(x, x, "huber")


def test_supervised_contrastive() -> None:
    groups = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = clustered[[0, 2, 1, 3]]
    assert supervised_contrastive_loss(clustered, groups) < supervised_contrastive_loss(mixed, groups)
    # Hand value: 3 orthogonal points, rows 0 and 1 identical (group 0), T = 1.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([0, 0, 1])  # row 2 has no positive and is not an anchor
    expected = -math.log(math.exp(1) / (math.exp(1) + math.exp(0)))
    assert supervised_contrastive_loss(z, g, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    single = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive_loss(single, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(single.grad).all()


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_invariance_loss(kind: str) -> None:
    z = torch.randn(4, 8, requires_grad=True)
    assert invariance_loss(z, z.detach().clone(), kind).item() == pytest.approx(0.0, abs=1e-6)
    loss = invariance_loss(z, -z.detach(), kind)
    expected = 2.0 if kind == "cosine" else F.mse_loss(-z, z).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert z.grad.abs().sum() > 0
