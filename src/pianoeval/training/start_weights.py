"""Where a network's encoder starts, when not from random weights: a fold-pretrained encoder
(steps/pretrain.py: `encoder.pt`) or, with `symbolic.deep_start`, the fold's deep-only model (its
`model.ckpt`, with its `metrics.json` beside it), whose encoder is the wide & deep network's deep part."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pianoeval.core.errors import InputError

# A trained module's encoder inside its Lightning checkpoint (ScoreModule.net = ScoreNetwork(encoder, heads)).
ENCODER_PREFIX = "net.encoder."


@dataclass(frozen=True)
class StartWeights:
    """An encoder's starting state and what it learned from (the leak guard's record)."""

    state: dict[str, torch.Tensor]
    learned_from: list[str]  # segment groups whose music shaped it
    labels_from: list[str]  # groups whose labels it learned: all of them for a fold model, none for pretraining
    strict: bool  # a fold model's encoder is the same module: every key must load
    path: str = ""  # the file it was read from (for errors)


def read_start(path: Path) -> StartWeights:
    """The start weights in `path`: a pretrained `encoder.pt` or a fold model's `model.ckpt`."""
    from pianoeval.core.io import read_json
    from pianoeval.data.leaks import recorded_groups

    # Onto the CPU: the network it loads into copies the weights to its own device.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if "encoder" in payload:
        groups = recorded_groups(payload.get("info", {}), path)
        return StartWeights(payload["encoder"], groups, [], strict=False, path=str(path))
    if "state_dict" not in payload:
        raise InputError("neither a pretrained encoder (encoder.pt) nor a trained fold model (model.ckpt)", path)
    state = {
        k.removeprefix(ENCODER_PREFIX): v for k, v in payload["state_dict"].items() if k.startswith(ENCODER_PREFIX)
    }
    metrics = Path(path).with_name("metrics.json")
    if not metrics.exists():
        raise InputError("a fold model without its metrics.json beside it (its leak record)", path)
    groups = recorded_groups(read_json(metrics), metrics)
    # Conservative: every group it learned from counts as labels (its dev split chose its epoch).
    return StartWeights(state, groups, groups, strict=True, path=str(path))


def as_start(start: Path | StartWeights) -> StartWeights:
    """`start` as read: a path is read (read_start); weights already read are taken as they are, so the
    weights a fold loads are the ones its leak guard checked, from one read of the file."""
    return start if isinstance(start, StartWeights) else read_start(Path(start))


def load_start(net: torch.nn.Module, start: Path | StartWeights) -> tuple[int, int]:
    """Load the start's encoder (a path, or weights read by read_start) into `net` (a wide & deep
    network's `.base`, else `net`); (missing, unexpected) key counts. InputError when a fold model's
    encoder does not fit (other width or kind)."""
    weights = as_start(start)
    target = getattr(net, "base", net)
    try:
        missing, unexpected = target.load_state_dict(weights.state, strict=weights.strict)
    except RuntimeError as exc:
        raise InputError(f"start weights do not fit this model ({str(exc).splitlines()[0]})", weights.path) from exc
    return len(missing), len(unexpected)
