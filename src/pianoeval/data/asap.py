"""ASAP (aligned scores and performances): manifest rows (tier T3), difficulty join and beat annotations.

Layout under `root` is the repo's own, `<composer>/<group>/<piece>/` with `midi_score.mid` and
`<performer>.mid` + `<performer>_annotations.txt`, plus `metadata.csv` or `metadata_subset.csv`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pianoeval.core.errors import InputError
from pianoeval.data.manifest import make_rows

# Metadata tables tried in order: the full dataset's, then the subset in /work/shared/data/asap.
METADATA_FILES: tuple[str, ...] = ("metadata.csv", "metadata_subset.csv")
SCORE_MIDI_NAME = "midi_score.mid"


def load_asap(root: str | Path, difficulty_root: str | Path | None = None) -> pd.DataFrame:
    """Manifest rows (tier T3, source asap) for every performance MIDI under `root`, with Henle difficulty.

    Performances come from the metadata table (rows whose MIDI is present) or, without one, from
    walking the folders. Difficulty is joined through `difficulty_root/links_to_cipi.csv` and
    `cipi/index.json`; `difficulty_root=None` uses `root/../difficulty` when that folder exists.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError("ASAP folder not found", root)
    performances = _list_performances(root)
    if not performances:
        raise InputError("no ASAP performance MIDI found (expected <composer>/.../<piece>/<name>.mid)", root)
    if difficulty_root is None and (root.parent / "difficulty" / "links_to_cipi.csv").is_file():
        difficulty_root = root.parent / "difficulty"
    levels = read_cipi_levels(difficulty_root, "asap") if difficulty_root is not None else {}
    rows = []
    for folder, midi in performances:
        score = root / folder / SCORE_MIDI_NAME
        rows.append(
            {
                "segment_id": f"asap::{folder}/{midi.stem}",
                "piece_id": folder,
                "segment_group": folder,
                "performer": midi.stem,
                "tier": "T3",
                "source": "asap",
                "midi_path": str(midi),
                "score_midi_path": str(score) if score.is_file() else None,
                "difficulty": levels.get(folder),
            }
        )
    return make_rows(rows)


def read_cipi_levels(difficulty_root: str | Path, dataset: str) -> dict[str, float]:
    """Map each `dataset` piece in links_to_cipi.csv to its CIPI Henle level (1-9), checked in index.json."""
    difficulty_root = Path(difficulty_root)
    links_path = difficulty_root / "links_to_cipi.csv"
    index_path = difficulty_root / "cipi" / "index.json"
    if not links_path.is_file():
        raise InputError("difficulty link table not found", links_path)
    if not index_path.is_file():
        raise InputError("CIPI index not found", index_path)
    links = pd.read_csv(links_path, dtype=str)
    missing = {"dataset", "piece", "cipi_id"} - set(links.columns)
    if missing:
        raise InputError(f"link table lacks column(s) {sorted(missing)}", links_path)
    try:
        cipi = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", index_path) from exc
    levels: dict[str, float] = {}
    sub = links[links["dataset"] == dataset]
    stated_levels = sub["henle_level_1_9"] if "henle_level_1_9" in sub.columns else [None] * len(sub)
    for piece, cipi_id, stated in zip(sub["piece"], sub["cipi_id"], stated_levels, strict=True):
        entry = cipi.get(cipi_id)
        if entry is None or "henle" not in entry:
            raise InputError(f"{piece}: CIPI id {cipi_id!r} is not in {index_path.name}", links_path)
        level = float(entry["henle"])
        # The link table repeats the level for people; a disagreement means a wrong cipi_id.
        if stated is not None and not pd.isna(stated) and float(stated) != level:
            raise InputError(f"{piece}: stated Henle level {stated} but CIPI {cipi_id} has {level:g}", links_path)
        levels[piece] = level
    return levels


def load_beat_annotations(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an ASAP `*_annotations.txt` (TSV: time, time, label) into times [N] (s) and labels."""
    path = Path(path)
    if not path.is_file():
        raise InputError("annotation file not found", path)
    times: list[float] = []
    labels: list[str] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise InputError(f"line {n}: expected 3 tab-separated fields (time, time, label)", path)
        try:
            times.append(float(parts[0]))
        except ValueError as exc:
            raise InputError(f"line {n}: time {parts[0]!r} is not a number", path) from exc
        labels.append(parts[2].strip())
    if not times:
        raise InputError("annotation file is empty", path)
    arr = np.asarray(times, dtype=np.float64)
    if (np.diff(arr) < 0).any():
        raise InputError("annotation times are not in increasing order", path)
    return arr, labels


def _list_performances(root: Path) -> list[tuple[str, Path]]:
    """(piece folder relative to root, performance MIDI path) pairs, from metadata or by walking."""
    for name in METADATA_FILES:
        meta_path = root / name
        if meta_path.is_file():
            meta = pd.read_csv(meta_path, dtype=str)
            missing = {"folder", "midi_performance"} - set(meta.columns)
            if missing:
                raise InputError(f"metadata lacks column(s) {sorted(missing)}", meta_path)
            # The subset keeps metadata rows of some performances it does not ship; skip those.
            return [
                (f, root / m)
                for f, m in zip(meta["folder"], meta["midi_performance"], strict=True)
                if (root / m).is_file()
            ]
    out = []
    for score in sorted(root.rglob(SCORE_MIDI_NAME)):
        folder = score.parent.relative_to(root).as_posix()
        out.extend((folder, p) for p in sorted(score.parent.glob("*.mid")) if p.name != SCORE_MIDI_NAME)
    return out
