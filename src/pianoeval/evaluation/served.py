"""The models `pianoeval score` serves, read from a results tree or an unpacked bundle.

The DAG chooses them: the symbolic track winner (`results/compare/symbolic/winner.json`) scores a MIDI
alone; the fusion winner (`results/fusion/winner.json`) scores a recording, reading the audio track
winner's embedding of the recording and the symbolic winner's embedding of its transcription, fold by
fold (fusion fold k was fit on the fold-k models of both tracks). `ServedModels` names them, their fold
folders, the reference labels for percentiles and the data they learned from; a bundle
(`evaluation/bundle.py`) holds the same fold folders and its `served.json`, so both give the same scores.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json
from pianoeval.core.layout import Results
from pianoeval.data.sources import training_data

# What an unpacked bundle says about its models (a results tree derives the same from its files).
SERVED_FILE = "served.json"
# The fusion variants' names (networks/fusion.py: f1-f3, `_score` for score conditioning).
_FUSION_NAME = re.compile(r"^f[123](_score)?$")
# The splits of a fold's predictions.csv that hold each labelled segment once.
SPLITS = ("train", "dev", "val")


@dataclass(frozen=True)
class ServedModels:
    """The served models of one tree: names (audio and fusion None when no fusion was chosen), the
    reference labels [N, 19] for percentiles, and the labelled data they learned from."""

    root: Path
    symbolic: str
    audio: str | None
    fusion: str | None
    reference: np.ndarray = field(repr=False)
    training_data: dict[str, Any]

    def folds(self, track: str) -> list[Path]:
        """The fold folders of the served model of `track` (symbolic, audio, fusion), in fold order."""
        model = {"symbolic": self.symbolic, "audio": self.audio, "fusion": self.fusion}[track]
        if model is None:
            raise InputError(f"no {track} model is served by this tree", self.root)
        try:
            return [d.path for d in Results(self.root).folds(track, model)]
        except InputError as exc:  # named by the folder a user would look into: results/train or results/fuse
            where = self.root / ("fuse" if track == "fusion" else "train")
            raise InputError(f"no trained folds of {track}/{model}; run the pipeline first", where) from exc

    def fused_folds(self) -> list[tuple[Path, Path, Path]]:
        """(symbolic, audio, fusion) fold folders per fold; InputError unless the three tracks have the same folds."""
        tracks = {t: self.folds(t) for t in ("symbolic", "audio", "fusion")}
        names = {t: [p.name for p in dirs] for t, dirs in tracks.items()}
        if not names["symbolic"] == names["audio"] == names["fusion"]:
            raise InputError(f"the served models were trained on different folds: {names}", self.root)
        return list(zip(tracks["symbolic"], tracks["audio"], tracks["fusion"], strict=True))

    def description(self) -> dict[str, Any]:
        """{track: {"model", "n_folds"}} of the served models (JSON-ready)."""
        out: dict[str, Any] = {}
        for track in ("symbolic", "audio", "fusion"):
            model = getattr(self, track)
            if model is not None:
                out[track] = {"model": model, "n_folds": len(self.folds(track))}
        return out


def is_view(segment_id: str) -> bool:
    """Whether an id is a transcription view's (`<id>@clean`), as `data.manifest.split_view_id` reads it
    (not imported: that module imports pandas, a second on every score)."""
    _, sep, view = segment_id.rpartition("@")
    return bool(sep) and view in ("clean", "augmented")


def reference_labels(predictions: Path) -> tuple[np.ndarray, list[str]]:
    """Labels [N, 19] and segment ids of the labelled corpus, every segment once: fold 0's train, dev
    and val rows of a fold's predictions.csv (not the transcription views' rows, which repeat a
    segment's labels, nor the val_transcribed ones)."""
    if not predictions.is_file():
        raise InputError("training predictions not found; rerun the training rule of fold 0", predictions)
    # The csv module, not pandas: a few hundred rows, and pandas would add a second to every score.
    columns = [f"label_{d}" for d in DIMENSIONS]
    with predictions.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") in SPLITS and not is_view(r.get("segment_id", ""))]
    try:
        labels = np.array([[float(row[c]) for c in columns] for row in rows], dtype=np.float64)
        ids = [row["segment_id"] for row in rows]
    except (KeyError, ValueError) as exc:
        raise InputError(f"unreadable label column ({exc}); rerun the training rule of fold 0", predictions) from exc
    return labels.reshape(-1, len(columns)), ids


def fusion_winner(results: Results) -> str | None:
    """The fusion variant results/fusion/winner.json names, None when there is no such file or it names
    none (a tree with the symbolic track only)."""
    if not results.final_winner.is_file():
        return None
    name = read_json(results.final_winner).get("winner")
    return name if isinstance(name, str) and _FUSION_NAME.match(name) else None


def served_from_results(root: Path) -> ServedModels:
    """The served models of a results tree; InputError (before any slow work) if a winner or its folds are missing."""
    results = Results(root)
    symbolic = read_json(results.winner("symbolic"))["model"]
    results.folds("symbolic", symbolic)
    fusion = fusion_winner(results)
    audio = read_json(results.winner("audio"))["model"] if fusion else None
    labels, ids = reference_labels(results.fold("symbolic", symbolic, 0).predictions)
    return ServedModels(root, symbolic, audio, fusion, labels, training_data(ids))


def served_record(served: ServedModels) -> dict[str, Any]:
    """served.json of a bundle: the names, the reference labels and the training data (`load_served` reads it)."""
    return {
        "symbolic": served.symbolic,
        "audio": served.audio,
        "fusion": served.fusion,
        "reference": served.reference.tolist(),  # JSON floats round-trip exactly
        "training_data": served.training_data,
    }


def load_served(root: Path) -> ServedModels:
    """The served models of `root`: an unpacked bundle (with served.json) or a results tree."""
    path = root / SERVED_FILE
    if not path.is_file():
        return served_from_results(root)
    record = read_json(path)
    reference = np.asarray(record["reference"], dtype=np.float64).reshape(-1, len(DIMENSIONS))
    return ServedModels(root, record["symbolic"], record["audio"], record["fusion"], reference, record["training_data"])
