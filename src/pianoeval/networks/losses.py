"""Training losses: within-piece ranking, regression (MSE/CCC), supervised contrastive, invariance.

Every loss returns a scalar tensor. When a batch holds nothing to learn from (no valid pair, a single
group, everything masked) the loss is 0 *connected to the graph* (`inputs.sum() * 0`), so `backward()`
works and yields zero gradients instead of NaN.
"""

from __future__ import annotations

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
