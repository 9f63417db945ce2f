"""Which device a step runs on: the GPU its rule reserved, when CUDA has one, else the CPU.

Every rule that can use a GPU declares `gpu` in its resources and passes it as `--devices N`; the step
resolves it here, so a job holding the GPU computes on it (and a job given `gpu=0`, e.g. by the local
profile, stays on the CPU even on a GPU machine).
"""

from __future__ import annotations

from typing import Any

# The largest number of recordings an inference step (robustness, embedding checks) puts in one
# forward pass: 8 windows of 30 s through MuQ-large fit a GPU, a fold's whole validation set may not.
INFERENCE_BATCH = 8


def resolve_device(devices: int | None = None, requested: str = "auto") -> Any:
    """torch.device for a step: `requested` ("cpu", "cuda", "cuda:1") if not "auto"; else CUDA when the
    rule reserved devices (`devices` > 0, or None = no reservation known) and CUDA is available."""
    import torch

    from pianoeval.core.errors import ConfigError

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but CUDA sees no GPU")
        return torch.device(requested)
    wants_gpu = devices is None or devices > 0
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A collated batch with every tensor and graph moved to `device` (ids and other values as they are)."""
    import torch

    def movable(value: Any) -> bool:  # a tensor, or a graph (symbolic.graph.NoteGraph, torch_geometric)
        return isinstance(value, torch.Tensor) or hasattr(value, "edge_index")

    return {k: v.to(device) if movable(v) else v for k, v in batch.items()}


def batches(n: int, size: int = INFERENCE_BATCH) -> list[range]:
    """Index ranges of at most `size` items covering 0..n-1 in order (bounded inference batches)."""
    size = max(1, int(size))
    return [range(start, min(start + size, n)) for start in range(0, n, size)]
