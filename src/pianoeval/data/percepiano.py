"""PercePiano: read index.csv and the label JSON into manifest rows, merging overlapping cuts of one music.

Layout expected under `root` (as in /work/shared/data/percepiano, see its README.md):
`index.csv`, `labels/label_2round_{mean,std}_reg_19_with0_rm_highstd0.json` (canonical, 1,189 keys),
`labels/repo_root_version/...` (1,202 keys), `midi/performances/*.mid`, `scores/midi/*.mid`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pianoeval.core.constants import N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.data.manifest import make_rows

_MEAN_NAME = "label_2round_mean_reg_19_with0_rm_highstd0.json"
_STD_NAME = "label_2round_std_reg_19_with0_rm_highstd0.json"
# label_version -> folder (relative to root) holding the mean and std label files.
LABEL_DIRS: dict[str, str] = {"canonical": "labels", "repo_root": "labels/repo_root_version"}
# `<piece>_<N>bars_<performer>_<segment>`: the last number is the segment, the one before the pianist
# (the repo README says the opposite; its code and the note counts say this, see the data README).
SEGMENT_ID_RE = re.compile(r"^(?P<piece>.+)_(?P<bars>\d+)bars_(?P<performer>[^_]+)_(?P<segment>\d+)$")
# Deadpan renditions of the score; both are the "score" performer for the performer protocol.
SCORE_PERFORMERS: tuple[str, ...] = ("Score", "Score2")
# Beethoven pianists are numbered differently; the repo's performer-fold script maps them to a
# shared key by their index in this list (m2pf_dataset_performerfold.py).
BEETHOVEN_PERFORMERS: tuple[int, ...] = (1, 2, 3, 4, 7, 11, 14, 18, 19, 22, 24, 26)
# Two cuts are the same music when they share a run of consecutive score pitches covering at least
# this fraction of the shorter cut. On the real data the true overlaps (D960 8- vs 16-bar cuts and
# repeated sections) share >= 0.56 and the unrelated pairs <= 0.44, so 0.5 sits in the gap.
OVERLAP_FRACTION: float = 0.5
# ... and at least this many notes, so two tiny cuts do not merge on a shared scale fragment.
MIN_SHARED_RUN: int = 16
_INDEX_COLUMNS = ("id", "piece", "performer", "segment_group", "midi", "score_midi")


def parse_segment_id(segment_id: str) -> dict[str, str]:
    """Split a PercePiano id into piece, bars, performer and segment (strings); ValueError if malformed."""
    m = SEGMENT_ID_RE.match(segment_id)
    if m is None:
        raise ValueError(f"not a PercePiano segment id: {segment_id!r}")
    return m.groupdict()


def performer_fold_key(piece: str, performer: str) -> int:
    """The repo's performer-fold key: Score 0, Score2 -1, Beethoven by list index, else int(performer)."""
    if performer == "Score":
        return 0
    if performer == "Score2":
        return -1
    if piece.startswith("Beethoven"):
        return BEETHOVEN_PERFORMERS.index(int(performer))
    return int(performer)


