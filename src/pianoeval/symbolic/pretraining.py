"""Self-supervised objectives for the symbolic encoders: masked tokens (S1), link prediction (S2),
wav2vec-2.0-style contrastive prediction of quantised curve features (S3).

Each objective is an `nn.Module` that owns its encoder and extra heads; `objective(batch)` returns
`(loss, logs)`, a scalar loss and a dict of detached scalar tensors for logging.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pianoeval.core.errors import ConfigError
from pianoeval.symbolic.networks import MultiScaleCurveEncoder, NoteGAT, REMITransformer

# Label value that cross-entropy ignores (the PyTorch / Hugging Face convention).
IGNORE_INDEX = -100


def _zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero loss attached to the graph (so `backward()` works on a batch with nothing to predict)."""
    return sum(p.sum() for p in module.parameters()) * 0.0


def binary_auc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ROC AUC of `scores [N]` for binary `targets [N]` (Mann-Whitney U, ties averaged); NaN if one class."""
    scores, targets = scores.detach().float().reshape(-1), targets.detach().bool().reshape(-1)
    n_pos, n_neg = int(targets.sum()), int((~targets).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"))
    order = scores.argsort()
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype, device=scores.device)
    # Average ranks within ties: mean of the first and last rank of each run of equal scores.
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(scores.dtype)
    avg = ends - (counts.to(scores.dtype) - 1) / 2
    ranks[order] = avg[inverse]
    u = ranks[targets].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).cpu()


class MaskedTokenObjective(nn.Module):
    """BERT-style masked-token prediction for `REMITransformer`.

    Batch: `input_ids [B, L]` (already masked), `labels [B, L]` (original id at masked positions,
    `IGNORE_INDEX` elsewhere), `attention_mask [B, L]`. The MLM head (dense + GELU + LayerNorm +
    decoder) is only applied at labelled positions; with `tie_weights` its decoder shares the token
    embedding matrix (fewer parameters, better with little data).
    """

    def __init__(self, encoder: REMITransformer, vocab_size: int, tie_weights: bool = True) -> None:
        super().__init__()
        if getattr(encoder, "vocab_size", vocab_size) != vocab_size:
            raise ConfigError(f"MLM vocab_size {vocab_size} differs from the encoder's {encoder.vocab_size}")
        hidden = encoder.hidden_size
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.decoder = nn.Linear(hidden, vocab_size)
        if tie_weights:
            self.decoder.weight = encoder.token_embedding.weight

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(cross-entropy over masked positions, {"mlm_accuracy", "n_masked"})."""
        h, mask = self.encoder.encode_sequence(batch)
        labels = batch["labels"].to(h.device)
        if labels.shape != h.shape[:2]:
            raise ValueError(f"labels {tuple(labels.shape)} do not match input_ids {tuple(h.shape[:2])}")
        # Padding never carries a target, even if a collate left a label there.
        selected = (labels != IGNORE_INDEX) & mask
        n = int(selected.sum())
        if n == 0:
            return _zero_loss(self), {"mlm_accuracy": torch.tensor(float("nan")), "n_masked": torch.tensor(0.0)}
        logits = self.decoder(self.transform(h[selected]))
        target = labels[selected]
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=-1) == target).float().mean()
        return loss, {"mlm_accuracy": acc.detach(), "n_masked": torch.tensor(float(n))}


