"""Track comparison: the winner rule, and the audio track's robustness veto."""

from __future__ import annotations

from pathlib import Path

import pytest

from pianoeval.core.config import validate_config
from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.io import read_json, write_json
from pianoeval.steps.compare import run_compare


def _metrics(root: Path, model: str, pairwise: float, r2: float, folds: int = 2) -> list[Path]:
    """Fold metrics files of one model (the train step's contract, trimmed to what compare reads)."""
    paths = []
    for fold in range(folds):
        per_dim = {d: {"pairwise_acc": pairwise, "r2": r2} for d in DIMENSIONS}
        paths.append(
            write_json(
                {"model": model, "fold": fold, "pairwise_acc": pairwise + 0.01 * fold, "r2": r2,
                 "per_dimension": per_dim, "n_val": 10, "wall_s": 1.0},
                root / model / f"fold_{fold}" / "metrics.json",
            )
        )  # fmt: skip
    return paths


def _report(root: Path, model: str, drops: dict[str, float], veto: float = 15.0) -> Path:
    """A robustness report as run_audio_robustness writes it."""
    conditions = {c: {"pairwise_acc": 0.6, "r2": 0.1, "score_drop_pct": d, "pearson_r": 0.9, "passed": d <= veto}
                  for c, d in drops.items()}  # fmt: skip
    worst = max(drops.values())
    return write_json(
        {"model": model, "veto_drop_pct": veto, "n_segments": 10, "clean": {"pairwise_acc": 0.7, "r2": 0.2},
         "conditions": conditions, "worst_drop_pct": worst, "passed": worst <= veto},
        root / "audio_robustness" / model / "report.json",
    )  # fmt: skip


CONFIG = validate_config({})


def test_winner_is_best_pairwise_with_r2_tiebreak_and_never_a_baseline(tmp_path: Path) -> None:
    files = (
        _metrics(tmp_path, "s1", 0.700, 0.30)
        + _metrics(tmp_path, "s2", 0.703, 0.40)  # within the 0.005 tie of s1, better R²
        + _metrics(tmp_path, "s3", 0.690, 0.50)
        + _metrics(tmp_path, "baseline_trees", 0.800, 0.60)
    )
    result = run_compare("symbolic", CONFIG, files, tmp_path / "out")
    assert result["model"] == "s2" and "robustness" not in result
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "**s2**" in table and "worst drop" not in table
    assert not (tmp_path / "out" / "robustness.png").exists()


def test_audio_veto_removes_a_fragile_model(tmp_path: Path) -> None:
    files = _metrics(tmp_path, "a1", 0.75, 0.4) + _metrics(tmp_path, "probe", 0.70, 0.3)
    reports = [
        _report(tmp_path, "a1", {"noise_10db": 30.0, "phone": 5.0}),  # the better model, but fragile
        _report(tmp_path, "probe", {"noise_10db": 8.0, "phone": 2.0}),
    ]
    result = run_compare("audio", CONFIG, files, tmp_path / "out", reports)
    assert result["model"] == "probe" and result["vetoed"] == ["a1"] and not result["all_vetoed"]
    assert result["robustness"]["worst_drop_pct"] == 8.0
    comparison = read_json(tmp_path / "out" / "comparison.json")
    assert comparison["models"]["a1"]["robustness"]["drop_pct"] == {"noise_10db": 30.0, "phone": 5.0}
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "worst drop %" in table and "vetoed" in table
    assert (tmp_path / "out" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_when_every_audio_model_is_vetoed_the_least_fragile_wins_flagged(tmp_path: Path) -> None:
    files = _metrics(tmp_path, "a1", 0.75, 0.4) + _metrics(tmp_path, "probe", 0.70, 0.3)
    reports = [_report(tmp_path, "a1", {"phone": 40.0}), _report(tmp_path, "probe", {"phone": 20.0})]
    result = run_compare("audio", CONFIG, files, tmp_path / "out", reports)
    assert result["model"] == "probe" and result["all_vetoed"] and result["vetoed"] == ["a1", "probe"]


def test_a_report_of_an_unknown_model_is_refused(tmp_path: Path) -> None:
    from pianoeval.core.errors import InputError

    files = _metrics(tmp_path, "probe", 0.70, 0.3)
    with pytest.raises(InputError, match="not among the compared models"):
        run_compare("audio", CONFIG, files, tmp_path / "out", [_report(tmp_path, "a3", {"phone": 1.0})])
    assert not (tmp_path / "out").exists()


def test_transcribed_validation_scores_get_their_own_column(tmp_path: Path) -> None:
    files = _metrics(tmp_path, "s1", 0.70, 0.3) + _metrics(tmp_path, "baseline_ridge", 0.65, 0.2)
    for path, acc in zip(files, (0.60, 0.62, 0.55, 0.57), strict=True):
        m = read_json(path)
        write_json({**m, "val_transcribed": {"pairwise_acc": acc, "r2": 0.1, "n": 10}}, path)
    result = run_compare("symbolic", CONFIG, files, tmp_path / "out")
    assert result["model"] == "s1"  # the winner rule still reads the ground-truth MIDI scores
    summary = read_json(tmp_path / "out" / "comparison.json")["models"]
    assert summary["s1"]["val_transcribed"]["pairwise_acc_mean"] == pytest.approx(0.61)
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "transcribed acc / R²" in table and "0.610 / 0.100" in table and "0.560 / 0.100" in table
