"""Tests of the symbolic encoders S1 (REMI Transformer), S2 (note GAT), S3 (multi-scale curve encoder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from pianoeval.core.errors import ConfigError, InputError
from pianoeval.symbolic.networks import MultiScaleCurveEncoder, NoteGAT, REMITransformer

HIDDEN = 32
VOCAB = 40
PAD = 0
NODE_F = 6
EDGE_T = 3
CURVE_C = 5


def random_graph(n: int, e: int, seed: int) -> Data:
    """A random note graph with one-hot edge types (both directions of each drawn pair)."""
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    types = torch.randint(0, EDGE_T, (e,), generator=g)
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    edge_attr = F.one_hot(torch.cat([types, types]), EDGE_T).float()
    return Data(x=torch.randn(n, NODE_F, generator=g), edge_index=edge_index, edge_attr=edge_attr)


def token_batch(lengths: list[int], total: int | None = None, seed: int = 0) -> dict[str, Any]:
    """`input_ids [B, L]` right-padded with PAD, `attention_mask [B, L]`."""
    g = torch.Generator().manual_seed(seed)
    total = max(lengths) if total is None else total
    ids = torch.full((len(lengths), total), PAD, dtype=torch.long)
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, VOCAB, (n,), generator=g)
        mask[i, :n] = True
    return {"input_ids": ids, "attention_mask": mask}


def curve_batch(lengths: list[int], total: int | None = None, seed: int = 0) -> dict[str, Any]:
    """`curves [B, T, C]` right-padded with zeros, `curve_mask [B, T]`."""
    g = torch.Generator().manual_seed(seed)
    total = max(lengths) if total is None else total
    curves = torch.zeros(len(lengths), total, CURVE_C)
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    for i, n in enumerate(lengths):
        curves[i, :n] = torch.randn(n, CURVE_C, generator=g)
        mask[i, :n] = True
    return {"curves": curves, "curve_mask": mask}


def make_s1(pooling: str = "attention") -> REMITransformer:
    return REMITransformer(
        VOCAB, PAD, hidden=HIDDEN, layers=2, heads=4, ff=64, dropout=0.1, max_len=64, pooling=pooling
    )


def make_s2(pooling: str = "attention") -> NoteGAT:
    return NoteGAT(NODE_F, EDGE_T, hidden=HIDDEN, layers=2, heads=4, dropout=0.1, pooling=pooling)


def make_s3(pooling: str = "attention") -> MultiScaleCurveEncoder:
    return MultiScaleCurveEncoder(CURVE_C, hidden=HIDDEN, layers=2, heads=4, dropout=0.1, downsample=2, pooling=pooling)


def s1_batch() -> dict[str, Any]:
    return token_batch([12, 7, 9])


def s2_batch() -> dict[str, Any]:
    return {"graph": Batch.from_data_list([random_graph(8, 12, 1), random_graph(5, 6, 2), random_graph(6, 9, 3)])}


def s3_batch() -> dict[str, Any]:
    return curve_batch([30, 17, 23])


CASES: list[tuple[Callable[[], torch.nn.Module], Callable[[], dict[str, Any]], str]] = [
    (make_s1, s1_batch, "token_embedding.weight"),
    (make_s2, s2_batch, "input_proj.weight"),
    (make_s3, s3_batch, "branches.0.weight"),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("pooling", ["attention", "attention_stats"])
@pytest.mark.parametrize(("make", "make_batch", "first_param"), CASES, ids=["S1", "S2", "S3"])
def test_encoder_shape_gradients_and_determinism(
    make: Callable[..., torch.nn.Module], make_batch: Callable[[], dict[str, Any]], first_param: str, pooling: str
) -> None:
    model = make(pooling)
    batch = make_batch()
    assert model.hidden_size == HIDDEN
    z = model(batch)
    assert z.shape == (3, HIDDEN)
    assert torch.isfinite(z).all()
    z.pow(2).sum().backward()
    grad = dict(model.named_parameters())[first_param].grad
    assert grad is not None and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))
        # Dropout is active in train mode, so eval mode is what makes the output repeatable.
        h, mask = model.encode_sequence(batch)
    assert h.shape[0] == 3 and h.shape[2] == HIDDEN and mask.shape == h.shape[:2]
    assert mask.dtype == torch.bool


@pytest.mark.parametrize(
    ("make", "batch_fn"),
    [
        (make_s1, lambda total: token_batch([9], total=total, seed=5)),
        (make_s3, lambda total: curve_batch([21], total=total, seed=5)),
    ],
    ids=["S1", "S3"],
)
@pytest.mark.parametrize("pooling", ["attention", "attention_stats"])
def test_padding_does_not_change_z(
    make: Callable[..., torch.nn.Module], batch_fn: Callable[[int | None], dict], pooling: str
) -> None:
    model = make(pooling).eval()
    with torch.no_grad():
        alone = model(batch_fn(None))
        padded = model(batch_fn(40))
    assert torch.allclose(alone, padded, atol=1e-5)


def test_s1_batching_with_longer_neighbour_matches_alone() -> None:
    model = make_s1().eval()
    both = token_batch([6, 15], seed=3)
    alone = {k: v[:1, :6] for k, v in both.items()}
    with torch.no_grad():
        assert torch.allclose(model(both)[0], model(alone)[0], atol=1e-5)


def test_s1_positions_ignore_left_padding() -> None:
    model = make_s1().eval()
    right = token_batch([7], total=10, seed=4)
    left = {k: torch.roll(v, shifts=3, dims=1) for k, v in right.items()}
    with torch.no_grad():
        assert torch.allclose(model(right), model(left), atol=1e-5)


def test_s1_mask_defaults_to_non_pad_tokens_and_rejects_too_long() -> None:
    model = make_s1().eval()
    batch = token_batch([5, 8], seed=2)
    with torch.no_grad():
        assert torch.allclose(model(batch), model({"input_ids": batch["input_ids"]}), atol=1e-6)
    with pytest.raises(InputError, match="exceeds max_len"):
        model(token_batch([65]))


@pytest.mark.parametrize("pooling", ["attention", "attention_stats"])
def test_s2_batched_graphs_match_each_alone(pooling: str) -> None:
    model = make_s2(pooling).eval()
    graphs = [random_graph(8, 12, 1), random_graph(5, 6, 2)]
    with torch.no_grad():
        together = model({"graph": Batch.from_data_list(graphs)})
        alone = [model({"graph": Batch.from_data_list([g])})[0] for g in graphs]
        # A lone Data (no batch vector) is one graph.
        lone = model({"graph": graphs[1]})[0]
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    assert torch.allclose(together[1], alone[1], atol=1e-5)
    assert torch.allclose(lone, alone[1], atol=1e-5)


def test_s2_uses_edge_types_and_structure() -> None:
    model = make_s2().eval()
    g = random_graph(8, 12, 1)
    retyped = g.clone()
    retyped.edge_attr = retyped.edge_attr.roll(1, dims=1)
    with torch.no_grad():
        h = model.encode_nodes(g)
        assert h.shape == (8, HIDDEN)
        assert not torch.allclose(h, model.encode_nodes(retyped), atol=1e-4)
        # Passing no edges (message passing over self-loops only) changes the node states too.
        no_edges = model.encode_nodes(g, edge_index=g.edge_index[:, :0], edge_attr=g.edge_attr[:0])
        assert torch.isfinite(no_edges).all()
        assert not torch.allclose(h, no_edges, atol=1e-4)


def test_s2_encode_sequence_pads_nodes_per_graph() -> None:
    model = make_s2().eval()
    batch = {"graph": Batch.from_data_list([random_graph(8, 12, 1), random_graph(5, 6, 2)])}
    h, mask = model.encode_sequence(batch)
    assert h.shape == (2, 8, HIDDEN)
    assert mask.sum(dim=1).tolist() == [8, 5]


def test_s2_rejects_wrong_feature_sizes() -> None:
    model = make_s2()
    g = random_graph(4, 4, 0)
    g.edge_attr = g.edge_attr[:, :2]
    with pytest.raises(InputError, match="edge_attr"):
        model({"graph": g})


def test_s3_downsampled_mask_and_local_features() -> None:
    model = make_s3().eval()
    batch = curve_batch([11, 6], total=12)
    feats, mask = model.local_features(batch["curves"], batch["curve_mask"])
    assert feats.shape == (2, 6, HIDDEN)
    # ceil(11 / 2) = 6 and ceil(6 / 2) = 3 real downsampled steps.
    assert mask.sum(dim=1).tolist() == [6, 3]
    assert mask[1].tolist() == [True, True, True, False, False, False]
    h = model.contextualise(feats, mask)
    assert h.shape == feats.shape


def test_s3_multi_scale_kernels_see_different_context() -> None:
    model = MultiScaleCurveEncoder(CURVE_C, hidden=HIDDEN, layers=1, downsample=1).eval()
    curves = torch.zeros(1, 40, CURVE_C)
    curves[0, 20] = 1.0  # an impulse: each branch responds over its own kernel width
    x = curves.transpose(1, 2)
    widths = []
    for branch in model.branches:
        response = (branch(x) - branch(torch.zeros_like(x))).abs().sum(dim=1)[0]
        widths.append(int((response > 0).sum()))
    assert widths == [3, 7, 15]


def test_invalid_sizes_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        REMITransformer(VOCAB, PAD, hidden=30, heads=4)
    with pytest.raises(ConfigError, match="odd"):
        MultiScaleCurveEncoder(CURVE_C, kernels=(3, 4))
