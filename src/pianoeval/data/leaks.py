"""The leak guard: every fold-scoped artifact records the segment groups it learned from, and a fold's
validation groups must not be among them.

Folds are checked once, when they are made (data/folds.py). That is not enough: an artifact can still
read validation music through a side door (a transcription view `<id>@clean` of a validation segment,
a score MIDI shared with it, a stacked model's in-sample predictions). So each artifact built for a
fold lists the groups of the rows it actually read (`learned_from_groups`, mapped from the keys it
used, never from the fold spec), and `check_no_leak` fails the build, naming the artifact, the fold
and a leaked group, when one of them is held out from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pianoeval.core.errors import InputError
from pianoeval.data.folds import FoldLeakError
from pianoeval.data.manifest import split_view_id

# Prefix of a score MIDI's key in the feature stores (steps/featurize.py).
SCORE_KEY_PREFIX = "score::"


class ArtifactLeakError(FoldLeakError):
    """A fold-scoped artifact learned from a segment group held out from it."""


class KeyGroups:
    """Maps feature-store keys to the segment groups behind them (built once from the manifest)."""

    def __init__(self, manifest: pd.DataFrame) -> None:
        self.group_of = {str(s): str(g) for s, g in zip(manifest["segment_id"], manifest["segment_group"], strict=True)}
        self.by_score: dict[str, set[str]] = {}
        for path, group in zip(manifest["score_midi_path"], manifest["segment_group"], strict=True):
            if isinstance(path, str):
                self.by_score.setdefault(path, set()).add(str(group))

    def __call__(self, key: str) -> set[str]:
        """A segment id or its transcription view (`<id>@<view>`) gives its row's group; `score::<path>`
        the groups of every row with that score; a key the manifest does not know (unlabelled MIDI
        folders) belongs to no group."""
        key = str(key)
        if key.startswith(SCORE_KEY_PREFIX):
            return set(self.by_score.get(key[len(SCORE_KEY_PREFIX) :], ()))
        group = self.group_of.get(split_view_id(key)[0])
        return set() if group is None else {group}


def groups_of_keys(keys: Iterable[str], manifest: pd.DataFrame | KeyGroups) -> set[str]:
    """The union of the segment groups behind feature-store keys (see KeyGroups)."""
    index = manifest if isinstance(manifest, KeyGroups) else KeyGroups(manifest)
    out: set[str] = set()
    for key in keys:
        out |= index(key)
    return out


def split_groups(folds: dict[str, Any], fold: int, manifest: pd.DataFrame | KeyGroups, split: str = "val") -> set[str]:
    """The segment groups of one split (`val`, `dev`, `train`) of fold `fold`."""
    spec = next((f for f in folds["folds"] if int(f["fold"]) == fold), None)
    if spec is None:
        raise InputError(f"fold {fold} is not in the folds file (k={folds.get('k')})")
    return groups_of_keys(spec[split], manifest)


def check_no_leak(
    artifact: str | Path,
    fold: int | str,
    learned_from: Iterable[str],
    held_out: Iterable[str],
    what: str = "validation",
) -> None:
    """Raise ArtifactLeakError (one line: the artifact, the fold, a leaked group) when any group of
    `learned_from` is in `held_out` (the fold's validation groups, or an inner fold's held-out part)."""
    leaked = sorted(set(map(str, learned_from)) & set(map(str, held_out)))
    if leaked:
        more = f" (and {len(leaked) - 1} more)" if len(leaked) > 1 else ""
        raise ArtifactLeakError(
            f"fold {fold}: learned from {what} segment group {leaked[0]!r}{more}; rebuild it from the folds",
            artifact,
        )


def recorded_groups(record: dict[str, Any], artifact: str | Path, key: str = "learned_from_groups") -> list[str]:
    """The `learned_from_groups` list of an artifact's record; InputError when it has none (an artifact
    written before the guard existed: its rule must run again)."""
    groups = record.get(key)
    if not isinstance(groups, list):
        raise InputError(f"no '{key}' record (made before the leak guard); rerun the rule that made it", artifact)
    return [str(g) for g in groups]
