"""Frame embeddings of one waveform from a frozen backbone, pooled to the cache's frame rate."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


# Frames are averaged down to this rate (per second): enough for phrasing and pedalling,
# small enough that a 40 s segment is 200 frames.
CACHE_FRAME_RATE = 5.0


def pool_frames(emb: torch.Tensor, frame_rate: float, target_rate: float = CACHE_FRAME_RATE) -> torch.Tensor:
    """Average frames [F, D] in windows so the rate becomes `target_rate` → [F', D]."""
    step = max(1, round(frame_rate / target_rate))
    n = emb.shape[0] // step * step
    if n == 0:
        return emb.mean(dim=0, keepdim=True)
    pooled = emb[:n].reshape(-1, step, emb.shape[1]).mean(dim=1)
    if n < emb.shape[0]:
        pooled = torch.cat([pooled, emb[n:].mean(dim=0, keepdim=True)])
    return pooled


def embed_wave(backbone: Any, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
    """Frame embeddings [F', D] of one mono waveform at `sample_rate` (resampled to the backbone's)."""
    if sample_rate != backbone.sample_rate:
        import soxr

        wave = soxr.resample(wave, sample_rate, backbone.sample_rate).astype(np.float32)
    with torch.no_grad():
        # On the backbone's device (the GPU the embed or robustness job reserved); frames come back to the CPU.
        emb, mask = backbone(torch.from_numpy(np.ascontiguousarray(wave))[None].to(module_device(backbone)), None)
    frames = emb[0][mask[0]] if mask is not None else emb[0]
    return pool_frames(frames.float().cpu(), backbone.frame_rate)


def module_device(module: Any) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one that has neither)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")
