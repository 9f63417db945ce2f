"""PercePiano loader: real counts and labels, merged overlapping cuts, and errors naming the file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pianoeval.core.constants import N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.data.manifest import label_matrix, labelled_mask, validate_manifest
from pianoeval.data.percepiano import (
    load_percepiano,
    longest_common_run,
    merge_overlapping_cuts,
    parse_segment_id,
    performer_fold_key,
    read_index,
)

MEAN = "label_2round_mean_reg_19_with0_rm_highstd0.json"
STD = "label_2round_std_reg_19_with0_rm_highstd0.json"


@pytest.fixture(scope="module")
def percepiano(shared_data: Path) -> pd.DataFrame:
    return load_percepiano(shared_data / "percepiano")


def _group(df: pd.DataFrame, sid: str) -> str:
    return df.loc[df["segment_id"] == sid, "segment_group"].item()


def test_real_counts_and_rows(percepiano: pd.DataFrame) -> None:
    validate_manifest(percepiano)
    assert len(percepiano) == 1202
    assert labelled_mask(percepiano).sum() == 1189
    assert set(percepiano["tier"]) == {"T1"} and set(percepiano["source"]) == {"percepiano"}
    # 17 WoO80 theme/variations, D935 no.3, D960 mv2 and mv3.
    assert percepiano["piece_id"].nunique() == 17 + 3
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in percepiano["midi_path"].iloc[::100])


def test_canonical_unlabelled_are_the_renamed_score_midis(percepiano: pd.DataFrame) -> None:
    # The label script renamed `_Score_` to `_Score2_` for WoO80 segments 5-16 and D935 segment 1,
    # so those 13 Score MIDIs have no canonical label (12 Beethoven + 1 Schubert, not 13 Beethoven).
    unlabelled = percepiano[~labelled_mask(percepiano)]
    assert len(unlabelled) == 13
    assert set(unlabelled["performer"]) == {"Score"}
    assert unlabelled["piece_id"].str.startswith("Beethoven_WoO80").sum() == 12
    assert "Schubert_D935_no.3_4bars_Score_1" in set(unlabelled["segment_id"])
    assert unlabelled["label_std"].isna().all()


def test_repo_root_version_labels_everything(shared_data: Path) -> None:
    df = load_percepiano(shared_data / "percepiano", label_version="repo_root", merge_overlaps=False)
    assert labelled_mask(df).sum() == 1202
    assert df["segment_group"].nunique() == 99  # the README's distinct cuts, before merging


def test_labels_equal_the_json_without_pianist_index(percepiano: pd.DataFrame, shared_data: Path) -> None:
    sid = "Schubert_D935_no.3_4bars_1_25"
    raw = json.loads((shared_data / "percepiano/labels" / MEAN).read_text())[sid]
    std = json.loads((shared_data / "percepiano/labels" / STD).read_text())[sid]
    assert len(raw) == N_DIMS + 1
    row = percepiano.index[percepiano["segment_id"] == sid].item()
    np.testing.assert_allclose(label_matrix(percepiano)[row], raw[:N_DIMS], rtol=1e-6)
    np.testing.assert_allclose(percepiano.at[row, "label_std"], std, rtol=1e-6)
    assert label_matrix(percepiano)[row][1] == pytest.approx(0.7143, abs=1e-4)


def test_d960_overlapping_cuts_share_a_group(percepiano: pd.DataFrame) -> None:
    # The 16-bar cut 04 of mv2 contains the 8-bar cuts 06 and 07 (same pianist 1 here).
    g16 = _group(percepiano, "Schubert_D960_mv2_16bars_1_04")
    assert _group(percepiano, "Schubert_D960_mv2_8bars_1_06") == g16
    assert _group(percepiano, "Schubert_D960_mv2_8bars_1_07") == g16
    # 8-bar cut 09 shares only a 30-note motif with cut 06 (16%): different music, kept apart.
    assert _group(percepiano, "Schubert_D960_mv2_8bars_1_09") != g16


def test_score_and_score2_share_a_group(percepiano: pd.DataFrame) -> None:
    assert _group(percepiano, "Beethoven_WoO80_thema_8bars_Score_1") == _group(
        percepiano, "Beethoven_WoO80_thema_8bars_Score2_1"
    )


def test_number_of_merged_groups(percepiano: pd.DataFrame) -> None:
    groups = percepiano.groupby(percepiano["piece_id"].str.extract(r"^(Beethoven|Schubert_D935|Schubert_D960_mv\d)")[0])
    n = groups["segment_group"].nunique().to_dict()
    # Beethoven and D935 cuts are all distinct; D960 mv2's 26 cuts -> 9 groups,
    # mv3's 43 cuts (8/16-bar overlaps and repeated sections of the scherzo) -> 8.
    assert n == {"Beethoven": 17, "Schubert_D935": 13, "Schubert_D960_mv2": 9, "Schubert_D960_mv3": 8}
    assert percepiano["segment_group"].nunique() == 47


def test_performer_fold_key_matches_index(shared_data: Path) -> None:
    index = read_index(shared_data / "percepiano/index.csv")
    ours = [performer_fold_key(p, q) for p, q in zip(index["piece"], index["performer"], strict=True)]
    assert ours == index["performer_fold_key"].tolist()
    assert performer_fold_key("Beethoven_WoO80_var3", "11") == 5
    assert performer_fold_key("Schubert_D935_no.3", "Score2") == -1


def test_parse_segment_id_takes_last_number_as_segment() -> None:
    assert parse_segment_id("Schubert_D960_mv3_8bars_12_05") == {
        "piece": "Schubert_D960_mv3", "bars": "8", "performer": "12", "segment": "05",
    }  # fmt: skip
    with pytest.raises(ValueError):
        parse_segment_id("no_bars_here")


def test_longest_common_run_hand_computed() -> None:
    assert longest_common_run(np.array([1, 2, 3, 4, 5]), np.array([9, 2, 3, 4, 7, 1, 2])) == 3
    assert longest_common_run(np.array([1]), np.array([])) == 0


def test_merge_is_transitive_and_ignores_short_runs() -> None:
    rng = np.random.default_rng(0)
    long = rng.integers(40, 90, size=200)
    seqs = {
        "x_16": long,
        "x_8a": long[10:110].copy(),  # contained in x_16
        "x_8b": long[100:190].copy(),  # also contained: joins via x_16
        "y": np.concatenate([long[:10], rng.integers(20, 39, size=80)]),  # shares only a 10-note run
    }
    groups = merge_overlapping_cuts(seqs)
    assert groups["x_8a"] == groups["x_8b"] == groups["x_16"] == "x_16"  # named after the longest cut
    assert groups["y"] == "y"


def _tiny_root(tmp_path: Path, tiny_midi: Callable[..., Path]) -> Path:
    """A 3-performance PercePiano layout with real-format index and labels."""
    root = tmp_path / "pp"
    ids = ["Foo_4bars_1_1", "Foo_4bars_2_1", "Foo_4bars_Score_1"]
    for sid in ids:
        tiny_midi(f"pp/midi/performances/{sid}.mid")
    tiny_midi("pp/scores/midi/Foo_4bars_Score_1.mid")
    pd.DataFrame(
        {
            "id": ids,
            "piece": "Foo",
            "performer": ["1", "2", "Score"],
            "segment_group": "Foo_4bars_1",
            "midi": [f"midi/performances/{s}.mid" for s in ids],
            "score_midi": "scores/midi/Foo_4bars_Score_1.mid",
        }
    ).to_csv(root / "index.csv", index=False)
    (root / "labels").mkdir()
    (root / "labels" / MEAN).write_text(json.dumps({s: [0.5] * N_DIMS + [i] for i, s in enumerate(ids[:2])}))
    (root / "labels" / STD).write_text(json.dumps({s: [0.1] * N_DIMS for s in ids[:2]}))
    return root


def test_tiny_layout_loads(tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    df = load_percepiano(_tiny_root(tmp_path, tiny_midi))
    assert labelled_mask(df).tolist() == [True, True, False]
    assert set(df["segment_group"]) == {"Foo_4bars_1"}


def _corrupt(root: Path, kind: str) -> Path:
    mean = root / "labels" / MEAN
    if kind == "invalid_json":
        mean.write_text("{not json")
    elif kind == "short_label":
        mean.write_text(json.dumps({"Foo_4bars_1_1": [0.5] * 18}))
    elif kind == "out_of_range":
        mean.write_text(json.dumps({"Foo_4bars_1_1": [1.5] * N_DIMS}))
    elif kind == "orphan_key":
        mean.write_text(json.dumps({"Foo_4bars_9_1": [0.5] * N_DIMS}))
    elif kind == "missing_std":
        (root / "labels" / STD).unlink()
        return root / "labels" / STD
    elif kind == "missing_index":
        (root / "index.csv").unlink()
        return root / "index.csv"
    elif kind == "missing_midi":
        target = root / "midi/performances/Foo_4bars_2_1.mid"
        target.unlink()
        return target
    return mean


BAD = [
    "invalid_json",
    "short_label",
    "out_of_range",
    "orphan_key",
    "missing_std",
    "missing_index",
    "missing_midi",
]


@pytest.mark.parametrize("kind", BAD, ids=BAD)
def test_bad_inputs_raise_input_error_naming_the_file(
    kind: str, tmp_path: Path, tiny_midi: Callable[..., Path]
) -> None:
    root = _tiny_root(tmp_path, tiny_midi)
    bad = _corrupt(root, kind)
    with pytest.raises(InputError) as info:
        load_percepiano(root)
    assert info.value.path == str(bad.resolve())


def test_unknown_label_version(tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    with pytest.raises(InputError, match="label_version"):
        load_percepiano(_tiny_root(tmp_path, tiny_midi), label_version="v3")


def test_index_with_wrong_fold_key_is_refused(tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    root = _tiny_root(tmp_path, tiny_midi)
    index = pd.read_csv(root / "index.csv")
    index["performer_fold_key"] = [1, 2, 5]  # Score must be 0
    index.to_csv(root / "index.csv", index=False)
    with pytest.raises(InputError, match="Foo_4bars_Score_1"):
        load_percepiano(root)
    shutil.rmtree(root)
