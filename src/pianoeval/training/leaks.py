"""The leak guard of the training artifacts (data/leaks.py): which segment groups a fold model, its
wide part, its pretrained encoder or a stacked model learned from."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from pianoeval.data.leaks import KeyGroups, groups_of_keys, recorded_groups
from pianoeval.training.data import FoldData

# The splits whose labels a fold model learns from: train (fit) and dev (early stopping, the wide
# part's choices). val and val_transcribed are only scored.
LEARNING_SPLITS = ("train", "dev")


def data_groups(data: FoldData, index: KeyGroups, splits: Iterable[str] = LEARNING_SPLITS) -> set[str]:
    """The segment groups of the items of `splits`, mapped from their ids (views included), not from
    the fold spec: what was actually fed to the fit."""
    return groups_of_keys((data.items[i]["segment_id"] for s in splits for i in data.splits.get(s, [])), index)


def pretrained_groups(path: Path | None) -> set[str]:
    """The groups a pretrained encoder (steps/pretrain.py) was pretrained on; none without one."""
    if path is None:
        return set()
    payload = torch.load(path, weights_only=False)
    return set(recorded_groups(payload.get("info", {}), path))


def learned_from_record(
    data: FoldData, index: KeyGroups, pretrained: Path | None = None, extra: Iterable[str] = ()
) -> dict[str, Any]:
    """`learned_from_groups` (labels of train and dev, the pretrained encoder's music, `extra`) and
    `labels_from_groups` (train and dev only: what a stacked model's out-of-fold rows must avoid)."""
    labels = data_groups(data, index)
    return {
        "learned_from_groups": sorted(labels | pretrained_groups(pretrained) | set(extra)),
        "labels_from_groups": sorted(labels),
    }
