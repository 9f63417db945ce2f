"""Manifest schema, Parquet round trip, validation errors and the label matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pianoeval.core.constants import N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.data.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    empty_manifest,
    label_matrix,
    labelled_mask,
    make_rows,
    read_manifest,
    validate_manifest,
    write_manifest,
)


def _row(sid: str, **kw: object) -> dict:
    base = {
        "segment_id": sid,
        "piece_id": "p",
        "segment_group": "g",
        "performer": "1",
        "tier": "T1",
        "source": "s",
    }
    return {**base, **kw}


def _df() -> pd.DataFrame:
    return make_rows(
        [
            _row(
                "a",
                labels=np.linspace(0.2, 0.8, N_DIMS),
                label_std=np.full(N_DIMS, 0.1),
                midi_path="/x/a.mid",
            ),
            _row("b", tier="T2", competition="Chopin", round="final", placement=1),
            _row("c", tier="T3", difficulty=6),
        ]
    )


def test_columns_match_the_contract() -> None:
    assert MANIFEST_COLUMNS == (
        "segment_id", "piece_id", "segment_group", "performer", "tier", "source", "midi_path",
        "score_midi_path", "audio_path", "labels", "label_std", "competition", "round", "placement",
        "difficulty",
    )  # fmt: skip
    assert MANIFEST_SCHEMA.field("labels").type == pa.list_(pa.float32(), N_DIMS)
    assert MANIFEST_SCHEMA.field("placement").type == pa.int32()
    assert list(empty_manifest().columns) == list(MANIFEST_COLUMNS)
    assert len(empty_manifest()) == 0


def test_round_trip_keeps_values_and_schema(tmp_path: Path) -> None:
    df = _df()
    path = write_manifest(df, tmp_path / "m.parquet")
    assert pq.read_schema(path).field("labels").type == pa.list_(pa.float32(), N_DIMS)
    back = read_manifest(path)
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    assert back["segment_id"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(back["labels"][0], np.linspace(0.2, 0.8, N_DIMS), rtol=1e-6)
    assert back["labels"][1] is None and back["midi_path"][1] is None
    assert pd.isna(back["placement"][0]) and back["placement"][1] == 1
    assert back["difficulty"][2] == pytest.approx(6.0) and np.isnan(back["difficulty"][0])
    assert back["competition"][1] == "Chopin"


def test_label_matrix_has_nan_rows_for_unlabelled() -> None:
    m = label_matrix(_df())
    assert m.shape == (3, N_DIMS) and m.dtype == np.float32
    assert np.isfinite(m[0]).all() and np.isnan(m[1:]).all()
    assert m[0, -1] == pytest.approx(0.8)
    assert labelled_mask(_df()).tolist() == [True, False, False]


def test_make_rows_rejects_unknown_columns() -> None:
    with pytest.raises(KeyError, match="labelz"):
        make_rows([_row("a", labelz=[0.5])])


def _bad(kind: str) -> tuple[pd.DataFrame, str]:
    df = _df()
    if kind == "missing_column":
        return df.drop(columns=["segment_group"]), "segment_group"
    if kind == "duplicate_id":
        df.loc[2, "segment_id"] = "a"
        return df, "duplicated segment_id.*a"
    if kind == "short_labels":
        df.at[0, "labels"] = np.full(18, 0.5, dtype=np.float32)
        return df, "18 values"
    if kind == "nan_label":
        vec = np.full(N_DIMS, 0.5, dtype=np.float32)
        vec[3] = np.nan
        df.at[0, "labels"] = vec
        return df, "NaN"
    if kind == "label_above_one":
        df.at[0, "labels"] = np.full(N_DIMS, 1.2, dtype=np.float32)
        return df, "outside"
    if kind == "unknown_tier":
        df.loc[1, "tier"] = "T9"
        return df, "T9"
    df.loc[1, "piece_id"] = None  # empty_required
    return df, "piece_id"


KINDS = [
    "missing_column",
    "duplicate_id",
    "short_labels",
    "nan_label",
    "label_above_one",
    "unknown_tier",
    "empty_required",
]


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_validate_rejects_bad_input_naming_the_file(kind: str, tmp_path: Path) -> None:
    df, pattern = _bad(kind)
    target = tmp_path / "bad.parquet"
    with pytest.raises(InputError, match=pattern) as info:
        validate_manifest(df, target)
    assert info.value.path == str(target)
    with pytest.raises(InputError):
        write_manifest(df, target)
    assert not target.exists()  # nothing half-written
    assert list(tmp_path.iterdir()) == []


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "none.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="Parquet") as info:
        read_manifest(junk)
    assert info.value.path == str(junk)
