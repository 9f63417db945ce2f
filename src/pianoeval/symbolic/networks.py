"""Symbolic-track encoders (plain `nn.Module`s): REMI tokens (S1), note graphs (S2), MIDI curves (S3).

Each maps its batch (see docs/architecture.md, "Batches") to `z [B, H]` with `forward(batch)`, has a
`hidden_size`, and exposes `encode_sequence(batch) -> (h [B, T, H], mask [B, T])` (unpooled states for
pretraining; for the GAT the "sequence" is the nodes of each graph, padded).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pianoeval.core.errors import ConfigError, InputError
from pianoeval.networks.heads import AttentionPooling
from pianoeval.symbolic.gat import AttentionPool, GATv2, to_dense_batch


def _check_heads(hidden: int, heads: int) -> None:
    """Multi-head attention splits `hidden` evenly over the heads."""
    if hidden <= 0 or heads <= 0 or hidden % heads:
        raise ConfigError(f"hidden size {hidden} must be a positive multiple of the number of heads {heads}")


def _transformer(hidden: int, layers: int, heads: int, ff: int, dropout: float) -> nn.TransformerEncoder:
    """A pre-norm Transformer encoder stack (batch first)."""
    layer = nn.TransformerEncoderLayer(
        hidden, heads, dim_feedforward=ff, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
    )
    # Nested tensors would drop padded positions and change output shapes between calls.
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _attention_key_mask(mask: torch.Tensor) -> torch.Tensor:
    """`src_key_padding_mask` (True = ignore) from a real-step mask; an all-padding row keeps step 0.

    A row with every key ignored gives NaN attention; its states are never pooled (the pooling mask
    is still all False), so letting it attend to one padded step only keeps the numbers finite.
    """
    keep = mask.clone()
    empty = ~keep.any(dim=1)
    keep[empty, 0] = True
    return ~keep


def _out_projection(hidden: int, pooled: int | None = None) -> nn.Sequential:
    """Pooled state (`pooled` wide, default `hidden`) → z [hidden]: normalised, then one non-linear layer
    (same recipe as the audio encoder)."""
    pooled = hidden if pooled is None else pooled
    return nn.Sequential(nn.LayerNorm(pooled), nn.Linear(pooled, hidden), nn.GELU())


POOLINGS = ("attention", "attention_stats")


def _stats_pooling(pooling: str) -> bool:
    """`symbolic.pooling`: attention (the weighted mean) or attention_stats (mean and deviation)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    return pooling == "attention_stats"


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sinusoidal position encodings `[length, dim]` (Vaswani et al. 2017)."""
    pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class REMITransformer(nn.Module):
    """S1: REMI token ids `input_ids [B, L]` (+ `attention_mask [B, L]`, True = real) → z [B, hidden].

    Token + learned position embeddings, a pre-norm Transformer encoder, masked attention pooling and
    a projection. Positions count real tokens only, so padding (left or right) does not shift them.
    """

    def __init__(
        self,
        vocab_size: int,
        pad_token_id: int,
        hidden: int = 128,
        layers: int = 4,
        heads: int = 4,
        ff: int = 256,
        dropout: float = 0.1,
        max_len: int = 1024,
        pooling: str = "attention",
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        if not 0 <= pad_token_id < vocab_size:
            raise ConfigError(f"pad_token_id {pad_token_id} is outside the vocabulary of size {vocab_size}")
        self.hidden_size = hidden
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, hidden, padding_idx=pad_token_id)
        self.position_embedding = nn.Embedding(max_len, hidden)
        # BERT's small init: with the MLM decoder tied to the token embedding, N(0, 1) rows would start
        # the logits far from uniform (initial loss several times log V).
        for emb in (self.token_embedding, self.position_embedding):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[pad_token_id].zero_()
        self.embed_dropout = nn.Dropout(dropout)
        self.context = _transformer(hidden, layers, heads, ff, dropout)
        # norm_first leaves the stack's output un-normalised; the MLM head and pooling expect a normalised state.
        self.final_norm = nn.LayerNorm(hidden)
        self.pool = AttentionPooling(hidden, stats=_stats_pooling(pooling))
        self.out = _out_projection(hidden, self.pool.out_size)

    def _mask(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = batch["input_ids"]
        if ids.dim() != 2:
            raise InputError(f"input_ids must be [B, L], got shape {tuple(ids.shape)}")
        mask = batch.get("attention_mask")
        mask = ids != self.pad_token_id if mask is None else mask.to(device=ids.device, dtype=torch.bool)
        return ids, mask

    def encode_sequence(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual token states `h [B, L, H]` and the real-token mask `[B, L]`."""
        ids, mask = self._mask(batch)
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        if ids.shape[1] and int(positions.max()) >= self.max_len:
            raise InputError(f"token sequence of {int(positions.max()) + 1} tokens exceeds max_len {self.max_len}")
        x = self.token_embedding(ids) + self.position_embedding(positions)
        h = self.context(self.embed_dropout(x), src_key_padding_mask=_attention_key_mask(mask))
        return self.final_norm(h), mask

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden]."""
        h, mask = self.encode_sequence(batch)
        return self.out(self.pool(h, mask))


class NoteGAT(nn.Module):
    """S2: note graphs (`batch["graph"]`, a batched `symbolic.graph.NoteGraph`; a torch_geometric `Batch`
    works too) → z [B, hidden]. The layers are plain torch (`symbolic/gat.py`).

    Node features are projected to `hidden`, then `layers` GATv2 convolutions that read the one-hot
    edge types as edge features, each with a residual connection and LayerNorm (post-norm), and a
    gated attention pooling over the nodes of each graph.
    """

    def __init__(
        self,
        in_features: int,
        edge_dim: int,
        hidden: int = 128,
        layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        pooling: str = "attention",
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        self.hidden_size = hidden
        self.in_features = in_features
        self.edge_dim = edge_dim
        self.input_proj = nn.Linear(in_features, hidden)
        self.convs = nn.ModuleList(
            # Self-loops take the mean of a node's incoming edge features, so isolated notes still update.
            GATv2(hidden, hidden // heads, heads=heads, edge_dim=edge_dim, dropout=dropout)
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        stats = _stats_pooling(pooling)
        gate = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.pool = AttentionPool(gate, hidden, stats=stats)
        self.out = _out_projection(hidden, self.pool.out_size)

    def _check(self, graph: Any) -> None:
        if graph.x is None or graph.x.dim() != 2 or graph.x.shape[1] != self.in_features:
            shape = None if graph.x is None else tuple(graph.x.shape)
            raise InputError(f"graph node features must be [N, {self.in_features}], got {shape}")
        if graph.edge_attr is None or graph.edge_attr.shape != (graph.edge_index.shape[1], self.edge_dim):
            shape = None if graph.edge_attr is None else tuple(graph.edge_attr.shape)
            raise InputError(f"graph edge_attr must be [E, {self.edge_dim}] one-hot edge types, got {shape}")

    def encode_nodes(
        self, graph: Any, edge_index: torch.Tensor | None = None, edge_attr: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Node states `h [N, H]`; `edge_index`/`edge_attr` override the graph's edges (held-out links)."""
        self._check(graph)
        if edge_index is None:
            edge_index, edge_attr = graph.edge_index, graph.edge_attr
        edge_attr = edge_attr.to(graph.x.dtype)
        h = self.input_proj(graph.x)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = norm(h + self.dropout(F.gelu(conv(h, edge_index, edge_attr))))
        return h

    @staticmethod
    def _graph_index(graph: Any) -> tuple[torch.Tensor, int]:
        """Graph id per node `[N]` and the number of graphs (a lone `Data` is one graph)."""
        index = getattr(graph, "batch", None)
        if index is None:
            return torch.zeros(graph.num_nodes, dtype=torch.long, device=graph.x.device), 1
        return index, int(getattr(graph, "num_graphs", int(index.max()) + 1 if index.numel() else 0))

    def encode_sequence(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Node states padded per graph `h [B, N_max, H]` and the real-node mask `[B, N_max]`."""
        graph = batch["graph"]
        index, n_graphs = self._graph_index(graph)
        return to_dense_batch(self.encode_nodes(graph), index, batch_size=n_graphs)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden]."""
        graph = batch["graph"]
        index, n_graphs = self._graph_index(graph)
        pooled = self.pool(self.encode_nodes(graph), index=index, dim_size=n_graphs)
        return self.out(pooled)


class MultiScaleCurveEncoder(nn.Module):
    """S3: continuous MIDI curves `curves [B, T, C]` (+ `curve_mask [B, T]`) → z [B, hidden].

    Two stages, exposed separately for wav2vec-style pretraining:
    `local_features`: parallel 1-D convolutions (kernels 3, 7, 15 frames: note, beat and phrase-ish
    scales at 20 fps) → concatenated → a strided convolution that projects and downsamples by
    `downsample` → LayerNorm; `contextualise`: sinusoidal positions + a pre-norm Transformer.
    Padded frames are zeroed before every convolution, so a sample's features do not depend on how
    much padding follows it.

    `score_channels` (start, stop): the score-aligned curves, all 0 when a performance has no score.
    In training each sample's are zeroed with probability `score_dropout`, so that a model trained
    on scored data still predicts sensibly for a recording without a score; `batch["score_missing"]
    [B]` (set by a wide & deep side input that drops the score statistics) zeroes exactly those rows
    instead, so that the statistics and the curves lose their score together.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 128,
        kernels: tuple[int, ...] = (3, 7, 15),
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        downsample: int = 2,
        pooling: str = "attention",
        score_channels: tuple[int, int] | None = None,
        score_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        if score_channels is not None and not 0 <= score_channels[0] < score_channels[1] <= in_channels:
            raise ConfigError(f"score_channels {score_channels} do not lie in the {in_channels} curves")
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ConfigError(f"curve kernels must be odd positive sizes (centred windows), got {kernels}")
        if downsample < 1:
            raise ConfigError(f"downsample must be >= 1, got {downsample}")
        self.hidden_size = hidden
        self.in_channels = in_channels
        self.downsample = downsample
        self.score_channels = tuple(score_channels) if score_channels is not None else None
        self.score_dropout = float(score_dropout)
        self.branches = nn.ModuleList(nn.Conv1d(in_channels, hidden, k, padding=k // 2) for k in kernels)
        self.merge = nn.Conv1d(hidden * len(kernels), hidden, downsample, stride=downsample)
        self.feature_norm = nn.LayerNorm(hidden)
        self.feature_dropout = nn.Dropout(dropout)
        self.context = _transformer(hidden, layers, heads, 2 * hidden, dropout)
        self.final_norm = nn.LayerNorm(hidden)
        self.pool = AttentionPooling(hidden, stats=_stats_pooling(pooling))
        self.out = _out_projection(hidden, self.pool.out_size)

    def local_features(
        self, curves: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CNN features `[B, T', H]` (T' = ceil(T / downsample)) and their mask `[B, T']`."""
        if curves.dim() != 3 or curves.shape[2] != self.in_channels:
            raise InputError(f"curves must be [B, T, {self.in_channels}], got shape {tuple(curves.shape)}")
        if mask is None:
            mask = torch.ones(curves.shape[:2], dtype=torch.bool, device=curves.device)
        mask = mask.to(device=curves.device, dtype=torch.bool)
        keep = mask.unsqueeze(1).to(curves.dtype)  # [B, 1, T]
        x = curves.transpose(1, 2) * keep
        x = torch.cat([F.gelu(branch(x)) for branch in self.branches], dim=1) * keep
        pad = (-x.shape[2]) % self.downsample
        x = F.pad(x, (0, pad))
        # A downsampled step is real if any frame in its window is real.
        mask_ds = F.max_pool1d(F.pad(keep, (0, pad)), self.downsample, self.downsample).squeeze(1) > 0
        feats = self.feature_norm(self.merge(x).transpose(1, 2))
        return feats, mask_ds

    def contextualise(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Contextual states `h [B, T', H]` from (possibly masked) features `[B, T', H]` and mask `[B, T']`."""
        # Positions count real steps, as in S1, so they do not depend on padding.
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        table = sinusoidal_positions(feats.shape[1], feats.shape[2], feats.device).to(feats.dtype)
        x = feats + table[positions]
        h = self.context(self.feature_dropout(x), src_key_padding_mask=_attention_key_mask(mask))
        return self.final_norm(h)

    def drop_score(self, curves: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """`curves [B, T, C]` with the score channels of the `missing [B]` rows at 0 (absent: in
        training, each row with probability `score_dropout`; in evaluation, none)."""
        if self.score_channels is None:
            return curves
        if missing is None:
            if not (self.training and self.score_dropout > 0):
                return curves
            missing = torch.rand(curves.shape[0], device=curves.device) < self.score_dropout
        start, stop = self.score_channels
        keep = torch.ones(curves.shape[0], 1, curves.shape[2], dtype=curves.dtype, device=curves.device)
        keep[:, :, start:stop] = (~missing.to(device=curves.device, dtype=torch.bool)).to(curves.dtype).view(-1, 1, 1)
        return curves * keep

    def encode_sequence(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual states `h [B, T', H]` and mask `[B, T']` (downsampled time)."""
        curves = self.drop_score(batch["curves"], batch.get("score_missing"))
        feats, mask = self.local_features(curves, batch.get("curve_mask"))
        return self.contextualise(feats, mask), mask

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, hidden]."""
        h, mask = self.encode_sequence(batch)
        return self.out(self.pool(h, mask))
