"""A trained fold's outputs: metrics on val (and dev, val_transcribed), predictions.csv, embeddings.pt,
and metrics.json last."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.io import atomic_path, save_torch, write_json
from pianoeval.core.layout import FoldDir
from pianoeval.data.manifest import split_view_id
from pianoeval.training.data import FoldData

log = logging.getLogger(__name__)


def evaluate(pred: np.ndarray, data: FoldData, split: str, threshold: float | None = None) -> dict[str, Any]:
    """The output-contract metrics of predictions [N, 19] on one split."""
    from pianoeval.metrics import MetricsSuite

    suite = MetricsSuite() if threshold is None else MetricsSuite(ambiguous_threshold=threshold)
    return suite.compute(pred, data.labels(split), data.groups(split))


def _write_predictions(data: FoldData, preds: dict[str, np.ndarray], path: Path) -> None:
    """Write a CSV with one row per segment: id, split, group, 19 predictions and 19 labels."""
    rows = []
    for split, idx in data.splits.items():
        for k, i in enumerate(idx):
            item = data.items[i]
            row = {"segment_id": item["segment_id"], "split": split, "group": int(item["group"])}
            row.update({f"pred_{d}": float(v) for d, v in zip(DIMENSIONS, preds[split][k], strict=True)})
            row.update({f"label_{d}": float(v) for d, v in zip(DIMENSIONS, item["labels"].numpy(), strict=True)})
            rows.append(row)
    with atomic_path(path, suffix=".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def write_fold_outputs(
    data: FoldData,
    preds: dict[str, np.ndarray],
    embs: dict[str, np.ndarray] | None,
    out_dir: Path,
    extra: dict[str, Any],
    start: float,
) -> dict[str, Any]:
    """Evaluate on val (and dev), then write predictions.csv, embeddings.pt and, last, metrics.json."""
    metrics = evaluate(preds["val"], data, "val")
    dev_metrics = evaluate(preds["dev"], data, "dev") if data.splits["dev"] else None
    if data.splits.get("val_transcribed"):
        # The validation segments scored from TransKun's transcription of their clean rendering.
        transcribed = evaluate(preds["val_transcribed"], data, "val_transcribed")
        metrics["val_transcribed"] = {
            "pairwise_acc": transcribed["pairwise_acc"],
            "r2": transcribed["r2"],
            "n": len(data.splits["val_transcribed"]),
        }
    metrics.update(
        {
            "n_train": len(data.splits["train"]),
            "n_train_transcribed": sum(
                split_view_id(data.items[i]["segment_id"])[1] is not None for i in data.splits["train"]
            ),
            "n_dev": len(data.splits["dev"]),
            "n_val": len(data.splits["val"]),
            "n_missing_features": len(data.missing),
            "dev": {"pairwise_acc": dev_metrics["pairwise_acc"], "r2": dev_metrics["r2"]} if dev_metrics else None,
            **extra,
        }
    )
    folder = FoldDir(out_dir)
    _write_predictions(data, preds, folder.predictions)
    splits = ("train", "dev", "val")
    order = [i for split in splits for i in data.splits[split]]
    payload: dict[str, Any] = {
        "ids": [data.items[i]["segment_id"] for i in order],
        "split": [data.items[i]["split"] for i in order],
        "scores": torch.from_numpy(np.concatenate([preds[s] for s in splits]).astype(np.float32)),
        "z": None,
        # The leak guard's record travels with the embeddings that fusion reads (data/leaks.py).
        "learned_from_groups": extra.get("learned_from_groups"),
    }
    if embs is not None:
        payload["z"] = torch.from_numpy(np.concatenate([embs[s] for s in splits]).astype(np.float32))
    save_torch(payload, folder.embeddings)
    metrics["wall_s"] = round(time.perf_counter() - start, 2)
    write_json(metrics, folder.metrics)  # last: its presence means the fold is complete
    return metrics
