"""ASAP loader (tier T3 rows, Henle difficulty join), folder walking, and beat annotations."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pianoeval.core.errors import InputError
from pianoeval.data.asap import load_asap, load_beat_annotations, read_cipi_levels
from pianoeval.data.manifest import labelled_mask, validate_manifest


@pytest.fixture(scope="module")
def asap(shared_data: Path) -> pd.DataFrame:
    return load_asap(shared_data / "asap", difficulty_root=shared_data / "difficulty")


def test_real_rows(asap: pd.DataFrame) -> None:
    validate_manifest(asap)
    assert len(asap) == 34
    assert asap["piece_id"].nunique() == 8
    assert set(asap["tier"]) == {"T3"} and set(asap["source"]) == {"asap"}
    assert not labelled_mask(asap).any()
    assert (asap["segment_group"] == asap["piece_id"]).all()
    assert asap.groupby("piece_id").size()["Schubert/Impromptu_op142/3"] == 8
    assert all(Path(p).name == "midi_score.mid" and Path(p).is_file() for p in asap["score_midi_path"])
    row = asap[asap["segment_id"] == "asap::Bach/Prelude/bwv_860/ZhangH04M"].iloc[0]
    assert row["performer"] == "ZhangH04M" and row["midi_path"].endswith("bwv_860/ZhangH04M.mid")


# The README table's CIPI Henle levels.
LEVELS = {
    "Bach/Prelude/bwv_860": 4,
    "Bach/Prelude/bwv_854": 4,
    "Bach/Prelude/bwv_848": 6,
    "Schubert/Impromptu_op142/3": 6,
    "Schubert/Impromptu_op.90_D.899/2": 6,
    "Beethoven/Piano_Sonatas/8-1": 7,
    "Chopin/Etudes_op_10/4": 8,
    "Beethoven/Piano_Sonatas/23-1": 9,
}


@pytest.mark.parametrize("piece", list(LEVELS), ids=list(LEVELS))
def test_difficulty_matches_readme_table(asap: pd.DataFrame, piece: str) -> None:
    assert set(asap.loc[asap["piece_id"] == piece, "difficulty"]) == {LEVELS[piece]}


def test_difficulty_defaults_to_sibling_folder(shared_data: Path) -> None:
    df = load_asap(shared_data / "asap")  # shared_data/difficulty sits beside it
    assert df["difficulty"].notna().all()


def test_wrong_cipi_link_is_refused(shared_data: Path, tmp_path: Path) -> None:
    shutil.copytree(shared_data / "difficulty" / "cipi", tmp_path / "cipi")
    links = pd.read_csv(shared_data / "difficulty" / "links_to_cipi.csv")
    links.loc[links["piece"] == "Chopin/Etudes_op_10/4", "henle_level_1_9"] = 3
    links.to_csv(tmp_path / "links_to_cipi.csv", index=False)
    with pytest.raises(InputError, match="Chopin/Etudes_op_10/4") as info:
        read_cipi_levels(tmp_path, "asap")
    assert info.value.path == str(tmp_path / "links_to_cipi.csv")


def test_walks_folders_without_metadata(tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    tiny_midi("asap/Comp/Set/1/midi_score.mid")
    tiny_midi("asap/Comp/Set/1/PlayerA01.mid")
    tiny_midi("asap/Comp/Set/1/PlayerB02M.mid")
    df = load_asap(tmp_path / "asap")
    assert df["segment_id"].tolist() == ["asap::Comp/Set/1/PlayerA01", "asap::Comp/Set/1/PlayerB02M"]
    assert set(df["segment_group"]) == {"Comp/Set/1"}
    assert df["difficulty"].isna().all()
    with pytest.raises(InputError, match="not found"):
        load_asap(tmp_path / "nowhere")


def test_beat_annotations_real(shared_data: Path) -> None:
    times, labels = load_beat_annotations(shared_data / "asap/Bach/Prelude/bwv_860/ZhangH04M_annotations.txt")
    assert len(times) == len(labels) == 145
    assert times[0] == pytest.approx(1.022136)
    assert labels[:2] == ["db,24/16,1", "b"]
    assert (np.diff(times) >= 0).all()
    assert {lab.split(",")[0] for lab in labels} <= {"db", "b", "bR"}


def test_beat_annotations_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "x_annotations.txt"
    path.write_text("0.5\t0.5\tdb\nabc\t1.0\tb\n")
    with pytest.raises(InputError, match="line 2") as info:
        load_beat_annotations(path)
    assert info.value.path == str(path)
