"""scripts/bench_pretraining.py paired: two trees' arms and a reference row from a third tree, paired."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script
from test_compare import CONFIG, _model


def _bench():
    return load_script("bench_pretraining")


def test_a_reference_row_from_another_tree_is_paired_with_every_arm(tmp_path: Path) -> None:
    trees = {name: tmp_path / name / "train" / "symbolic" for name in ("a", "b", "ref")}
    _model(trees["a"], "s3_deep", 0.05)
    _model(trees["b"], "s3_deep", 0.10)
    _model(trees["ref"], "baseline_ridge", 0.20)
    out = _bench().paired(
        tmp_path / "a",
        tmp_path / "b",
        CONFIG,
        ["s3_deep"],
        ("voice", "plain"),
        {"ridge": trees["ref"] / "baseline_ridge"},
    )
    assert set(out["rows"]) == {"s3_deep voice", "s3_deep plain", "ridge"}
    diffs = {(d["a"], d["b"], d["metric"]): d for d in out["differences"]}
    assert set(diffs) == {
        (a, b, m)
        for a, b in [("s3_deep voice", "s3_deep plain"), ("s3_deep voice", "ridge"), ("s3_deep plain", "ridge")]
        for m in ("pairwise_acc", "r2")
    }
    # Less noise is better, and each difference is the difference of the rows' means.
    rows = out["rows"]
    for (a, b, metric), d in diffs.items():
        assert d["mean"] > 0 and d["ci95"][0] > 0
        assert d["mean"] == pytest.approx(rows[a][metric]["mean"] - rows[b][metric]["mean"], abs=1e-9)


def test_a_reference_row_without_fold_outputs_is_refused(tmp_path: Path) -> None:
    _model(tmp_path / "a" / "train" / "symbolic", "s3_deep", 0.05)
    with pytest.raises(SystemExit, match="no fold_"):
        _bench().paired(tmp_path / "a", tmp_path / "a", CONFIG, ["s3_deep"], ("x", "y"), {"ref": tmp_path / "none"})
