"""Folds: group-disjoint on real PercePiano, balanced, deterministic, and the leak check catches leaks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pianoeval.core.constants import N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.data.folds import FoldLeakError, check_folds, fold_groups, make_folds, read_folds, write_folds
from pianoeval.data.manifest import labelled_mask, make_rows
from pianoeval.data.percepiano import load_percepiano


@pytest.fixture(scope="module")
def percepiano(shared_data: Path) -> pd.DataFrame:
    return load_percepiano(shared_data / "percepiano")


@pytest.fixture(scope="module")
def seg_folds(percepiano: pd.DataFrame) -> dict:
    return make_folds(percepiano, k=4, protocol="segment", seed=42)


def _groups(df: pd.DataFrame, ids: list[str], column: str = "segment_group") -> set[str]:
    return set(df.set_index("segment_id").loc[ids, column])


def _synthetic(n_groups: int = 24) -> pd.DataFrame:
    """A manifest of n_groups musical segments with 2-6 performances each (uneven, as PercePiano's) plus
    one unlabelled row: what the generic fold checks need, without the real data."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "segment_id": f"piece{g % 5}_seg{g}_p{p}",
            "piece_id": f"piece{g % 5}",
            "segment_group": f"seg{g}",
            "performer": str(p),
            "tier": "T1",
            "source": "demo",
            "labels": rng.uniform(0.3, 0.8, N_DIMS),
        }
        for g in range(n_groups)
        for p in range(int(rng.integers(2, 7)))
    ]
    rows.append({**rows[0], "segment_id": "piece0_seg0_unlabelled", "labels": None})
    return make_rows(rows)


@pytest.fixture(params=["synthetic", "percepiano"], scope="module")
def corpus(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, dict]:
    """(manifest, its segment folds, k=4, seed 42): a synthetic corpus (always) and PercePiano (with the real data)."""
    df = _synthetic() if request.param == "synthetic" else request.getfixturevalue("percepiano")
    return df, make_folds(df, k=4, protocol="segment", seed=42)


def test_segment_folds_are_group_disjoint(corpus: tuple[pd.DataFrame, dict]) -> None:
    df, folds = corpus
    check_folds(folds, df)
    assert folds["protocol"] == "segment" and folds["k"] == 4 and folds["seed"] == 42
    for fold in folds["folds"]:
        val = _groups(df, fold["val"])
        assert not val & _groups(df, fold["train"])
        assert not val & _groups(df, fold["dev"])
        assert not _groups(df, fold["dev"]) & _groups(df, fold["train"])
        assert fold["val"] and fold["dev"] and fold["train"]


def test_every_labelled_segment_is_validated_once(corpus: tuple[pd.DataFrame, dict]) -> None:
    df, folds = corpus
    vals = [i for f in folds["folds"] for i in f["val"]]
    labelled = set(df["segment_id"][labelled_mask(df)])
    assert len(vals) == len(set(vals)) == len(labelled)
    assert set(vals) == labelled
    for f in folds["folds"]:
        assert len(f["train"]) + len(f["dev"]) + len(f["val"]) == len(labelled)


def test_percepiano_folds_cover_its_1189_labelled_segments(seg_folds: dict) -> None:
    assert sum(len(f["val"]) for f in seg_folds["folds"]) == 1189


def test_folds_are_balanced_and_dev_near_fraction(seg_folds: dict) -> None:
    sizes = [len(f["val"]) for f in seg_folds["folds"]]
    assert max(sizes) - min(sizes) <= 0.1 * np.mean(sizes)  # the largest merged group has 156 rows
    for f in seg_folds["folds"]:
        share = len(f["dev"]) / (len(f["dev"]) + len(f["train"]))
        assert 0.08 <= share <= 0.2


def test_d960_cuts_land_in_the_same_val_fold(percepiano: pd.DataFrame, seg_folds: dict) -> None:
    where = {i: f["fold"] for f in seg_folds["folds"] for i in f["val"]}
    assert where["Schubert_D960_mv2_16bars_1_04"] == where["Schubert_D960_mv2_8bars_1_06"]
    assert where["Schubert_D960_mv2_8bars_1_07"] == where["Schubert_D960_mv2_8bars_5_06"]


def test_determinism(corpus: tuple[pd.DataFrame, dict]) -> None:
    df, folds = corpus
    assert make_folds(df, k=4, protocol="segment", seed=42) == folds
    other = make_folds(df, k=4, protocol="segment", seed=7)
    assert [f["val"] for f in other["folds"]] != [f["val"] for f in folds["folds"]]


