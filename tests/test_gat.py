"""S2's plain-torch graph layers against torch_geometric's: same parameters, outputs and gradients."""

import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATv2Conv
from torch_geometric.nn.aggr import AttentionalAggregation
from torch_geometric.utils import to_dense_batch as pyg_to_dense_batch

from pianoeval.data.datasets import multi_task_collate_fn
from pianoeval.symbolic.gat import AttentionPool, GATv2, to_dense_batch
from pianoeval.symbolic.graph import NoteGraph
from pianoeval.symbolic.networks import NoteGAT
from pianoeval.symbolic.pretraining import LinkPredictionObjective


def graph(n=9, e=30, edge_dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=g)
    edge_index[:, :2] = torch.tensor([[1, 2], [1, 2]])  # self-loops, which both layers replace
    edge_attr = torch.nn.functional.one_hot(torch.randint(0, edge_dim, (e,), generator=g), edge_dim).float()
    return torch.randn(n, 16, generator=g), edge_index, edge_attr


def test_gatv2_matches_torch_geometric_init_forward_and_backward():
    torch.manual_seed(3)
    ours = GATv2(16, 4, heads=4, edge_dim=4, dropout=0.1)
    torch.manual_seed(3)
    theirs = GATv2Conv(16, 4, heads=4, edge_dim=4, dropout=0.1, fill_value="mean")
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():  # the same random draws in the same order
        assert torch.equal(ours.state_dict()[key], value), key
    x, edge_index, edge_attr = graph()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    for mode in (False, True):  # eval, then training with attention dropout under the same seed
        ours.train(mode)
        theirs.train(mode)
        torch.manual_seed(7)
        out = ours(x_ours, edge_index, edge_attr)
        torch.manual_seed(7)
        ref = theirs(x_theirs, edge_index, edge_attr)
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.att.grad, theirs.att.grad, rtol=1e-5, atol=1e-6)


def test_gatv2_isolated_node_keeps_a_self_loop():
    x, _, _ = graph(n=3)
    layer = GATv2(16, 4, heads=2, edge_dim=4).eval()
    edge_index = torch.tensor([[0], [1]])
    out = layer(x, edge_index, torch.tensor([[1.0, 0, 0, 0]]))
    assert out.shape == (3, 8) and torch.isfinite(out).all()


def test_attention_pool_and_dense_batch_match_torch_geometric():
    torch.manual_seed(5)
    ours = AttentionPool(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)), 8)
    torch.manual_seed(5)
    theirs = AttentionalAggregation(gate_nn=nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)))
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = torch.randn(10, 8)
    index = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    torch.testing.assert_close(ours(x, index=index, dim_size=4), theirs(x, index=index, dim_size=4))
    dense, mask = to_dense_batch(x, index, batch_size=4)
    ref, ref_mask = pyg_to_dense_batch(x, index, batch_size=4)
    assert torch.equal(dense, ref) and torch.equal(mask, ref_mask)


def note_graph(n: int, e: int, seed: int) -> NoteGraph:
    x, edge_index, edge_attr = graph(n=n, e=e, seed=seed)
    return NoteGraph(x=x, edge_index=edge_index, edge_attr=edge_attr, edge_type=edge_attr.argmax(1), num_nodes=n)


def test_note_graph_collate_matches_torch_geometric_batch():
    graphs = [note_graph(9, 30, 0), note_graph(4, 6, 1), note_graph(12, 40, 2)]
    ours = NoteGraph.collate(graphs)
    theirs = Batch.from_data_list([Data(**vars(g)) for g in graphs])
    for field in ("x", "edge_index", "edge_attr", "edge_type", "batch"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field
    assert (ours.num_nodes, ours.num_graphs) == (theirs.num_nodes, theirs.num_graphs)


def test_s2_and_its_pretraining_read_collated_note_graphs():
    """What featurize -> collate gives S2 (NoteGraphs) runs through the encoder and link prediction."""
    torch.manual_seed(0)
    encoder = NoteGAT(16, 4, hidden=16, layers=2, heads=2, dropout=0.0)
    graphs = [note_graph(9, 30, 0), note_graph(12, 40, 2)]
    batch = multi_task_collate_fn([{"graph": g} for g in graphs])
    assert isinstance(batch["graph"], NoteGraph)
    z = encoder(batch)
    alone = torch.cat([encoder({"graph": g}) for g in graphs])  # a lone graph is one graph
    torch.testing.assert_close(z, alone, rtol=1e-5, atol=1e-6)
    loss, terms = LinkPredictionObjective(encoder)(batch)
    assert torch.isfinite(loss) and "link_auc" in terms
