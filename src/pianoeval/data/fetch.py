"""Fetch public datasets (PercePiano, ASAP) with git at a pinned commit and lay them out for the loaders.

The clone and layout happen in a temporary folder beside `root`, which is renamed onto `root` only
when everything succeeded, so an interrupted fetch never leaves a half-filled dataset behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pianoeval.core.constants import DIMENSIONS, N_DIMS
from pianoeval.core.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives: git URL, pinned commit, and the file whose presence marks a finished fetch."""

    url: str
    commit: str
    marker: str


DATASETS: dict[str, DatasetSource] = {
    "percepiano": DatasetSource(
        "https://github.com/JonghoKimSNU/PercePiano", "e672299b8661f63802cd5cd73bb3c76218a13029", "index.csv"
    ),
    "asap": DatasetSource(
        "https://github.com/fosfrancesco/asap-dataset",
        "afc815c75c42e83a79c03feb6da8a35e77d4c6b8",
        "metadata.csv",
    ),
}
_MEAN = "label_2round_mean_reg_19_with0_rm_highstd0.json"
_STD = "label_2round_std_reg_19_with0_rm_highstd0.json"
# (path in the PercePiano repo, path in our layout); folders are copied file by file.
PERCEPIANO_LAYOUT: tuple[tuple[str, str], ...] = (
    (f"labels/{_MEAN}", f"labels/{_MEAN}"),
    (f"labels/{_STD}", f"labels/{_STD}"),
    (_MEAN, f"labels/repo_root_version/{_MEAN}"),
    (_STD, f"labels/repo_root_version/{_STD}"),
    ("labels/total_2rounds.csv", "labels/total_2rounds.csv"),
    ("virtuoso/data/all_2rounds", "midi/performances"),
    ("virtuoso/data/score_midi", "scores/midi"),
    ("virtuoso/data/score_xml", "scores/musicxml"),
    ("examples", "examples"),
    ("LICENSE", "LICENSE_PercePiano_MIT.txt"),
)
# The label script renames `_Score_` to `_Score2_` for these (piece prefix, segment range) before
# averaging ratings; n_ratings must follow it to count the canonical keys' raters.
_SCORE2_RENAMES: tuple[tuple[str, int, int], ...] = (("Beethoven", 5, 16), ("Schubert_D935", 1, 1))


