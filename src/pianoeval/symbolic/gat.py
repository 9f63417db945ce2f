"""S2's graph layers in plain torch: GATv2 attention, gated attention pooling and per-graph padding.

They compute what torch_geometric's `GATv2Conv` (with `edge_dim`, `fill_value="mean"`, concatenated
heads), `AttentionalAggregation` and `to_dense_batch` compute, with the same parameter names, shapes,
initialisation (the same random draws in the same order) and reduction order, so S2 trains to the
same weights and loads checkpoints written with the library's layers. They exist because importing
torch_geometric takes about 3 s (its package import pulls in torch._dynamo and its dataset zoo), which
`pianoeval score` would pay on every call for three small layers (docs/benchmarks.md, issue 16).
`tests/test_gat.py` checks them against the library's layers, forward and backward. torch_geometric
still provides the training data containers (`Data`/`Batch`) and negative sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pianoeval.networks.heads import weighted_std


def glorot_(value: torch.Tensor) -> None:
    """Uniform in ±sqrt(6 / (fan_in + fan_out)) over the last two dimensions, in place."""
    bound = math.sqrt(6.0 / (value.size(-2) + value.size(-1)))
    value.data.uniform_(-bound, bound)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of the rows of `src` per `index` value along dim 0 → [size, ...]."""
    expanded = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return src.new_zeros((size, *src.shape[1:])).scatter_add_(0, expanded, src)


def scatter_softmax(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Softmax of `src` over the rows that share an `index` value (dim 0)."""
    expanded = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    peak = src.new_zeros((size, *src.shape[1:])).scatter_reduce_(
        0, expanded, src.detach(), reduce="amax", include_self=False
    )
    out = (src - peak.index_select(0, index)).exp()
    total = scatter_sum(out, index, size) + 1e-16
    return out / total.index_select(0, index)


class GlorotLinear(nn.Linear):
    """A linear layer initialised as torch_geometric's `Linear(weight_initializer="glorot")`."""

    def reset_parameters(self) -> None:
        glorot_(self.weight)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            self.bias.data.uniform_(-bound, bound)


class GATv2(nn.Module):
    """GATv2 attention over a graph's edges, with edge features and mean-filled self-loops.

    x [N, in], edge_index [2, E] (source, target), edge_attr [E, edge_dim] → [N, heads * out].
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int, edge_dim: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.out_channels, self.dropout = heads, out_channels, dropout
        self.lin_l = GlorotLinear(in_channels, heads * out_channels)
        self.lin_r = GlorotLinear(in_channels, heads * out_channels)
        self.att = nn.Parameter(torch.empty(1, heads, out_channels))
        self.lin_edge = GlorotLinear(edge_dim, heads * out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(heads * out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_l.reset_parameters()
        self.lin_r.reset_parameters()
        self.lin_edge.reset_parameters()
        glorot_(self.att)
        nn.init.zeros_(self.bias)

    @staticmethod
    def with_self_loops(edge_index: torch.Tensor, edge_attr: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Existing self-loops dropped, one per node added, its features the mean of its incoming edges'."""
        keep = edge_index[0] != edge_index[1]
        edge_index, edge_attr = edge_index[:, keep], edge_attr[keep]
        count = edge_attr.new_zeros(n).scatter_add_(0, edge_index[1], edge_attr.new_ones(edge_index.shape[1]))
        loop_attr = scatter_sum(edge_attr, edge_index[1], n) / count.clamp(min=1).unsqueeze(-1)
        loops = torch.arange(n, device=edge_index.device).view(1, -1).repeat(2, 1)
        return torch.cat([edge_index, loops], dim=1), torch.cat([edge_attr, loop_attr], dim=0)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        h, c, n = self.heads, self.out_channels, x.shape[0]
        x_l, x_r = self.lin_l(x).view(-1, h, c), self.lin_r(x).view(-1, h, c)
        edge_index, edge_attr = self.with_self_loops(edge_index, edge_attr, n)
        source, target = edge_index[0], edge_index[1]
        x_j = x_l.index_select(0, source)
        scores = x_r.index_select(0, target) + x_j + self.lin_edge(edge_attr).view(-1, h, c)
        alpha = (F.leaky_relu(scores, 0.2) * self.att).sum(dim=-1)
        alpha = F.dropout(scatter_softmax(alpha, target, n), p=self.dropout, training=self.training)
        return scatter_sum(x_j * alpha.unsqueeze(-1), target, n).view(-1, h * c) + self.bias


class AttentionPool(nn.Module):
    """Gated attention pooling of nodes of width `hidden`: softmax of `gate_nn(x)` over each graph's nodes,
    then the weighted sum; with `stats`, the weighted standard deviation beside it (`[G, 2H]`;
    networks/heads.AttentionPooling). `out_size`: the pooled width."""

    def __init__(self, gate_nn: nn.Module, hidden: int, stats: bool = False):
        super().__init__()
        self.gate_nn = gate_nn
        self.stats = stats
        self.out_size = 2 * hidden if stats else hidden

    def forward(self, x: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
        gate = scatter_softmax(self.gate_nn(x), index, dim_size)
        mean = scatter_sum(gate * x, index, dim_size)
        if not self.stats:
            return mean
        return torch.cat([mean, weighted_std(scatter_sum(gate * x * x, index, dim_size), mean)], dim=-1)


def to_dense_batch(x: torch.Tensor, index: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Node rows [N, ...] grouped by graph (`index` sorted) → padded [B, N_max, ...] and mask [B, N_max]."""
    counts = torch.bincount(index, minlength=batch_size)
    width = int(counts.max()) if counts.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = index * width + torch.arange(index.shape[0], device=x.device) - starts[index]
    out = x.new_zeros((batch_size * width, *x.shape[1:]))
    out[slot] = x
    mask = torch.zeros(batch_size * width, dtype=torch.bool, device=x.device)
    mask[slot] = True
    return out.view(batch_size, width, *x.shape[1:]), mask.view(batch_size, width)
