"""`symbolic.pooling`: attentive statistics pooling (the weighted mean beside the weighted standard
deviation) in the dense form S1/S3 use and the graph form S2 uses, and its place in the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pianoeval.core.errors import ConfigError
from pianoeval.networks.heads import AttentionPooling
from pianoeval.symbolic.gat import AttentionPool


def _uniform(pool: AttentionPooling) -> AttentionPooling:
    """Every real step the same weight: the scorer's output layer at zero."""
    torch.nn.init.zeros_(pool.score[-1].weight)
    torch.nn.init.zeros_(pool.score[-1].bias)
    return pool


def test_stats_pooling_is_the_mean_and_deviation_of_the_real_steps() -> None:
    torch.manual_seed(0)
    pool = _uniform(AttentionPooling(4, stats=True))
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    x[0, 4:] = 1e6  # padding: never counted
    out = pool(x, mask)
    assert out.shape == (2, 8) and pool.out_size == 8
    for row, n in ((0, 4), (1, 6)):
        real = x[row, :n]
        assert torch.allclose(out[row, :4], real.mean(0), atol=1e-5)
        assert torch.allclose(out[row, 4:], real.std(0, unbiased=False), atol=1e-4)


def test_stats_pooling_tells_spreads_apart_that_a_mean_cannot() -> None:
    """Steady and alternating channels with the same mean: the same mean pool, different stats pools."""
    steady = torch.full((1, 8, 2), 0.5)
    alternating = torch.tensor([0.0, 1.0]).repeat(4).view(1, 8, 1).expand(1, 8, 2).contiguous()
    mean_pool = _uniform(AttentionPooling(2))
    stats_pool = _uniform(AttentionPooling(2, stats=True))
    assert torch.allclose(mean_pool(steady), mean_pool(alternating))
    a, b = stats_pool(steady), stats_pool(alternating)
    assert torch.allclose(a[:, :2], b[:, :2]) and (b[:, 2:] - a[:, 2:] > 0.4).all()


def test_a_constant_or_empty_row_keeps_finite_gradients() -> None:
    pool = AttentionPooling(3, stats=True)
    x = torch.ones(2, 5, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = pool(x, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters() if p.grad is not None)


def test_the_graph_pool_matches_the_dense_pool() -> None:
    """S2's scatter form and S1/S3's dense form give the same statistics for the same gate and nodes."""
    torch.manual_seed(1)
    dense = AttentionPooling(4, stats=True)
    graph = AttentionPool(dense.score, 4, stats=True)
    assert graph.out_size == dense.out_size == 8
    x = torch.randn(7, 4)
    index = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    padded = torch.zeros(2, 4, 4)
    padded[0, :3], padded[1, :4] = x[:3], x[3:]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.allclose(graph(x, index, 2), dense(padded, mask), atol=1e-5)


def test_an_unknown_pooling_is_refused() -> None:
    from pianoeval.core.config import validate_config
    from pianoeval.symbolic.networks import MultiScaleCurveEncoder

    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        MultiScaleCurveEncoder(3, hidden=8, heads=2, pooling="max")
    with pytest.raises(ConfigError, match="pooling"):
        validate_config({"symbolic": {"pooling": "max"}})


def test_changing_it_reruns_only_the_encoders(tmp_path: Path) -> None:
    from pianoeval.core.config import validate_config, write_resolved

    sections = ("features", "symbolic", "training", "seed")
    mean = validate_config({"symbolic": {"models": ["s3", "s3_deep"]}})
    stats = validate_config({"symbolic": {"models": ["s3", "s3_deep"], "pooling": "attention_stats"}})

    def same(model: str) -> bool:
        return write_resolved(stats, tmp_path, sections, model=model) == write_resolved(
            mean, tmp_path, sections, model=model
        )

    assert same("baseline_blend") and same("baseline_ridge")
    assert not any(same(model) for model in ("s3", "s3_deep", "s1", "s2_deep"))


@pytest.mark.parametrize("pooling", ["attention", "attention_stats"])
def test_the_config_reaches_every_encoder(pooling: str) -> None:
    from test_ablations import CONFIG, META

    from pianoeval.core.config import validate_config
    from pianoeval.core.settings import FitSettings
    from pianoeval.training.registry import build_network

    config = validate_config({**CONFIG, "symbolic": {**CONFIG["symbolic"], "hidden": 16, "pooling": pooling}})
    settings = FitSettings.from_config(config)
    deep, wide = build_network("s3_deep", META, settings), build_network("s3", META, settings)
    assert deep.pool.stats == wide.base.pool.stats == (pooling == "attention_stats")
    assert deep.out[1].in_features == (32 if pooling == "attention_stats" else 16)
