"""Training losses: within-piece ranking, ListMLE, regression (MSE/CCC), contrastive, invariance, ordinal.

Every loss returns a scalar tensor. When a batch holds nothing to learn from (no valid pair, a single
group, everything masked) the loss is 0 *connected to the graph* (`inputs.sum() * 0`), so `backward()`
works and yields zero gradients instead of NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pianoeval.core.constants import AMBIGUOUS_THRESHOLD
from pianoeval.core.errors import ConfigError


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that depends on `tensors`, so backward() runs (with zero gradients)."""
    return sum((t.sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    """[B] → [B, 1]; [B, D] unchanged."""
    return x.unsqueeze(-1) if x.dim() == 1 else x


def _same_group_upper(groups: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: True for i < j with groups[i] == groups[j]."""
    g = groups.reshape(-1)
    same = g[:, None] == g[None, :]
    return torch.triu(same, diagonal=1)


def pair_ranking_loss(logits: torch.Tensor, target_sign: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logistic loss on explicit pair logits [P, D] (logit > 0 means "a above b") with signs ±1 [P, D].

    Mean of softplus(-sign * logit) over entries where `mask` [P, D] is True (and the sign is nonzero).
    """
    logits, target_sign = _as_2d(logits), _as_2d(target_sign).to(logits.dtype)
    valid = _as_2d(mask).bool() & (target_sign != 0)
    if not bool(valid.any()):
        return _zero(logits)
    # Zero the sign where invalid so that a NaN there cannot leak into the gradient.
    sign = torch.where(valid, target_sign, torch.zeros_like(target_sign))
    terms = F.softplus(-sign * logits)
    return terms[valid].mean()


def pairwise_ranking_loss(
    scores: torch.Tensor,
    targets: torch.Tensor,
    groups: torch.Tensor,
    threshold: float = AMBIGUOUS_THRESHOLD,
    margin: float = 0.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """Within-group logistic ranking loss of scores [B, D] against targets [B, D] with groups [B].

    For every pair i < j in one group and every dimension with |t_i - t_j| >= threshold:
    softplus(margin - sign(t_i - t_j) * (s_i - s_j) * scale); the mean over all such (pair, dim).
    """
    scores, targets = _as_2d(scores), _as_2d(targets).to(scores.dtype)
    pair = _same_group_upper(groups.to(scores.device))  # [B, B]
    dt = targets[:, None, :] - targets[None, :, :]  # [B, B, D]
    valid = pair[:, :, None] & (dt.abs() >= threshold) & (dt != 0)  # NaN targets compare False
    if not bool(valid.any()):
        return _zero(scores)
    sign = torch.where(valid, torch.sign(dt), torch.zeros_like(dt))
    ds = scores[:, None, :] - scores[None, :, :]
    terms = F.softplus(margin - sign * ds * scale)
    return terms[valid].mean()


def listmle_loss(scores: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """ListMLE over each group's performances, per dimension: scores [B, D], targets [B, D], groups [B].

    For a group sorted by target (best first) the loss is -log P(order) under the Plackett-Luce
    model, sum_k [logsumexp(s_k..s_n) - s_k]; the mean over (group, dimension) lists of length >= 2.
    Target ties are ordered arbitrarily (by index), as in the usual ListMLE.
    """
    scores, targets = _as_2d(scores), _as_2d(targets).to(scores.dtype)
    g = groups.reshape(-1).to(scores.device)
    losses = []
    for value in torch.unique(g):
        idx = torch.nonzero(g == value).reshape(-1)
        if len(idx) < 2:
            continue
        s, t = scores[idx], targets[idx]  # [n, D]
        order = torch.argsort(t, dim=0, descending=True, stable=True)
        s_sorted = torch.gather(s, 0, order)
        # logsumexp of each suffix s_k..s_n, via a reversed cumulative logsumexp.
        suffix_lse = torch.logcumsumexp(s_sorted.flip(0), dim=0).flip(0)
        losses.append((suffix_lse - s_sorted).sum(dim=0))  # [D]
    if not losses:
        return _zero(scores)
    return torch.cat(losses).mean()


def regression_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "mse", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Regression loss of pred [B, D] vs target [B, D]; `mask` [B] or [B, D] bool selects labelled entries.

    `mse`: mean squared error over selected entries. `ccc`: 1 - Lin's concordance correlation per
    dimension (over selected rows), averaged over dimensions with >= 2 rows; 0 for identical inputs.
    """
    pred, target = _as_2d(pred), _as_2d(target).to(pred.dtype)
    if mask is None:
        valid = torch.ones_like(pred, dtype=torch.bool)
    else:
        m = mask.bool().to(pred.device)
        valid = (m[:, None] if m.dim() == 1 else m).expand_as(pred)
    valid = valid & torch.isfinite(target)
    target = torch.where(valid, target, torch.zeros_like(target))  # no NaN reaches the gradient
    if kind == "mse":
        if not bool(valid.any()):
            return _zero(pred)
        return ((pred - target) ** 2)[valid].mean()
    if kind == "ccc":
        w = valid.to(pred.dtype)
        n = w.sum(dim=0)  # [D]
        usable = n >= 2
        if not bool(usable.any()):
            return _zero(pred)
        n_safe = n.clamp(min=1)
        mu_p, mu_t = (w * pred).sum(0) / n_safe, (w * target).sum(0) / n_safe
        dp, dt = (pred - mu_p) * w, (target - mu_t) * w
        var_p, var_t = (dp**2).sum(0) / n_safe, (dt**2).sum(0) / n_safe
        cov = (dp * dt).sum(0) / n_safe
        ccc = 2 * cov / (var_p + var_t + (mu_p - mu_t) ** 2 + 1e-8)
        return (1 - ccc)[usable].mean()
    raise ConfigError(f"unknown regression loss kind {kind!r}; use 'mse' or 'ccc'")


def info_nce_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between two views z_a [B, H], z_b [B, H]: row i of each is the positive pair.

    Cosine similarities / temperature; cross-entropy a→b and b→a averaged. 0 for a batch of one.
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a {tuple(z_a.shape)} and z_b {tuple(z_b.shape)} differ")
    if z_a.shape[0] < 2:
        return _zero(z_a, z_b)
    a, b = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def supervised_contrastive_loss(
    z: torch.Tensor,
    groups: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of z [B, H]; positives share a group [B].

    For each anchor with at least one positive: -mean over positives p of
    log(exp(sim_ip / T) / sum_{a != i} exp(sim_ia / T)); the mean over such anchors.
    """
    g = groups.reshape(-1).to(z.device)
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (g[:, None] == g[None, :]) & ~eye
    has_pos = pos.any(dim=1)
    if not bool(has_pos.any()):
        return _zero(z)
    zn = F.normalize(z, dim=-1)
    logits = zn @ zn.T / temperature
    # A finite fill (not -inf) keeps logsumexp and its gradient finite for every row.
    logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = torch.where(pos, log_prob, torch.zeros_like(log_prob))
    per_anchor = -log_prob.sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per_anchor[has_pos].mean()


def invariance_loss(z_clean: torch.Tensor, z_aug: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Distance between clean and augmented embeddings [B, H]: mean (1 - cosine) or mean squared error."""
    if z_clean.shape != z_aug.shape:
        raise ValueError(f"z_clean {tuple(z_clean.shape)} and z_aug {tuple(z_aug.shape)} differ")
    if kind == "cosine":
        return (1 - F.cosine_similarity(z_clean, z_aug, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(z_aug, z_clean)
    raise ConfigError(f"unknown invariance loss kind {kind!r}; use 'cosine' or 'mse'")


def ordinal_loss(
    scores: torch.Tensor, placements: torch.Tensor, competition: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """Pairwise logistic loss on placements: scores [B] (or [B, 1]), placements [B], competition [B].

    Within one competition round (same `competition` id) a performer with a lower placement number
    (1 = winner) should score higher: for each such pair (better, worse) the term is
    softplus(margin - (s_better - s_worse)), a smooth margin-ranking loss; the mean over pairs.
    Equal placements (shared prizes) form no pair.
    """
    s = scores.reshape(len(scores), -1)
    if s.shape[1] != 1:
        raise ValueError(f"ordinal_loss expects one score per performance, got {tuple(scores.shape)}")
    s = s[:, 0]
    p = placements.reshape(-1).to(s.device)
    c = competition.reshape(-1).to(s.device)
    better = (c[:, None] == c[None, :]) & (p[:, None] < p[None, :])  # [i, j]: i placed above j
    if not bool(better.any()):
        return _zero(scores)
    ds = s[:, None] - s[None, :]
    return F.softplus(margin - ds)[better].mean()


class CompositeLoss:
    """A weighted sum of named loss terms: `(total, parts) = CompositeLoss(weights)(terms)`.

    `parts` holds each weighted-in term detached, for logging. A term whose name has no weight is a
    configuration error (a typo would otherwise drop it silently); weights of absent terms are ignored.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = {str(k): float(v) for k, v in weights.items()}

    def __call__(self, terms: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum weight * term over `terms` with nonzero weight → (total scalar, {name: term.detach()})."""
        unknown = sorted(set(terms) - set(self.weights))
        if unknown:
            raise ConfigError(f"loss terms {unknown} have no weight; known: {sorted(self.weights)}")
        used = {name: value for name, value in terms.items() if self.weights[name] != 0.0}
        if not used:
            raise ConfigError(f"no loss term with a nonzero weight among {sorted(terms)}")
        total = sum(self.weights[name] * value for name, value in used.items())
        return total, {name: value.detach() for name, value in used.items()}
