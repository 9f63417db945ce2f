"""`pianoeval score`: 19 perceptual scores for one MIDI performance, from the trained fold ensemble.

This version scores MIDI with the symbolic track winner (every fold's model; the spread across
folds is the uncertainty). Audio input needs transcription to MIDI (issue 4/5) and is refused
with a clear message until that lands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.constants import DIMENSIONS
from pianoeval.errors import InputError
from pianoeval.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg"}
MIDI_SUFFIXES = {".mid", ".midi"}
# Inputs shorter than this carry too little music to judge; longer ones are cut into segments
# by the user for now (PercePiano segments are 4-16 bars).
MIN_SECONDS, MAX_SECONDS = 2.0, 600.0


def _fold_dirs(results: Path, track: str, model: str) -> list[Path]:
    """The trained fold folders of a model, in fold order."""
    dirs = sorted((results / "train" / track / model).glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if not dirs:
        raise InputError(f"no trained folds of {track}/{model}; run the pipeline first", results / "train")
    return dirs


def score_midi(midi: Path, results: Path) -> dict[str, Any]:
    """Scores of a MIDI performance: mean and std over the symbolic winner's fold models."""
    from pianoeval.config import load_config
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.data.midi import load_performance
    from pianoeval.pipeline.featurize import featurize_file
    from pianoeval.training.train import load_trained_module

    perf = load_performance(midi)
    if perf.duration < MIN_SECONDS or perf.duration > MAX_SECONDS:
        raise InputError(
            f"performance lasts {perf.duration:.1f} s; scoring needs {MIN_SECONDS:.0f}-{MAX_SECONDS:.0f} s", midi
        )
    winner = read_json(results / "compare" / "symbolic" / "winner.json")
    preds = []
    for fold_dir in _fold_dirs(results, "symbolic", winner["model"]):
        module = load_trained_module(fold_dir)
        spec = read_json(fold_dir / "model_spec.json")
        kind = {"s1": "tokens", "s2": "graphs", "s3": "curves"}[spec["model"]]
        features_cfg = load_config(fold_dir / "config.yaml")["features"]
        batch = multi_task_collate_fn([featurize_file(kind, str(midi), features_cfg)])
        with torch.no_grad():
            preds.append(module(batch)[0].numpy())
    stack = np.stack(preds)
    return {"model": winner["model"], "mean": stack.mean(axis=0), "std": stack.std(axis=0), "n_models": len(preds)}


def training_distribution(results: Path, model: str) -> np.ndarray:
    """Labels [N, 19] of the training data (for the report's reference bars)."""
    import pandas as pd

    path = results / "train" / "symbolic" / model / "fold_0" / "predictions.csv"
    df = pd.read_csv(path)
    return df[[f"label_{d}" for d in DIMENSIONS]].to_numpy()


def plot_report(scores: dict[str, Any], reference: np.ndarray, out: Path, title: str) -> None:
    """Per-dimension bars (with fold spread) over the training label range (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.arange(len(DIMENSIONS))
    fig, ax = plt.subplots(figsize=(9, 8))
    lo, hi = np.percentile(reference, 10, axis=0), np.percentile(reference, 90, axis=0)
    ax.barh(y, hi - lo, left=lo, color="0.85", label="training 10-90%")
    ax.errorbar(scores["mean"], y, xerr=scores["std"], fmt="o", color="C0", label="this performance (± fold spread)")
    ax.set_yticks(y, [d.replace("_", " ") for d in DIMENSIONS], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(1 / 7, 1)
    ax.set_xlabel("score (rating / 7)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_score(recording: Path, score: Path | None, model: Path, out: Path) -> dict[str, Any]:
    """Score `recording` with the pipeline results that `model` (results/fusion/winner.json) belongs to."""
    if not recording.is_file():
        raise InputError("file not found", recording)
    suffix = recording.suffix.lower()
    results = model.resolve().parents[1]
    if suffix in AUDIO_SUFFIXES:
        raise InputError(
            "audio input needs transcription, which this version does not include yet; pass a MIDI file", recording
        )
    if suffix not in MIDI_SUFFIXES:
        raise InputError(
            f"unsupported file type {suffix!r}; pass a MIDI ({', '.join(sorted(MIDI_SUFFIXES))})", recording
        )
    scores = score_midi(recording, results)
    result = {
        "input": str(recording),
        "score_midi": str(score) if score else None,
        "model": scores["model"],
        "n_fold_models": scores["n_models"],
        "dimensions": {
            d: {"score": float(m), "uncertainty": float(s)}
            for d, m, s in zip(DIMENSIONS, scores["mean"], scores["std"], strict=True)
        },
    }
    write_json(result, out)
    plot_report(scores, training_distribution(results, scores["model"]), out.with_suffix(".png"), recording.name)
    return result