class LinkPredictionObjective(nn.Module):
    """Link prediction for `NoteGAT`: predict held-out note-graph edges against sampled non-edges.

    Each step hides `holdout_fraction` of the node pairs joined by an edge (both directions and every
    edge type of the pair), runs message passing on the remaining edges, and scores the hidden pairs
    against as many negatives per graph from `torch_geometric.utils.negative_sampling` (pairs not
    joined in the full graph) with an MLP on the symmetric pair features [h_u * h_v, |h_u - h_v|]
    (or a dot product with `scorer="dot"`); binary cross-entropy.
    """

    def __init__(
        self, encoder: NoteGAT, holdout_fraction: float = 0.15, neg_ratio: float = 1.0, scorer: str = "mlp"
    ) -> None:
        super().__init__()
        if not 0.0 < holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        if scorer not in ("mlp", "dot"):
            raise ConfigError(f"unknown link scorer {scorer!r}; known: mlp, dot")
        hidden = encoder.hidden_size
        self.encoder = encoder
        self.holdout_fraction = holdout_fraction
        self.neg_ratio = neg_ratio
        self.scorer = scorer
        self.pair_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def split_edges(
        self, edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(message-passing `edge_index [2, E']`, its `edge_attr [E', D]`, held-out pairs `[2, P]`).

        No held-out pair is joined in the message-passing graph in either direction. At least one pair
        is held out when the graph has any non-loop edge.
        """
        src, dst = edge_index
        lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
        key = lo * num_nodes + hi
        candidates = torch.unique(key[src != dst])
        n_hold = min(len(candidates), max(1, round(self.holdout_fraction * len(candidates)))) if len(candidates) else 0
        held = candidates[torch.randperm(len(candidates), device=key.device)[:n_hold]]
        removed = torch.isin(key, held)
        pos = torch.stack([held // num_nodes, held % num_nodes])
        return edge_index[:, ~removed], edge_attr[~removed], pos

    def _negatives(self, edge_index: torch.Tensor, graph_index: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Negative pairs `[2, M]` sampled within each graph, about `neg_ratio` per held-out pair of that graph."""
        from torch_geometric.utils import negative_sampling

        n_graphs = int(graph_index.max()) + 1 if graph_index.numel() else 0
        nodes_per_graph = torch.bincount(graph_index, minlength=n_graphs)
        ptr = torch.cat([nodes_per_graph.new_zeros(1), nodes_per_graph.cumsum(0)])
        edge_graph = graph_index[edge_index[0]]
        pos_per_graph = torch.bincount(graph_index[pos[0]], minlength=n_graphs)
        out = []
        for g in range(n_graphs):
            want = round(self.neg_ratio * int(pos_per_graph[g]))
            n = int(nodes_per_graph[g])
            if want == 0 or n < 2:
                continue
            local = edge_index[:, edge_graph == g] - ptr[g]
            neg = negative_sampling(local, num_nodes=n, num_neg_samples=want)
            out.append(neg + ptr[g])
        return torch.cat(out, dim=1) if out else pos.new_zeros((2, 0))

    def score_pairs(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Link logits `[P]` for node pairs `[2, P]` from node states `h [N, H]` (symmetric in the pair)."""
        a, b = h[pairs[0]], h[pairs[1]]
        if self.scorer == "dot":
            return (a * b).sum(dim=-1) / a.shape[-1] ** 0.5
        return self.pair_mlp(torch.cat([a * b, (a - b).abs()], dim=-1)).squeeze(-1)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(BCE over held-out edges and negatives, {"link_accuracy", "link_auc", "n_pos"})."""
        graph = batch["graph"]
        n = graph.num_nodes
        graph_index = getattr(graph, "batch", None)
        if graph_index is None:
            graph_index = torch.zeros(n, dtype=torch.long, device=graph.x.device)
        mp_index, mp_attr, pos = self.split_edges(graph.edge_index, graph.edge_attr, n)
        # Negatives avoid every true edge, including the held-out ones.
        neg = self._negatives(graph.edge_index, graph_index, pos)
        h = self.encoder.encode_nodes(graph, edge_index=mp_index, edge_attr=mp_attr)
        if pos.shape[1] == 0 or neg.shape[1] == 0:
            nan = torch.tensor(float("nan"))
            return _zero_loss(self), {"link_accuracy": nan, "link_auc": nan, "n_pos": torch.tensor(0.0)}
        logits = self.score_pairs(h, torch.cat([pos, neg], dim=1))
        targets = torch.cat([logits.new_ones(pos.shape[1]), logits.new_zeros(neg.shape[1])])
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        acc = ((logits > 0).float() == targets).float().mean()
        logs = {
            "link_accuracy": acc.detach(),
            "link_auc": binary_auc(logits, targets),
            "n_pos": torch.tensor(float(pos.shape[1])),
        }
        return loss, logs


class GumbelVectorQuantizer(nn.Module):
    """Product quantiser with Gumbel-softmax code selection (wav2vec 2.0, Baevski et al. 2020).

    `x [B, T, D]` → `q [B, T, out_dim]`: each of `groups` groups picks one of `entries` codewords of size
    `out_dim / groups` (hard one-hot forward, soft straight-through gradient in training; argmax in eval),
    and the picks are concatenated. The temperature decays geometrically per update from `max_temp` to
    `min_temp` (`set_num_updates`). The diversity loss (G·V - perplexity) / (G·V) of the batch-averaged
    soft code distribution, in [0, 1), pushes towards using all codewords.
    """

    def __init__(
        self,
        dim: int,
        groups: int = 2,
        entries: int = 64,
        out_dim: int | None = None,
        max_temp: float = 2.0,
        min_temp: float = 0.5,
        temp_decay: float = 0.995,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        if out_dim % groups:
            raise ConfigError(f"quantiser output size {out_dim} must be a multiple of the groups {groups}")
        if not 0 < min_temp <= max_temp or not 0 < temp_decay <= 1:
            raise ConfigError("quantiser temperatures need 0 < min_temp <= max_temp and 0 < temp_decay <= 1")
        self.groups, self.entries, self.out_dim = groups, entries, out_dim
        self.max_temp, self.min_temp, self.temp_decay = max_temp, min_temp, temp_decay
        self.curr_temp = max_temp
        self.weight_proj = nn.Linear(dim, groups * entries)
        nn.init.normal_(self.weight_proj.weight, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.codevectors = nn.Parameter(torch.empty(groups * entries, out_dim // groups).uniform_())

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal: temperature = max(max_temp * temp_decay ** num_updates, min_temp)."""
        self.curr_temp = max(self.max_temp * self.temp_decay**num_updates, self.min_temp)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"q" [B, T, out_dim], "codes" [B, T, G] long, "diversity_loss", "perplexity" (soft, over real steps)}."""
        bsz, t, _ = x.shape
        g, v = self.groups, self.entries
        logits = self.weight_proj(x).reshape(bsz, t, g, v)
        if mask is None:
            mask = torch.ones(bsz, t, dtype=torch.bool, device=x.device)
        real = logits[mask.to(device=x.device, dtype=torch.bool)]  # [N, G, V]
        avg_probs = torch.softmax(real.float(), dim=-1).mean(dim=0)  # [G, V]
        perplexity = torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(dim=-1)).sum()
        diversity = (g * v - perplexity) / (g * v)
        if self.training:
            one_hot = F.gumbel_softmax(logits.float(), tau=self.curr_temp, hard=True, dim=-1).to(x.dtype)
            codes = one_hot.argmax(dim=-1)  # the sampled codes, not the argmax of the logits
        else:
            codes = logits.argmax(dim=-1)
            one_hot = F.one_hot(codes, v).to(x.dtype)
        book = self.codevectors.reshape(g, v, -1)
        q = torch.einsum("btgv,gvd->btgd", one_hot, book).reshape(bsz, t, self.out_dim)
        return {
            "q": q,
            "codes": codes,
            "diversity_loss": diversity,
            "perplexity": perplexity,
            "code_perplexity": code_perplexity(codes[mask.to(device=x.device, dtype=torch.bool)], v),
        }


def code_perplexity(codes: torch.Tensor, entries: int) -> torch.Tensor:
    """Perplexity of the codes actually picked, `codes [N, G]` of `entries` each: exp(entropy) of each
    group's histogram, summed over groups (G = one code per group, G * entries = all used evenly).

    The soft perplexity (of the averaged softmax) can stay high while the hard picks collapse onto a
    few codes, so this is the figure that says whether the targets still differ."""
    if codes.numel() == 0:
        return torch.tensor(float("nan"))
    counts = F.one_hot(codes.detach().long(), entries).float().sum(dim=0)  # [G, V]
    probs = counts / counts.sum(dim=-1, keepdim=True)
    return torch.exp(-(probs * torch.log(probs + 1e-12)).sum(dim=-1)).sum().cpu()


def compute_span_mask(
    mask: torch.Tensor, mask_prob: float, span: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Span mask `[B, T]` bool over real steps of `mask [B, T]` (wav2vec 2.0 sampling).

    Per sequence of `n` real steps, `round(mask_prob * n / span)` span starts (at least one, at least two
    masked steps where `n >= 2` so a distractor exists) are drawn without replacement among real steps;
    each masks `span` steps, clipped to real steps. Spans may overlap, so fewer than `mask_prob * n`
    steps can end up masked.
    """
    bsz, t = mask.shape
    out = torch.zeros_like(mask, dtype=torch.bool)
    for b in range(bsz):
        real = torch.nonzero(mask[b], as_tuple=False).squeeze(1)
        n = len(real)
        if n == 0:
            continue
        n_spans = min(n, max(1, round(mask_prob * n / span)))
        starts = real[torch.randperm(n, generator=generator, device="cpu")[:n_spans].to(real.device)]
        steps = (starts.unsqueeze(1) + torch.arange(span, device=mask.device)).reshape(-1).clamp(max=t - 1)
        out[b, steps] = True
        out[b] &= mask[b]
        if n >= 2 and int(out[b].sum()) < 2:
            # A single masked step has no distractor in its own sequence: add a second real step.
            free = real[~out[b, real]]
            out[b, free[torch.randint(len(free), (1,), generator=generator).item()]] = True
    return out


class ContrastiveCurveObjective(nn.Module):
    """wav2vec-2.0-style pretraining of `MultiScaleCurveEncoder`.

    CNN features (`encoder.local_features`) are quantised by a `GumbelVectorQuantizer` to form targets;
    spans of the features are replaced by a learned mask embedding before `encoder.contextualise`.
    At each masked step the projected context must pick its own quantised target among
    `num_negatives` distractors drawn (with replacement) from the other masked steps of the same
    sequence: cross-entropy over cosine similarity / `temperature`. Distractors with the target's
    quantised code stay in the softmax (they tie with it): wav2vec 2.0 drops them, which makes a
    collapsed codebook a zero-loss solution, and on PercePiano's curves the codebook collapsed so
    within one epoch (perplexity 2 of 128, contrastive loss 0). Kept, a collapse costs log(1 + N).
    Loss = contrastive +
    `diversity_weight` * codebook diversity loss. Each training-mode call counts one update for the
    quantiser's temperature annealing.
    """

    def __init__(
        self,
        encoder: MultiScaleCurveEncoder,
        codebook_groups: int = 2,
        codebook_entries: int = 64,
        mask_prob: float = 0.5,
        mask_span: int = 5,
        num_negatives: int = 20,
        temperature: float = 0.1,
        diversity_weight: float = 1.0,
        max_temp: float = 2.0,
        min_temp: float = 0.5,
        temp_decay: float = 0.998,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_prob <= 1.0 or mask_span < 1 or num_negatives < 1 or temperature <= 0:
            raise ConfigError("need 0 < mask_prob <= 1, mask_span >= 1, num_negatives >= 1 and temperature > 0")
        hidden = encoder.hidden_size
        self.encoder = encoder
        self.mask_prob, self.mask_span = mask_prob, mask_span
        self.num_negatives, self.temperature, self.diversity_weight = num_negatives, temperature, diversity_weight
        self.quantizer = GumbelVectorQuantizer(
            hidden,
            codebook_groups,
            codebook_entries,
            hidden,
            max_temp=max_temp,
            min_temp=min_temp,
            temp_decay=temp_decay,
        )
        self.project_q = nn.Linear(hidden, hidden)
        self.final_proj = nn.Linear(hidden, hidden)
        self.mask_embedding = nn.Parameter(torch.empty(hidden).uniform_())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def sample_negatives(self, time_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the K masked steps of `time_mask [B, T]` (row-major order): distractor indices `[K, N]` into
        those K steps, all from the same sequence and never the step itself, and a validity mask `[K, N]`
        (False where the sequence has a single masked step)."""
        counts = time_mask.sum(dim=1)  # [B]
        seq = torch.nonzero(time_mask, as_tuple=False)[:, 0]  # [K]
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        k = len(seq)
        rank = torch.arange(k, device=time_mask.device) - starts[seq]
        m = counts[seq]  # masked steps in the step's own sequence
        # Uniform over the m - 1 other steps: draw in [0, m - 1) and skip over the step itself.
        u = (torch.rand(k, self.num_negatives, device=time_mask.device) * (m - 1).clamp(min=1).unsqueeze(1)).long()
        u = u + (u >= rank.unsqueeze(1)).long()
        valid = (m > 1).unsqueeze(1).expand(-1, self.num_negatives)
        idx = (starts[seq].unsqueeze(1) + u.clamp(max=(m - 1).unsqueeze(1))).clamp(max=max(k - 1, 0))
        return idx, valid

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(contrastive + weighted diversity loss, logs: contrastive/diversity/accuracy/perplexity/temp/n_masked)."""
        if self.training:
            self.quantizer.set_num_updates(int(self.num_updates))
            self.num_updates += 1
        feats, mask = self.encoder.local_features(batch["curves"], batch.get("curve_mask"))
        quant = self.quantizer(feats, mask)
        time_mask = compute_span_mask(mask, self.mask_prob, self.mask_span)
        masked_feats = torch.where(time_mask.unsqueeze(-1), self.mask_embedding.to(feats.dtype), feats)
        h = self.encoder.contextualise(masked_feats, mask)
        context = self.final_proj(h[time_mask])  # [K, H]
        targets = self.project_q(quant["q"][time_mask])  # [K, H]
        k = context.shape[0]
        logs: dict[str, torch.Tensor] = {
            "diversity": quant["diversity_loss"].detach(),
            "perplexity": quant["perplexity"].detach(),
            "code_perplexity": quant["code_perplexity"],
            "temp": torch.tensor(self.quantizer.curr_temp),
            "n_masked": torch.tensor(float(k)),
        }
        if k == 0:
            logs.update(contrastive=torch.tensor(float("nan")), accuracy=torch.tensor(float("nan")))
            return self.diversity_weight * quant["diversity_loss"] + _zero_loss(self), logs
        neg_idx, valid = self.sample_negatives(time_mask)
        negatives = targets[neg_idx]  # [K, N, H]
        candidates = torch.cat([targets.unsqueeze(1), negatives], dim=1)  # [K, 1 + N, H]
        logits = F.cosine_similarity(context.unsqueeze(1), candidates, dim=-1) / self.temperature
        # Only distractors that do not exist (a sequence with one masked step) are dropped; one with
        # the target's code ties with it, so a collapsed codebook is the worst case, not a free one.
        drop = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], dim=1)
        logits = logits.masked_fill(drop, float("-inf"))
        contrastive = F.cross_entropy(logits.float(), torch.zeros(k, dtype=torch.long, device=logits.device))
        # Correct = the target beats every distractor of another code strictly (a same-code one is no
        # wrong answer); steps without such a distractor (e.g. a collapsed codebook) are not counted.
        codes = quant["codes"][time_mask]  # [K, G]
        same = (codes[neg_idx] == codes.unsqueeze(1)).all(dim=-1)
        other = logits[:, 1:].masked_fill(same, float("-inf"))
        has_other = ~(drop[:, 1:] | same).all(dim=1)
        accuracy = (logits[:, 0] > other.max(dim=1).values)[has_other].float().mean()
        logs.update(contrastive=contrastive.detach(), accuracy=accuracy.detach())
        loss = contrastive + self.diversity_weight * quant["diversity_loss"]
        return loss, logs