def test_performer_protocol(percepiano: pd.DataFrame) -> None:
    folds = make_folds(percepiano, k=4, protocol="performer", seed=42)
    check_folds(folds, percepiano)
    keys = fold_groups(percepiano, "performer").set_axis(percepiano["segment_id"])
    for fold in folds["folds"]:
        val = set(keys[fold["val"]])
        assert not val & set(keys[fold["train"] + fold["dev"]])
    # Score and Score2 renditions are one "performer": all in the same val fold.
    score_ids = percepiano["segment_id"][percepiano["performer"].isin(["Score", "Score2"]) & labelled_mask(percepiano)]
    where = {i: f["fold"] for f in folds["folds"] for i in f["val"]}
    assert len({where[i] for i in score_ids}) == 1
    # Beethoven pianist 11 is the repo's person 5, so shares a group with Schubert pianist 5.
    assert keys["Beethoven_WoO80_thema_8bars_11_1"] == keys["Schubert_D960_mv2_8bars_5_01"] == "percepiano:5"


def _leak(folds: dict, kind: str, df: pd.DataFrame) -> tuple[dict, str]:
    bad = copy.deepcopy(folds)
    f0 = bad["folds"][0]
    if kind == "group_in_train_and_val":
        moved = f0["val"].pop()
        f0["train"].append(moved)
        return bad, df.set_index("segment_id").at[moved, "segment_group"]
    if kind == "id_twice":
        f0["train"].append(f0["train"][0])
        return bad, "more than once"
    if kind == "unknown_id":
        f0["val"].append("nope_8bars_1_1")
        return bad, "nope_8bars_1_1"
    if kind == "empty_val":
        f0["train"] += f0["val"]
        f0["val"] = []
        return bad, "empty"
    if kind == "unlabelled_id":
        f0["train"].append(df["segment_id"][~labelled_mask(df)].iloc[0])
        return bad, "unlabelled"
    f0["dev"].append(f0["train"].pop())  # dev_and_train
    return bad, "dev and train"


LEAKS = ["group_in_train_and_val", "id_twice", "unknown_id", "empty_val", "unlabelled_id", "dev_and_train"]


@pytest.mark.parametrize("kind", LEAKS, ids=LEAKS)
def test_check_folds_catches_bad_folds(kind: str, corpus: tuple[pd.DataFrame, dict]) -> None:
    df, folds = corpus
    check_folds(folds, df)  # the folds as made pass
    bad, expected = _leak(folds, kind, df)
    with pytest.raises(InputError, match=expected) as info:
        check_folds(bad, df, path="folds.json")
    assert info.value.path == "folds.json"
    if kind in ("group_in_train_and_val", "dev_and_train"):
        assert isinstance(info.value, FoldLeakError)


def test_write_read_round_trip(tmp_path: Path, corpus: tuple[pd.DataFrame, dict]) -> None:
    folds = corpus[1]
    path = write_folds(folds, tmp_path / "folds" / "folds.json")
    assert read_folds(path) == folds
    path.write_text('{"protocol": "segment", "k": 2, "folds": []}')
    with pytest.raises(InputError, match="fold entries") as info:
        read_folds(path)
    assert info.value.path == str(path)


def _toy(n_groups: int, per_group: int = 3) -> pd.DataFrame:
    rows = [
        {
            "segment_id": f"g{g}_{p}",
            "piece_id": "toy",
            "segment_group": f"g{g}",
            "performer": str(p),
            "tier": "T1",
            "source": "demo",
            "labels": np.full(N_DIMS, 0.5),
        }
        for g in range(n_groups)
        for p in range(per_group)
    ]
    rows.append({**rows[0], "segment_id": "unlabelled", "labels": None})
    return make_rows(rows)


def test_toy_folds_skip_unlabelled_and_refuse_too_many_folds() -> None:
    df = _toy(6)
    folds = make_folds(df, k=3, seed=1, dev_fraction=0.2)
    check_folds(folds, df)
    assert all(len(f["val"]) == 6 for f in folds["folds"])  # 2 groups of 3 each
    assert all("unlabelled" not in f["train"] + f["dev"] + f["val"] for f in folds["folds"])
    with pytest.raises(InputError, match="k=7"):
        make_folds(df, k=7)
    with pytest.raises(InputError, match="protocol"):
        make_folds(df, k=2, protocol="random")
    no_dev = make_folds(df, k=3, dev_fraction=0.0)
    assert all(f["dev"] == [] for f in no_dev["folds"])
