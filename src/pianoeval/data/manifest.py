"""The corpus manifest: one Parquet table of segments for every tier, with its schema and checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pianoeval.core.constants import N_DIMS, TIERS
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path

# Column order and Arrow types of the manifest (docs/architecture.md, "data/manifest.py").
MANIFEST_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("piece_id", pa.string(), nullable=False),
        pa.field("segment_group", pa.string(), nullable=False),
        pa.field("performer", pa.string(), nullable=False),
        pa.field("tier", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("midi_path", pa.string()),
        pa.field("score_midi_path", pa.string()),
        pa.field("audio_path", pa.string()),
        pa.field("labels", pa.list_(pa.float32(), N_DIMS)),
        pa.field("label_std", pa.list_(pa.float32(), N_DIMS)),
        pa.field("competition", pa.string()),
        pa.field("round", pa.string()),
        pa.field("placement", pa.int32()),
        pa.field("difficulty", pa.float32()),
    ]
)
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
# Columns that every row must fill; the others default to None (missing).
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in MANIFEST_SCHEMA if not f.nullable)
_VECTOR_COLUMNS = ("labels", "label_std")
# How many offending ids an error message lists before it says "...".
_MAX_LISTED = 5


def empty_manifest() -> pd.DataFrame:
    """An empty manifest DataFrame with all MANIFEST_COLUMNS."""
    return make_rows([])


def make_rows(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build manifest rows from dicts (missing optional columns become None); KeyError on unknown keys."""
    rows = list(rows)
    for i, row in enumerate(rows):
        unknown = set(row) - set(MANIFEST_COLUMNS)
        if unknown:
            raise KeyError(f"row {i}: unknown manifest column(s) {sorted(unknown)}")
    data = {col: [row.get(col) for row in rows] for col in MANIFEST_COLUMNS}
    for col in _VECTOR_COLUMNS:
        data[col] = [_as_vector(v) for v in data[col]]
    df = pd.DataFrame(data, columns=list(MANIFEST_COLUMNS))
    return _normalise_dtypes(df)


def validate_manifest(df: pd.DataFrame, path: str | Path | None = None) -> None:
    """Raise InputError naming `path` if `df` is not a valid manifest (columns, ids, labels, tiers)."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"manifest lacks column(s) {missing}", path)
    for col in REQUIRED_COLUMNS:
        empty = df[col].isna() | (df[col].astype(str) == "")
        if empty.any():
            where = _listed(df.index[empty].tolist())
            raise InputError(f"manifest column {col!r} is empty in row(s) {where}", path)
    dup = df["segment_id"][df["segment_id"].duplicated(keep=False)]
    if len(dup):
        raise InputError(f"duplicated segment_id(s): {_listed(list(dict.fromkeys(dup)))}", path)
    bad_tier = sorted(set(df["tier"]) - set(TIERS))
    if bad_tier:
        raise InputError(f"unknown tier(s) {bad_tier}; expected one of {list(TIERS)}", path)
    for col, lo, hi in (("labels", 0.0, 1.0), ("label_std", 0.0, np.inf)):
        for sid, value in zip(df["segment_id"], df[col], strict=True):
            if _is_missing(value):
                continue
            vec = np.asarray(value, dtype=np.float64).reshape(-1)
            if vec.shape != (N_DIMS,):
                raise InputError(f"segment {sid}: {col} has {vec.size} values, expected {N_DIMS}", path)
            if not np.isfinite(vec).all():
                raise InputError(f"segment {sid}: {col} contains NaN or inf", path)
            if (vec < lo).any() or (vec > hi).any():
                raise InputError(f"segment {sid}: {col} outside [{lo}, {hi}] (min {vec.min()}, max {vec.max()})", path)


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate `df` and write it as Parquet with MANIFEST_SCHEMA atomically; return the path."""
    validate_manifest(df, path)
    arrays = []
    for f in MANIFEST_SCHEMA:
        values = df[f.name].tolist()
        if f.name in _VECTOR_COLUMNS:
            values = [None if _is_missing(v) else np.asarray(v, dtype=np.float32).tolist() for v in values]
        else:
            values = [None if _is_missing(v) else v for v in values]
        arrays.append(pa.array(values, type=f.type))
    table = pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest Parquet file; InputError if missing, unreadable or invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found; run the prepare step first", path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet manifest ({exc})", path) from exc
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"manifest lacks column(s) {missing}", path)
    df = table.select(list(MANIFEST_COLUMNS)).to_pandas()
    for col in _VECTOR_COLUMNS:
        df[col] = [_as_vector(v) for v in df[col]]
    df = _normalise_dtypes(df)
    validate_manifest(df, path)
    return df


def label_matrix(df: pd.DataFrame) -> np.ndarray:
    """Labels of `df` as a float32 array [N, 19], NaN rows where a segment has no labels."""
    out = np.full((len(df), N_DIMS), np.nan, dtype=np.float32)
    for i, value in enumerate(df["labels"]):
        if not _is_missing(value):
            out[i] = np.asarray(value, dtype=np.float32).reshape(N_DIMS)
    return out


def labelled_mask(df: pd.DataFrame) -> np.ndarray:
    """Bool array [N]: does each row carry labels."""
    return np.array([not _is_missing(v) for v in df["labels"]], dtype=bool)


def _normalise_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Give scalar columns stable pandas dtypes (nullable Int32 placement, float32 difficulty)."""
    df = df.copy()
    df["placement"] = pd.array([None if _is_missing(v) else int(v) for v in df["placement"]], dtype="Int32")
    df["difficulty"] = np.array([np.nan if _is_missing(v) else float(v) for v in df["difficulty"]], dtype=np.float32)
    for f in MANIFEST_SCHEMA:
        if pa.types.is_string(f.type):
            df[f.name] = df[f.name].astype(object).where(df[f.name].notna(), None)
    return df


def _as_vector(value: Any) -> np.ndarray | None:
    """A label-like value as a float32 array (kept as given length, for validation), or None."""
    if _is_missing(value):
        return None
    return np.asarray(value, dtype=np.float32).reshape(-1)


def _is_missing(value: Any) -> bool:
    """True for None, NaN scalars and pandas NA (not for arrays, which are values)."""
    if value is None:
        return True
    if isinstance(value, (np.ndarray, list, tuple)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _listed(items: list[Any]) -> str:
    """The first few items joined for an error message."""
    shown = ", ".join(str(x) for x in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def select_per_group(rows: pd.DataFrame, per_group: int | None, seed: int) -> pd.DataFrame:
    """At most `per_group` labelled rows of each segment_group, drawn with `seed` (all rows when None)."""
    from pianoeval.data.manifest import labelled_mask

    if per_group is None:
        return rows
    rows = rows[labelled_mask(rows)].sort_values("segment_id")
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in rows.groupby("segment_group", sort=True):
        keep.extend(group.index[np.sort(rng.choice(len(group), size=min(per_group, len(group)), replace=False))])
    return rows.loc[sorted(keep)]


# Separates a segment id from its view: `demo::piece00/P01@clean`.
VIEW_SEP = "@"


def view_id(segment_id: str, view: str) -> str:
    """The segment id of one transcription view of a segment."""
    return f"{segment_id}{VIEW_SEP}{view}"


def split_view_id(key: str) -> tuple[str, str | None]:
    """(manifest segment id, view) of a transcription view's id; (key, None) for any other id."""
    sid, sep, view = key.rpartition(VIEW_SEP)
    return (sid, view) if sep and view in VIEWS else (key, None)


VIEWS: tuple[str, ...] = ("clean", "augmented")
