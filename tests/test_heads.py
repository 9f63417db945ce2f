"""Tests of the shared heads: masked attention pooling, score/ranking heads, projection head."""

from __future__ import annotations

import pytest
import torch
from tiny_modules import MeanEncoder

from pianoeval.core.constants import N_DIMS
from pianoeval.networks.heads import AttentionPooling, ProjectionHead, ScoreHeads


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_attention_pooling_gives_padding_exactly_zero_weight() -> None:
    pool = AttentionPooling(8)
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    w = pool.weights(x, mask)
    assert torch.all(w[~mask] == 0)
    assert torch.allclose(w.sum(dim=1), torch.ones(3))
    # Changing padded states (even to NaN) changes nothing.
    x2 = x.clone()
    x2[~mask] = float("nan")
    assert torch.allclose(pool(x2, mask), pool(x, mask))
    # The pooled vector is the weighted mean of the real steps only.
    expected = (w[1, :3, None] * x[1, :3]).sum(dim=0)
    assert torch.allclose(pool(x, mask)[1], expected, atol=1e-6)


def test_attention_pooling_of_all_padding_row_is_zero() -> None:
    pool = AttentionPooling(4)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 5, [False] * 5])
    out = pool(x, mask)
    assert torch.isfinite(out).all()
    assert torch.all(out[1] == 0)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


def test_attention_pooling_single_real_step_returns_it() -> None:
    pool = AttentionPooling(4)
    x = torch.randn(1, 3, 4)
    mask = torch.tensor([[False, True, False]])
    assert torch.allclose(pool(x, mask)[0], x[0, 1])


def test_score_heads_range_and_shape() -> None:
    heads = ScoreHeads(16, dropout=0.0)
    scores = heads(torch.randn(5, 16) * 100)
    assert scores.shape == (5, N_DIMS)
    assert torch.all((scores >= 0) & (scores <= 1))


def test_score_heads_init_bias_predicts_mean_from_zero_state() -> None:
    heads = ScoreHeads(16, n_dims=3, dropout=0.0)
    mean = torch.tensor([0.3, 0.5, 0.8])
    heads.init_bias(mean)
    # Make the last layer's input irrelevant: zero the weights, so the output is sigmoid(bias).
    with torch.no_grad():
        heads.regression[-1].weight.zero_()
    assert torch.allclose(heads(torch.randn(4, 16)), mean.expand(4, 3), atol=1e-6)
    with pytest.raises(ValueError, match="expected 3"):
        heads.init_bias(torch.ones(5) * 0.5)


def test_rank_logits_are_antisymmetric_and_per_dimension() -> None:
    heads = ScoreHeads(16, dropout=0.1, ranking=True).eval()
    a, b = torch.randn(7, 16), torch.randn(7, 16)
    ab, ba = heads.rank_logits(a, b), heads.rank_logits(b, a)
    assert ab.shape == (7, N_DIMS)
    assert torch.equal(ab, -ba)
    assert torch.all(heads.rank_logits(a, a) == 0)
    # Utilities compose: (a over b) + (b over c) == (a over c).
    c = torch.randn(7, 16)
    assert torch.allclose(ab + heads.rank_logits(b, c), heads.rank_logits(a, c), atol=1e-5)
    # The ranking head is separate from the regression head.
    assert not torch.allclose(heads.utility(a), torch.logit(heads(a)))


def test_score_heads_hold_a_ranking_utility_only_when_asked() -> None:
    heads = ScoreHeads(16)
    assert heads.ranking is None and not any(k.startswith("ranking.") for k in heads.state_dict())
    with pytest.raises(ValueError, match="ranking=True"):
        heads.utility(torch.randn(2, 16))


def test_the_module_trains_the_network_scoring_loads_and_old_checkpoints_still_load() -> None:
    """PerformanceModule's `net` is a ScoreNetwork with nothing that no loss trains (no ranking utility;
    no projection at contrastive weight 0); an earlier checkpoint's `encoder.*`/`heads.*` (with its
    untrained ranking utility and projection) loads into the module and into a plain ScoreNetwork alike."""
    from pianoeval.evaluation.inference import network_state
    from pianoeval.networks.scorer import ScoreNetwork
    from pianoeval.training.checkpoints import module_state
    from pianoeval.training.module import PerformanceModule

    module = PerformanceModule(MeanEncoder()).eval()
    assert type(module.net) is ScoreNetwork and module.projection is None
    assert all(k.startswith("net.") for k in module.state_dict())
    assert not any("ranking" in k for k in module.state_dict())
    batch = {"x": torch.randn(3, 5, 4)}
    old = {k.removeprefix("net."): v for k, v in module.state_dict().items()}
    old.update({f"heads.ranking.{k}": v for k, v in ScoreHeads(4, ranking=True).ranking.state_dict().items()})
    old.update({f"projection.{k}": v for k, v in ProjectionHead(4, 64).state_dict().items()})
    fresh = PerformanceModule(MeanEncoder()).eval()
    fresh.load_state_dict(module_state(old, fresh))
    plain = ScoreNetwork(MeanEncoder()).eval()
    plain.load_state_dict(network_state(old, plain))
    with torch.no_grad():
        assert torch.equal(fresh(batch), module(batch)) and torch.equal(plain(batch), module(batch))
        plain.load_state_dict(network_state(module.state_dict(), plain))  # the current layout
        assert torch.equal(plain(batch), module(batch))


def test_projection_head_unit_norm() -> None:
    proj = ProjectionHead(16, 8)
    out = proj(torch.randn(4, 16))
    assert out.shape == (4, 8)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)
