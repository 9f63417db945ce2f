"""Track comparison: paired bootstrap intervals over segment groups, the winner rule (significant
differences, else the cheapest), the deep-adds and best-baseline contrasts, and the audio veto."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pianoeval.core.config import validate_config
from pianoeval.core.constants import DIMENSIONS, N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.metrics import MetricsSuite, paired_bootstrap, percentile_interval
from pianoeval.steps.compare import run_compare

CONFIG = validate_config({"compare": {"resamples": 1000}})
N_GROUPS, PER_GROUP = 12, 6


def _truth(fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N, 19] and groups [N] of one fold's validation set (the same for every model)."""
    rng = np.random.default_rng(100 + fold)
    groups = np.repeat(np.arange(N_GROUPS) + 100 * fold, PER_GROUP)
    return rng.uniform(0.2, 0.8, (len(groups), N_DIMS)), groups


def _model(root: Path, model: str, noise: float, folds: int = 2, **extra: object) -> tuple[list[Path], list[Path]]:
    """A model's fold metrics.json and predictions.csv: labels plus `noise` (0 = perfect), metrics
    computed from those very predictions (the train step's contract)."""
    metrics, predictions = [], []
    for fold in range(folds):
        y, g = _truth(fold)
        rng = np.random.default_rng(zlib.crc32(f"{model}/{fold}".encode()))
        pred = np.clip(y + rng.normal(0, noise, y.shape), 0.0, 1.0) if noise < 1 else np.tile(y.mean(0), (len(y), 1))
        m = MetricsSuite().compute(pred, y, g)
        folder = root / model / f"fold_{fold}"
        df = pd.DataFrame({"segment_id": [f"{fold}/{k}" for k in range(len(y))], "split": "val", "group": g})
        for d, name in enumerate(DIMENSIONS):
            df[f"pred_{name}"], df[f"label_{name}"] = pred[:, d], y[:, d]
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / "predictions.csv", index=False)
        predictions.append(folder / "predictions.csv")
        record = {"model": model, "fold": fold, "track": "symbolic", "n_val": len(y), "wall_s": 1.0, **m, **extra}
        metrics.append(write_json(record, folder / "metrics.json"))
    return metrics, predictions


def _compare(root: Path, models: dict[str, tuple[float, dict]], track: str = "symbolic", **kwargs: object) -> dict:
    metrics, predictions = [], []
    for name, (noise, extra) in models.items():
        m, p = _model(root, name, noise, **extra)
        metrics += m
        predictions += p
    return run_compare(track, CONFIG, metrics, predictions, root / "out", **kwargs)


def test_bootstrap_point_is_the_fold_mean_and_its_interval_is_seeded() -> None:
    folds = []
    for fold in range(3):
        y, g = _truth(fold)
        rng = np.random.default_rng(fold)
        folds.append({"a": (y + rng.normal(0, 0.05, y.shape), y, g), "b": (y + rng.normal(0, 0.2, y.shape), y, g)})
    boot = paired_bootstrap(folds, n_resamples=1000, seed=3)
    for model in ("a", "b"):
        suite = [MetricsSuite().compute(*fold[model]) for fold in folds]
        assert boot[model]["pairwise_acc"][0] == pytest.approx(np.mean([s["pairwise_acc"] for s in suite]))
        assert boot[model]["r2"][0] == pytest.approx(np.mean([s["r2"] for s in suite]))
        low, high = percentile_interval(boot[model]["pairwise_acc"][1])
        assert low < boot[model]["pairwise_acc"][0] < high and high - low < 0.1
    again = paired_bootstrap(folds, n_resamples=1000, seed=3)
    np.testing.assert_array_equal(boot["a"]["r2"][1], again["a"]["r2"][1])
    # Paired: the difference's interval is narrower than the two intervals side by side suggest.
    diff = percentile_interval(boot["a"]["pairwise_acc"][1] - boot["b"]["pairwise_acc"][1])
    assert diff[0] > 0


