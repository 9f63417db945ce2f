"""The fusion's training data: both track winners' embeddings and scores joined by segment id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.errors import InputError
from pianoeval.training.data import FoldData

log = logging.getLogger(__name__)


def score_statistics(stats_path: Path) -> dict[str, torch.Tensor]:
    """{segment id: score-relative statistics [17]} (`SCORE_COLUMNS`, the last the aligned flag) from
    the featurize `stats` store; InputError if the store lacks the score columns."""
    from pianoeval.core.constants import ALL_STAT_NAMES, SCORE_COLUMNS
    from pianoeval.training.data import load_feature_store

    items = load_feature_store(stats_path)["items"]
    n_stats = len(next(iter(items.values()))["stats"]) if items else 0
    if n_stats != len(ALL_STAT_NAMES):
        raise InputError(
            f"statistics store has {n_stats} columns, not the {len(ALL_STAT_NAMES)} with score statistics; "
            "rerun its featurize rule",
            stats_path,
        )
    return {sid: item["stats"][SCORE_COLUMNS].float() for sid, item in items.items()}


def build_fusion_data(
    audio: dict[str, Any],
    symbolic: dict[str, Any],
    manifest: Any,
    score_stats: dict[str, torch.Tensor] | None = None,
) -> FoldData:
    """Join both tracks' embeddings by segment id into FoldData items (splits as the encoders saw them).

    `score_stats` (`score_statistics`) adds each item's score-relative statistics for the
    score-conditioned fusions; a segment without them is skipped.
    """
    from pianoeval.data.manifest import label_matrix, split_view_id

    labels = label_matrix(manifest)
    row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    group_index = {g: i for i, g in enumerate(sorted(manifest["segment_group"].unique()))}
    a_index = {sid: i for i, sid in enumerate(audio["ids"])}
    items: list[dict[str, Any]] = []
    splits: dict[str, list[int]] = {"train": [], "dev": [], "val": []}
    missing = []
    for j, sid in enumerate(symbolic["ids"]):
        # A transcription view (`<id>@<view>`, training split only) pairs with its recording's audio.
        source = split_view_id(sid)[0]
        i = a_index.get(source)
        if i is None or (score_stats is not None and sid not in score_stats):
            missing.append(sid)
            continue
        if audio["split"][i] != symbolic["split"][j]:
            raise InputError(f"segment {sid} is in different splits in the two tracks' embeddings")
        row = row_of[source]
        items.append(
            {
                "z_audio": audio["z"][i],
                "scores_audio": audio["scores"][i],
                "z_symbolic": symbolic["z"][j],
                "scores_symbolic": symbolic["scores"][j],
                "labels": torch.tensor(labels[row], dtype=torch.float32),
                "group": torch.tensor(group_index[manifest["segment_group"].iloc[row]]),
                "segment_id": sid,
                "split": symbolic["split"][j],
            }
        )
        if score_stats is not None:
            items[-1]["score_stats"] = score_stats[sid]
        splits[symbolic["split"][j]].append(len(items) - 1)
    if not splits["train"] or not splits["val"]:
        raise InputError("the two tracks share no train/val segments; check both tracks ran on the same folds")
    return FoldData(items, splits, {}, missing)


def error_correlation(data: FoldData, split: str = "val") -> float:
    """Pearson r between the two tracks' residuals (prediction - label) on a split, pooled over dims."""
    idx = data.splits[split]
    y = np.stack([data.items[i]["labels"].numpy() for i in idx])
    ea = np.stack([data.items[i]["scores_audio"].numpy() for i in idx]) - y
    es = np.stack([data.items[i]["scores_symbolic"].numpy() for i in idx]) - y
    return float(np.corrcoef(ea.ravel(), es.ravel())[0, 1])
