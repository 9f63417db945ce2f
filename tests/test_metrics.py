"""Metrics against hand-computed values on tiny arrays, and R² against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from pianoeval.core.constants import DIMENSIONS, N_DIMS
from pianoeval.metrics import (
    MetricsSuite,
    compute_robustness_metrics,
    format_comparison_table,
    pairwise_accuracy,
    r2_scores,
)

# Five performances: rows 0-2 play segment "a", rows 3-4 segment "b"; two dimensions.
TARGET = np.array([[0.2, 0.5], [0.4, 0.52], [0.6, 0.9], [0.3, 0.1], [0.5, 0.1]])
PRED = np.array([[0.1, 0.3], [0.5, 0.2], [0.3, 0.2], [0.9, 0.4], [0.2, 0.6]])
GROUPS = np.array(["a", "a", "a", "b", "b"])
# Within-group pairs: (0,1) (0,2) (1,2) in "a", (3,4) in "b"; threshold 0.05.
# dim 0: (0,1) dt=-.2 dp=-.4 ok 1 | (0,2) dt=-.4 dp=-.2 ok 1 | (1,2) dt=-.2 dp=+.2 wrong 0
#        | (3,4) dt=-.2 dp=+.7 wrong 0                                  -> 2/4 = 0.5
# dim 1: (0,1) dt=-.02 ambiguous, left out | (0,2) dt=-.4 dp=+.1 wrong 0
#        | (1,2) dt=-.38 dp=0 tie 0.5 | (3,4) dt=0 no order, left out   -> 0.5/2 = 0.25
# overall: (2 + 0.5) / 6 = 0.41667
NAMES = ("d0", "d1")


def test_pairwise_accuracy_hand_computed() -> None:
    res = pairwise_accuracy(PRED, TARGET, GROUPS, threshold=0.05, dimension_names=NAMES)
    assert res["n_pairs"] == 6
    assert res["per_dimension"] == {"d0": pytest.approx(0.5), "d1": pytest.approx(0.25)}
    assert res["per_dimension_pairs"] == {"d0": 4, "d1": 2}
    assert res["overall"] == pytest.approx(2.5 / 6)


def test_pairwise_accuracy_counts_ambiguous_pair_below_threshold() -> None:
    # With threshold 0.01 the dim-1 pair (0,1) (dt=-0.02, dp=+0.1: wrong) is counted too.
    res = pairwise_accuracy(PRED, TARGET, GROUPS, threshold=0.01, dimension_names=NAMES)
    assert res["per_dimension"]["d1"] == pytest.approx(0.5 / 3)
    assert res["n_pairs"] == 7


def test_pairwise_accuracy_ignores_cross_group_pairs() -> None:
    # Changing predictions only across groups (shifting group "b" as a block) changes nothing;
    # putting everything in one group adds cross pairs and changes the counts.
    shifted = PRED.copy()
    shifted[3:] += 10.0
    base = pairwise_accuracy(PRED, TARGET, GROUPS, threshold=0.05)
    assert pairwise_accuracy(shifted, TARGET, GROUPS, threshold=0.05) == base
    one_group = pairwise_accuracy(PRED, TARGET, np.zeros(5, dtype=int), threshold=0.05)
    assert one_group["n_pairs"] > base["n_pairs"]


def test_pairwise_accuracy_tie_scores_half() -> None:
    target = np.array([[0.2], [0.8]])
    res = pairwise_accuracy(np.array([[0.5], [0.5]]), target, np.array([1, 1]), threshold=0.05)
    assert res["overall"] == pytest.approx(0.5)


def test_pairwise_accuracy_no_pairs_is_none() -> None:
    res = pairwise_accuracy(PRED, TARGET, np.arange(5), threshold=0.05, dimension_names=NAMES)
    assert res["overall"] is None
    assert res["per_dimension"] == {"d0": None, "d1": None}
    assert res["n_pairs"] == 0


def test_pairwise_accuracy_accepts_tensors() -> None:
    res = pairwise_accuracy(torch.tensor(PRED), torch.tensor(TARGET), torch.tensor([0, 0, 0, 1, 1]), 0.05)
    assert res["overall"] == pytest.approx(2.5 / 6)


def test_r2_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    target = rng.random((30, 4))
    pred = target + rng.normal(0, 0.2, size=target.shape)
    target[:, 2] = 0.5  # constant target, imperfect prediction: sklearn gives 0.0
    target[:, 3] = 0.7
    pred[:, 3] = 0.7  # constant target, perfect prediction: sklearn gives 1.0
    res = r2_scores(pred, target)
    assert res["mean"] == pytest.approx(r2_score(target, pred))
    per = list(res["per_dimension"].values())
    assert per == pytest.approx(list(r2_score(target, pred, multioutput="raw_values")))
    assert per[2] == 0.0 and per[3] == 1.0


def test_r2_single_row_is_nan() -> None:
    assert math.isnan(r2_scores(np.ones((1, 3)), np.ones((1, 3)))["mean"])


def test_robustness_identical_predictions() -> None:
    res = compute_robustness_metrics(PRED, PRED.copy(), TARGET, GROUPS)
    assert res["pearson_r"] == pytest.approx(1.0)
    assert res["pearson_r_per_dimension"] == pytest.approx([1.0, 1.0])
    assert res["mean_abs_change"] == 0.0
    assert res["score_drop_pct"] == 0.0
    assert res["primary_metric"] == "pairwise_acc"


def test_robustness_drop_hand_computed() -> None:
    target = np.array([[0.1], [0.5], [0.9], [0.1], [0.9]])
    groups = np.array([0, 0, 0, 1, 1])
    clean = target.copy()  # all 4 pairs right: accuracy 1.0
    aug = np.array([[0.1], [0.5], [0.9], [0.9], [0.1]])  # pair (3,4) flipped: 3/4 = 0.75
    res = compute_robustness_metrics(clean, aug, target, groups)
    assert res["clean_score"] == 1.0 and res["aug_score"] == 0.75
    assert res["score_drop_pct"] == pytest.approx(25.0)
    # Without groups the primary metric is R²: clean 1; augmented 1 - SSres/SStot = 1 - 1.28/0.64 = -1,
    # so the drop is 100 * (1 - (-1)) / 1 = 200 %.
    no_groups = compute_robustness_metrics(clean, aug, target)
    assert no_groups["primary_metric"] == "r2"
    assert no_groups["aug_score"] == pytest.approx(-1.0)
    assert no_groups["score_drop_pct"] == pytest.approx(200.0)
    assert compute_robustness_metrics(clean, aug)["score_drop_pct"] is None


def test_metrics_suite_contract() -> None:
    rng = np.random.default_rng(1)
    target = rng.random((12, N_DIMS))
    pred = target + rng.normal(0, 0.1, size=target.shape)
    groups = np.repeat(np.arange(4), 3)
    out = MetricsSuite().compute(pred, target, groups)
    assert {"pairwise_acc", "r2", "per_dimension", "n_pairs", "n"} <= set(out)
    assert list(out["per_dimension"]) == list(DIMENSIONS)
    assert out["n"] == 12
    assert out["pairwise_acc"] == pytest.approx(pairwise_accuracy(pred, target, groups)["overall"])
    assert out["r2"] == pytest.approx(r2_score(target, pred))
    first = out["per_dimension"][DIMENSIONS[0]]
    assert first["r2"] == pytest.approx(r2_score(target[:, 0], pred[:, 0]))
    # Stricter threshold can only remove pairs.
    assert MetricsSuite(ambiguous_threshold=0.3).compute(pred, target, groups)["n_pairs"] < out["n_pairs"]


def test_format_comparison_table() -> None:
    rows = [
        {"model": "s1", "acc": 0.61234, "n": 4},
        {"model": "a|b", "acc": float("nan"), "n": 4},
        {"model": "s2", "acc": 0.7, "n": 3},
    ]
    table = format_comparison_table(rows, ["model", "acc", "n"], sort_by="acc")
    assert table.splitlines() == [
        "| model | acc | n |",
        "|---|---|---|",
        "| s2 | 0.700 | 3 |",
        "| s1 | 0.612 | 4 |",
        "| a\\|b | – | 4 |",
    ]
    ascending = format_comparison_table(rows, ["model", "acc"], sort_by="acc", descending=False)
    assert [line.split(" | ")[0] for line in ascending.splitlines()[2:]] == ["| s1", "| s2", "| a\\|b"]
    by_name = format_comparison_table(rows, ["model"], sort_by="model", descending=False)
    assert by_name.splitlines()[2:] == ["| a\\|b |", "| s1 |", "| s2 |"]
    with pytest.raises(ValueError, match="sort_by"):
        format_comparison_table(rows, ["model"], sort_by="acc")