def test_a_clearly_better_model_wins_significantly(tmp_path: Path) -> None:
    result = _compare(
        tmp_path,
        {
            "s1": (0.05, {"n_parameters": 9000}),
            "s2": (0.25, {"n_parameters": 10}),
            "baseline_ridge": (0.3, {}),
            "baseline_mean": (1.0, {}),
        },
    )
    assert result["model"] == "s1" and result["decided_by"] == "significant" and result["unbeaten"] == ["s1"]
    comparison = read_json(tmp_path / "out" / "comparison.json")
    for model in ("s1", "s2", "baseline_ridge", "baseline_mean"):
        for metric in ("pairwise_acc", "r2"):
            cell = comparison["models"][model][metric]
            assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
    assert comparison["best_baseline"] == "baseline_ridge"
    diffs = {(d["a"], d["b"], d["metric"]): d for d in comparison["differences"]}
    s1_s2 = diffs[("s1", "s2", "pairwise_acc")]
    assert s1_s2["ci95"][0] > 0 and "winner" in s1_s2["roles"]
    assert "vs_best_baseline" in diffs[("s2", "baseline_ridge", "r2")]["roles"]
    assert set(comparison["models"]["s1"]["vs_best_baseline"]) == {"b", "pairwise_acc", "r2"}
    # The winner against every other model, in winner.json too.
    assert {(d["b"], d["metric"]) for d in result["differences"]} == {
        (m, metric) for m in ("s2", "baseline_ridge", "baseline_mean") for metric in ("pairwise_acc", "r2")
    }
    assert (tmp_path / "out" / "differences.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "**s1**" in table and "significant" in table and "[" in table


def test_a_tie_goes_to_the_cheapest_and_baselines_never_win(tmp_path: Path) -> None:
    # Two equally good encoders (independent noise of one size), one with far fewer parameters.
    result = _compare(
        tmp_path,
        {"s1": (0.10, {"n_parameters": 5000}), "s3": (0.10, {"n_parameters": 500}), "baseline_trees": (0.0, {})},
    )
    assert result["decided_by"] == "tie_cheapest" and result["model"] == "s3"
    assert sorted(result["unbeaten"]) == ["s1", "s3"]


def test_deep_adds_is_each_encoder_minus_the_wide_part(tmp_path: Path) -> None:
    _compare(
        tmp_path,
        {"s1": (0.05, {}), "s1_deep": (0.3, {}), "baseline_blend": (0.1, {}), "baseline_ridge": (0.2, {})},
    )
    comparison = read_json(tmp_path / "out" / "comparison.json")
    adds = comparison["models"]["s1"]["deep_adds"]
    assert adds["b"] == "baseline_blend" and adds["pairwise_acc"]["ci95"][0] > 0
    assert comparison["models"]["s1_deep"]["deep_adds"]["r2"]["ci95"][1] < 0  # the deep part alone loses
    assert "deep_adds" not in comparison["models"]["baseline_ridge"]
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "deep adds (pairwise / R²)" in table


def test_only_candidate(tmp_path: Path) -> None:
    result = _compare(tmp_path, {"probe": (0.2, {}), "baseline_ridge": (0.1, {})}, track="audio")
    assert result["model"] == "probe" and result["decided_by"] == "only_candidate"


def _report(root: Path, model: str, drops: dict[str, float], veto: float = 15.0) -> Path:
    """A robustness report as run_audio_robustness writes it."""
    conditions = {
        c: {"pairwise_acc": 0.6, "r2": 0.1, "score_drop_pct": d, "pearson_r": 0.9, "passed": d <= veto}
        for c, d in drops.items()
    }
    worst = max(drops.values())
    return write_json(
        {
            "model": model,
            "veto_drop_pct": veto,
            "n_segments": 10,
            "clean": {"pairwise_acc": 0.7, "r2": 0.2},
            "conditions": conditions,
            "worst_drop_pct": worst,
            "passed": worst <= veto,
        },
        root / "audio_robustness" / model / "report.json",
    )


def test_audio_veto_removes_a_fragile_model(tmp_path: Path) -> None:
    reports = [
        _report(tmp_path, "a1", {"noise_10db": 30.0, "phone": 5.0}),  # the better model, but fragile
        _report(tmp_path, "probe", {"noise_10db": 8.0, "phone": 2.0}),
    ]
    result = _compare(tmp_path, {"a1": (0.05, {}), "probe": (0.2, {})}, track="audio", robustness=reports)
    assert result["model"] == "probe" and result["vetoed"] == ["a1"] and not result["all_vetoed"]
    assert result["robustness"]["worst_drop_pct"] == 8.0
    comparison = read_json(tmp_path / "out" / "comparison.json")
    assert comparison["models"]["a1"]["robustness"]["drop_pct"] == {"noise_10db": 30.0, "phone": 5.0}
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "worst drop %" in table and "vetoed" in table
    assert (tmp_path / "out" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_when_every_audio_model_is_vetoed_the_least_fragile_wins_flagged(tmp_path: Path) -> None:
    reports = [_report(tmp_path, "a1", {"phone": 40.0}), _report(tmp_path, "probe", {"phone": 20.0})]
    result = _compare(tmp_path, {"a1": (0.05, {}), "probe": (0.2, {})}, track="audio", robustness=reports)
    assert result["model"] == "probe" and result["all_vetoed"] and result["vetoed"] == ["a1", "probe"]
    assert result["decided_by"] == "all_vetoed"


def test_a_report_of_an_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not among the compared models"):
        _compare(tmp_path, {"probe": (0.2, {})}, track="audio", robustness=[_report(tmp_path, "a3", {"phone": 1.0})])
    assert not (tmp_path / "out").exists()


def test_predictions_that_do_not_give_the_metrics_are_refused(tmp_path: Path) -> None:
    metrics, predictions = _model(tmp_path, "s1", 0.1)
    m = read_json(metrics[0])
    write_json({**m, "pairwise_acc": m["pairwise_acc"] + 0.01}, metrics[0])  # stale metrics.json
    with pytest.raises(InputError, match=r"differs from metrics\.json"):
        run_compare("symbolic", CONFIG, metrics, predictions, tmp_path / "out")
    with pytest.raises(InputError, match=r"no predictions\.csv beside this metrics file"):
        run_compare("symbolic", CONFIG, metrics, predictions[:1], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fusion_compares_against_the_single_track_winners(tmp_path: Path) -> None:
    ref_metrics, ref_predictions = _model(tmp_path / "train", "s2", 0.05)
    metrics, predictions = [], list(ref_predictions)
    for name in ("f1", "f2"):
        m, p = _model(tmp_path, name, 0.2)
        metrics += m
        predictions += p
    result = run_compare("fusion", CONFIG, metrics, predictions, tmp_path / "out", references=ref_metrics)
    comparison = read_json(tmp_path / "out" / "comparison.json")
    assert comparison["models"]["symbolic/s2"]["reference"] and comparison["best_baseline"] == "symbolic/s2"
    assert result["model"] in ("f1", "f2")  # a reference is never eligible, even when it is better
    gain = comparison["models"][result["model"]]["vs_best_baseline"]["pairwise_acc"]
    assert gain["ci95"][1] < 0  # the fusion is worse than the symbolic winner, and the interval says so


def test_transcribed_validation_scores_get_their_own_column(tmp_path: Path) -> None:
    extra = {"val_transcribed": {"pairwise_acc": 0.6, "r2": 0.1, "n": 10}}
    result = _compare(tmp_path, {"s1": (0.1, extra), "baseline_ridge": (0.2, extra)})
    assert result["model"] == "s1"  # the winner rule still reads the ground-truth MIDI scores
    summary = read_json(tmp_path / "out" / "comparison.json")["models"]
    assert summary["s1"]["val_transcribed"]["pairwise_acc_mean"] == pytest.approx(0.6)
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "transcribed acc / R²" in table and "0.600 / 0.100" in table


def _declared(rule: str) -> set[str]:
    """The file names the checkpoint `rule` of rules/compare.smk declares in results/compare/{track}/."""
    import re

    text = (Path(__file__).resolve().parents[1] / "rules" / "compare.smk").read_text()
    block = re.search(rf"^checkpoint {rule}:\n(.*?)^    log:", text, re.M | re.S).group(1)
    return set(re.findall(r'"results/compare/\{track\}/([\w.]+)"', block))


@pytest.mark.parametrize("track", ["symbolic", "audio"])
def test_the_compare_step_writes_exactly_what_its_checkpoint_declares(tmp_path: Path, track: str) -> None:
    """The audio comparison (compare_audio) also draws the robustness chart; the other tracks' (compare)
    write none: every file the step writes is an output of its rule, and every output is written."""
    reports = [_report(tmp_path, "probe", {"phone": 2.0})] if track == "audio" else []
    _compare(tmp_path, {"probe": (0.2, {}), "baseline_mean": (1.0, {})}, track=track, robustness=reports)
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == _declared("compare_audio" if track == "audio" else "compare")
    assert ("robustness.png" in written) == (track == "audio")