def read_label_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PercePiano label JSON `{id: [19 floats(, pianist_index)]}` into {id: float32 [19]}."""
    path = Path(path)
    if not path.is_file():
        raise InputError("PercePiano label file not found", path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at line {exc.lineno})", path) from exc
    if not isinstance(raw, dict) or not raw:
        raise InputError("expected a non-empty JSON object {segment_id: [values]}", path)
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        # Element 20 of the mean file is a pianist index, not a label.
        if not isinstance(value, list) or len(value) not in (N_DIMS, N_DIMS + 1):
            n = len(value) if isinstance(value, list) else type(value).__name__
            raise InputError(f"label of {key!r} has {n} values, expected {N_DIMS} or {N_DIMS + 1}", path)
        try:
            vec = np.asarray(value[:N_DIMS], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"label of {key!r} is not numeric", path) from exc
        if not np.isfinite(vec).all() or (vec < 0).any() or (vec > 1).any():
            raise InputError(f"label of {key!r} has values outside [0, 1] or NaN", path)
        out[key] = vec.astype(np.float32)
    return out


def longest_common_run(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest run of consecutive equal elements shared by sequences a [N] and b [M]."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) == 0 or len(b) == 0:
        return 0
    if len(a) > len(b):
        a, b = b, a
    best, prev = 0, np.zeros(len(b) + 1, dtype=np.int64)
    for x in a:  # dynamic programme over the shorter sequence, one vectorised row at a time
        cur = np.zeros_like(prev)
        cur[1:] = np.where(b == x, prev[:-1] + 1, 0)
        best = max(best, int(cur.max()))
        prev = cur
    return best


def merge_overlapping_cuts(
    sequences: Mapping[str, np.ndarray],
    fraction: float = OVERLAP_FRACTION,
    min_run: int = MIN_SHARED_RUN,
) -> dict[str, str]:
    """Map each cut name to its merged group: cuts sharing a long pitch run (union-find) share a group.

    `sequences` maps a cut name to its score pitch sequence [N] (notes by onset, then pitch). A merged
    group is named after its longest cut (most notes; ties by name), so unmerged cuts keep their name.
    """
    names = sorted(sequences)
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # Only pairs sharing a `min_run`-gram can qualify, so n-gram sets prune the quadratic comparison.
    grams = {n: _ngrams(sequences[n], min_run) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if find(a) == find(b) or grams[a].isdisjoint(grams[b]):
                continue
            shorter = min(len(sequences[a]), len(sequences[b]))
            if longest_common_run(sequences[a], sequences[b]) >= max(min_run, fraction * shorter):
                parent[find(a)] = find(b)
    members: dict[str, list[str]] = {}
    for n in names:
        members.setdefault(find(n), []).append(n)
    out: dict[str, str] = {}
    for group in members.values():
        label = min(group, key=lambda n: (-len(sequences[n]), n))
        out.update(dict.fromkeys(group, label))
    return out


def load_percepiano(root: str | Path, label_version: str = "canonical", merge_overlaps: bool = True) -> pd.DataFrame:
    """Manifest rows (tier T1, source percepiano) for every performance MIDI in `root/index.csv`.

    Segments without a label in the chosen version keep labels=None. `segment_group` is the cut
    (`<piece>_<N>bars_<segment>`, so Score/Score2 share it), merged across overlapping cuts.
    """
    root = Path(root).resolve()
    if label_version not in LABEL_DIRS:
        raise InputError(f"unknown label_version {label_version!r}; use one of {sorted(LABEL_DIRS)}", root)
    index = read_index(root / "index.csv")
    label_dir = root / LABEL_DIRS[label_version]
    means = read_label_file(label_dir / _MEAN_NAME)
    stds = read_label_file(label_dir / _STD_NAME)
    ids = set(index["id"])
    orphans = sorted(set(means) - ids)
    if orphans:
        raise InputError(
            f"{len(orphans)} label key(s) match no performance MIDI, e.g. {orphans[:3]}",
            label_dir / _MEAN_NAME,
        )
    no_std = sorted(set(means) - set(stds))
    if no_std:
        raise InputError(f"{len(no_std)} labelled segment(s) have no std, e.g. {no_std[:3]}", label_dir / _STD_NAME)

    midi = [root / p for p in index["midi"]]
    scores = [root / p for p in index["score_midi"]]
    for path in (*dict.fromkeys(midi), *dict.fromkeys(scores)):
        if not path.is_file():
            raise InputError("MIDI file listed in index.csv is missing", path)
    groups = dict(zip(index["segment_group"], index["segment_group"], strict=True))
    if merge_overlaps:
        groups = merge_overlapping_cuts(score_pitch_sequences(index, root))
    rows = [
        {
            "segment_id": sid,
            "piece_id": piece,
            "segment_group": groups[cut],
            "performer": performer,
            "tier": "T1",
            "source": "percepiano",
            "midi_path": str(m),
            "score_midi_path": str(s),
            "labels": means.get(sid),
            "label_std": stds.get(sid) if sid in means else None,
        }
        for sid, piece, cut, performer, m, s in zip(
            index["id"], index["piece"], index["segment_group"], index["performer"], midi, scores, strict=True
        )
    ]
    return make_rows(rows)


def read_index(path: str | Path) -> pd.DataFrame:
    """Read PercePiano's index.csv (ids, performers and segments kept as strings); InputError if invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError("PercePiano index.csv not found (fetch the dataset or build the index)", path)
    index = pd.read_csv(path, dtype={"id": str, "performer": str, "segment": str, "segment_group": str})
    missing = [c for c in _INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise InputError(f"index lacks column(s) {missing}", path)
    dup = index["id"][index["id"].duplicated()]
    if len(dup):
        raise InputError(f"duplicated id(s) in index: {list(dup[:3])}", path)
    if "performer_fold_key" in index.columns:
        # The performer protocol recomputes the key from (piece, performer); refuse an index that disagrees.
        ours = [performer_fold_key(p, q) for p, q in zip(index["piece"], index["performer"], strict=True)]
        bad = index["id"][np.asarray(ours) != index["performer_fold_key"].to_numpy()]
        if len(bad):
            raise InputError(f"performer_fold_key differs from the repo rule for {list(bad[:3])}", path)
    return index


def score_pitch_sequences(index: pd.DataFrame, root: Path) -> dict[str, np.ndarray]:
    """Map each cut (index `segment_group`) to the pitch sequence [N] of its score MIDI."""
    from pianoeval.data.midi import load_performance

    first = index.drop_duplicates("segment_group")
    return {
        cut: load_performance(root / score).pitches
        for cut, score in zip(first["segment_group"], first["score_midi"], strict=True)
    }


def _ngrams(seq: np.ndarray, n: int) -> set[tuple[int, ...]]:
    """The set of length-n runs of `seq` (empty if it is shorter than n)."""
    seq = [int(x) for x in seq]
    return {tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)}
