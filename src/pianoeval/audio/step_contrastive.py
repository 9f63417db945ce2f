"""The contrastive term over a whole optimisation step: keys from the other micro-batches and ranks.

With `accumulate_grad_batches = A` micro-batches per step on W DDP ranks, a step holds A x W
micro-batches, but a micro-batch's supervised-contrastive loss only sees its own B items. A
`StepMemory` gives it the rest of the step as extra keys (cross-batch memory, Wang et al. 2020,
"Cross-Batch Memory for Embedding Learning"):

- the current micro-batch of every other rank (all-gathered),
- the projections of the previous A - 1 micro-batches of every rank, kept in a FIFO memory,

all detached: the gradient flows through this rank's own anchors and keys only, so memory and compute
stay those of one micro-batch. Entries older than the current step were computed before the last
optimiser update (at most A - 1 micro-batches old), which cross-batch memory shows to be harmless
for slowly moving embeddings. With A = 1 and one rank the loss is exactly
`losses.supervised_contrastive_loss`.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F


def contrastive_with_keys(
    anchors: torch.Tensor,
    groups: torch.Tensor,
    keys: torch.Tensor | None = None,
    key_groups: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Supervised contrastive loss of anchors [B, H] against themselves and extra `keys` [M, H].

    Positives of anchor i: every other anchor and every key of its group. For each anchor with at least
    one positive: -mean over positives p of log(exp(sim_ip / T) / sum_{a != i} exp(sim_ia / T)); the mean
    over such anchors (0 on the graph when none has a positive).
    """
    g = groups.reshape(-1).to(anchors.device)
    b = len(anchors)
    if keys is None or len(keys) == 0:
        keys = anchors.new_zeros((0, anchors.shape[1]))
        key_groups = g.new_zeros((0,))
    all_keys = torch.cat([anchors, keys.to(anchors.dtype)])
    all_groups = torch.cat([g, key_groups.reshape(-1).to(g.device)])
    self_mask = torch.zeros(b, len(all_keys), dtype=torch.bool, device=anchors.device)
    self_mask[:, :b] = torch.eye(b, dtype=torch.bool, device=anchors.device)
    pos = (g[:, None] == all_groups[None, :]) & ~self_mask
    has_pos = pos.any(dim=1)
    if not bool(has_pos.any()):
        return anchors.sum() * 0.0
    logits = F.normalize(anchors, dim=-1) @ F.normalize(all_keys, dim=-1).T / temperature
    # A finite fill (not -inf) keeps logsumexp and its gradient finite for every row.
    logits = logits.masked_fill(self_mask, torch.finfo(logits.dtype).min)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = torch.where(pos, log_prob, torch.zeros_like(log_prob))
    per_anchor = -log_prob.sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per_anchor[has_pos].mean()


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_from_other_ranks(z: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [M, H], groups [M]) of the other ranks' current micro-batches, detached; empty on one rank.

    Micro-batches may differ in size across ranks (P x K batches), so sizes are exchanged first and
    every rank pads to the largest.
    """
    rank, world = _world()
    if world == 1:
        return z.new_zeros((0, z.shape[1])), groups.new_zeros((0,))
    import torch.distributed as dist

    z = z.detach()
    size = torch.tensor([len(z)], device=z.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    most = int(max(int(s) for s in sizes))
    padded = z.new_zeros((most, z.shape[1]))
    padded[: len(z)] = z
    padded_groups = groups.new_full((most,), -1)
    padded_groups[: len(groups)] = groups.reshape(-1).to(groups.device)
    zs = [torch.zeros_like(padded) for _ in range(world)]
    gs = [torch.zeros_like(padded_groups) for _ in range(world)]
    dist.all_gather(zs, padded)
    dist.all_gather(gs, padded_groups)
    others = [r for r in range(world) if r != rank]
    return (
        torch.cat([zs[r][: int(sizes[r])] for r in others]),
        torch.cat([gs[r][: int(sizes[r])] for r in others]),
    )


class StepMemory:
    """FIFO of the last micro-batches' projections (all ranks), the extra keys of the contrastive term."""

    def __init__(self) -> None:
        self.entries: deque[tuple[torch.Tensor, torch.Tensor]] = deque()
        self.last_n_keys = 0  # keys the last call offered besides the anchors (logged)

    def reset(self) -> None:
        """Forget everything (at each epoch start and at A2's stage switch)."""
        self.entries.clear()

    def keys(
        self, z: torch.Tensor, groups: torch.Tensor, micro_batches_per_step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Extra keys for this micro-batch (other ranks' now + the memory), then remember this
        micro-batch of every rank, keeping the last `micro_batches_per_step - 1`."""
        other_z, other_g = gather_from_other_ranks(z, groups)
        parts = [(other_z, other_g), *self.entries]
        keys = torch.cat([p[0].to(z.device) for p in parts])
        key_groups = torch.cat([p[1].to(groups.device) for p in parts])
        self.entries.append((torch.cat([z.detach(), other_z]), torch.cat([groups.reshape(-1), other_g])))
        while len(self.entries) > max(0, micro_batches_per_step - 1):
            self.entries.popleft()
        self.last_n_keys = len(keys)
        return keys, key_groups
