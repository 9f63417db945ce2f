"""Scores and embeddings of every split of a fold from a trained network, in bounded batches."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pianoeval.core.constants import DIMENSIONS
from pianoeval.training.data import FoldData

log = logging.getLogger(__name__)


def predict_network(
    module: Any, data: FoldData, batch_size: int, device: Any = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scores and embeddings of every split from a trained module (a `ScoreModule`, or a `ScoreNetwork`:
    both have `embed_and_score` and `hidden_size`/`encoder`), in eval mode, in batches of `batch_size` on
    `device` (the one its training reserved: core.device.resolve_device; None = where it is)."""
    from pianoeval.core.device import to_device
    from pianoeval.data.datasets import multi_task_collate_fn

    module.eval()
    if device is not None:
        module.to(device)
    preds: dict[str, np.ndarray] = {}
    embs: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for split in data.splits:
            items = data.subset(split)
            if not items:
                preds[split] = np.zeros((0, len(DIMENSIONS)))
                embs[split] = np.zeros((0, module.encoder.hidden_size))
                continue
            dataset = data.dataset(split)  # the items, or their waveforms (first window, no augmentation)
            p, e = [], []
            for start in range(0, len(items), batch_size):
                batch = multi_task_collate_fn([dataset[i] for i in range(start, min(start + batch_size, len(items)))])
                if device is not None:
                    batch = to_device(batch, device)
                z, scores = module.embed_and_score(batch)
                p.append(scores.float().cpu().numpy())
                e.append(z.float().cpu().numpy())
            preds[split], embs[split] = np.concatenate(p), np.concatenate(e)
    return preds, embs
