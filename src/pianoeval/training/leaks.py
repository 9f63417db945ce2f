"""The leak guard of the training artifacts (data/leaks.py): which segment groups a fold model, its
wide part, its pretrained encoder or a stacked model learned from."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pianoeval.data.leaks import KeyGroups, groups_of_keys
from pianoeval.training.data import FoldData
from pianoeval.training.start_weights import StartWeights, as_start

# The splits whose labels a fold model learns from: train (fit) and dev (early stopping, the wide
# part's choices). val and val_transcribed are only scored.
LEARNING_SPLITS = ("train", "dev")


def data_groups(data: FoldData, index: KeyGroups, splits: Iterable[str] = LEARNING_SPLITS) -> set[str]:
    """The segment groups of the items of `splits`, mapped from their ids (views included), not from
    the fold spec: what was actually fed to the fit."""
    return groups_of_keys((data.items[i]["segment_id"] for s in splits for i in data.splits.get(s, [])), index)


def learned_from_record(
    data: FoldData, index: KeyGroups, pretrained: Path | StartWeights | None = None, extra: Iterable[str] = ()
) -> dict[str, Any]:
    """`learned_from_groups` (labels of train and dev, the start encoder's music, `extra`) and
    `labels_from_groups` (train and dev, and a deep-only start model's: what a stacked model's
    out-of-fold rows must avoid)."""
    labels = data_groups(data, index)
    start_music: set[str] = set()
    if pretrained is not None:
        start = as_start(pretrained)
        start_music, labels = set(start.learned_from), labels | set(start.labels_from)
    return {
        "learned_from_groups": sorted(labels | start_music | set(extra)),
        "labels_from_groups": sorted(labels),
    }