def dataset_source(name: str, fetch_sources: Mapping[str, Mapping[str, str]] | None = None) -> tuple[str, str]:
    """(git URL, commit) of dataset `name`: the pinned public repository, unless the config's
    `data.fetch_sources` names another (a mirror, or a local git remote in the tests)."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    override = (fetch_sources or {}).get(name) or {}
    return override.get("url") or DATASETS[name].url, override.get("commit") or DATASETS[name].commit


def fetch_dataset(name: str, root: str | Path, url: str | None = None, commit: str | None = None) -> Path:
    """Clone dataset `name` at its pinned commit (or `url`/`commit`) and lay it out in `root`; return root."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    source = DATASETS[name]
    url, commit = url or source.url, commit or source.commit
    root = Path(root)
    if (root / source.marker).is_file():
        log.info("%s already present in %s", name, root)
        return root
    if root.exists() and any(root.iterdir()):
        raise InputError(f"folder exists and is not a finished {name} fetch (no {source.marker}); move it away", root)
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.fetch-", dir=root.parent))
    try:
        repo = work / "repo"
        clone_at_commit(url, commit, repo)
        if name == "percepiano":
            out = work / "out"
            layout_percepiano(repo, out)
            build_percepiano_index(out).to_csv(out / "index.csv", index=False)
        else:
            shutil.rmtree(repo / ".git")
            out = repo
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(out, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("fetched %s @ %s into %s", name, commit[:10], root)
    return root


def clone_at_commit(url: str, commit: str, dest: Path) -> Path:
    """`git clone url dest` and check out `commit`; InputError with git's message if either fails."""
    if shutil.which("git") is None:
        raise InputError("git is not installed; it is needed to fetch datasets")
    _git(["clone", "--quiet", "--no-checkout", url, str(dest)], url)
    _git(["-C", str(dest), "checkout", "--quiet", commit], url, f"commit {commit} not found")
    return dest


def layout_percepiano(repo_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy the PercePiano repo's data files into our layout (see PERCEPIANO_LAYOUT) under out_dir."""
    repo_dir, out_dir = Path(repo_dir), Path(out_dir)
    for src_rel, dst_rel in PERCEPIANO_LAYOUT:
        src, dst = repo_dir / src_rel, out_dir / dst_rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.iterdir()):
                if f.is_file():
                    # One performance file name starts with a space; its label key does not.
                    shutil.copy2(f, dst / f.name.strip())
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif src_rel not in ("examples", "LICENSE"):
            raise InputError(f"expected {src_rel} in the PercePiano repository", src)
    names = pd.DataFrame({"index": range(N_DIMS), "name": DIMENSIONS})
    totals = out_dir / "labels" / "total_2rounds.csv"
    if totals.is_file():
        names["raw_csv_column"] = _question_columns(pd.read_csv(totals, nrows=0), totals)
    names.to_csv(out_dir / "labels" / "label_names.csv", index=False)
    return out_dir


def build_percepiano_index(root: str | Path, count_notes: bool = True) -> pd.DataFrame:
    """index.csv of a laid-out PercePiano folder: one row per performance MIDI (columns as its README)."""
    from pianoeval.data.percepiano import parse_segment_id, performer_fold_key, read_label_file

    root = Path(root)
    perf_dir = root / "midi" / "performances"
    files = sorted(perf_dir.glob("*.mid"))
    if not files:
        raise InputError("no performance MIDI files", perf_dir)
    canonical = read_label_file(root / "labels" / _MEAN)
    repo_root = read_label_file(root / "labels" / "repo_root_version" / _MEAN)
    totals = root / "labels" / "total_2rounds.csv"
    n_ratings = _rating_counts(totals) if totals.is_file() else {}
    rows = []
    for f in files:
        try:
            m = parse_segment_id(f.stem)
        except ValueError as exc:
            raise InputError("performance file name is not <piece>_<N>bars_<performer>_<segment>.mid", f) from exc
        piece, bars, performer, segment = m["piece"], m["bars"], m["performer"], m["segment"]
        cut = f"{piece}_{bars}bars"
        key = performer_fold_key(piece, performer)
        row = {
            "id": f.stem,
            "piece": piece,
            "bars": int(bars),
            "segment": segment,
            "performer": performer,
            "segment_group": f"{cut}_{segment}",
            "midi": f"midi/performances/{f.name}",
            "score_midi": f"scores/midi/{cut}_Score_{segment}.mid",
            "score_musicxml": f"scores/musicxml/{cut}_Score_{segment}.musicxml",
            "n_notes": count_note_ons(f) if count_notes else np.nan,
            "labeled": int(f.stem in canonical),
            "labeled_repo_root_version": int(f.stem in repo_root),
            "n_ratings": n_ratings.get(f.stem, np.nan) if f.stem in canonical else np.nan,
            "performer_fold_key": key,
        }
        for fold in range(4):  # the repo's performer 4-fold: test keys {1, 2}, valid {2f+3, 2f+4}
            row[f"perf4fold_{fold}"] = (
                "test" if key in (1, 2) else "valid" if key in (2 * fold + 3, 2 * fold + 4) else "train"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def count_note_ons(path: Path) -> int:
    """Number of note-on events with velocity > 0 in a MIDI file (index.csv's n_notes)."""
    import mido

    try:
        midi = mido.MidiFile(str(path))
    except Exception as exc:  # mido raises several types for corrupt files
        raise InputError(f"not a readable MIDI file ({type(exc).__name__}: {exc})", path) from exc
    # Raw events, not pretty_midi notes: pretty_midi drops note-ons it cannot pair with a note-off.
    return sum(1 for track in midi.tracks for msg in track if msg.type == "note_on" and msg.velocity > 0)


def _rating_counts(path: Path) -> dict[str, int]:
    """Raters per canonical label key in total_2rounds.csv (rows with a value above 7 dropped)."""
    raw = pd.read_csv(path)
    questions = _question_columns(raw, path)
    if "filename" not in raw.columns:
        raise InputError("ratings table lacks the 'filename' column", path)
    kept = raw[~(raw[questions] > 7).any(axis=1)]
    ids = kept["filename"].astype(str).str.strip().str.removesuffix(".wav").map(_canonical_key)
    return {k: int(v) for k, v in ids.value_counts().items()}


def _canonical_key(segment_id: str) -> str:
    """Apply the label script's `_Score_` -> `_Score2_` renaming to one rated file id."""
    from pianoeval.data.percepiano import parse_segment_id

    try:
        m = parse_segment_id(segment_id)
    except ValueError:
        return segment_id
    if m["performer"] != "Score":
        return segment_id
    for prefix, lo, hi in _SCORE2_RENAMES:
        if m["piece"].startswith(prefix) and lo <= int(m["segment"]) <= hi:
            return segment_id.replace("_Score_", "_Score2_")
    return segment_id


def _question_columns(table: pd.DataFrame, path: Path) -> list[str]:
    """The 19 rating columns of total_2rounds.csv: the first 19 `Question_*` columns, in label order."""
    questions = [c for c in table.columns if c.startswith("Question_")][:N_DIMS]
    if len(questions) != N_DIMS:
        raise InputError(f"ratings table has {len(questions)} Question_ columns, expected >= {N_DIMS}", path)
    return questions


def _git(args: list[str], url: str, what: str | None = None) -> None:
    """Run git with `args`; on failure raise InputError naming `url` with git's last error line."""
    proc = subprocess.run(
        ["git", *args], capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise InputError(f"git {args[0] if args[0] != '-C' else args[2]} failed: {what or detail} ({detail})", url)
