"""scripts/sweep_dev.py: the dev rule over settings, one tree or several seeds' trees per setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_dev.py"


def _tree(root: Path, dev: list[tuple[float, float]], model: str = "s3") -> str:
    """A results tree whose fold k has dev figures dev[k] (pairwise, R²) and the validation figures (0.5, 0)."""
    for fold, (pw, r2) in enumerate(dev):
        folder = root / "train" / "symbolic" / model / f"fold_{fold}"
        folder.mkdir(parents=True)
        metrics = {"fold": fold, "pairwise_acc": 0.5, "r2": 0.0, "dev": {"pairwise_acc": pw, "r2": r2}, "best_epoch": 1}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(root)


def _sweep(tmp_path: Path, *trees: str) -> dict:
    out = tmp_path / "sweep.json"
    args = [sys.executable, str(SCRIPT), "--model", "s3", "--folds", "2", "--json", str(out)]
    for spec in trees:
        args += ["--tree", spec]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())


def test_seeds_of_one_setting_are_averaged_before_the_choice(tmp_path: Path) -> None:
    # One seed of "a" is the best single tree, but its other seed is poor: on average "b" wins.
    a1 = _tree(tmp_path / "a1", [(0.80, 0.4), (0.80, 0.4)])
    a2 = _tree(tmp_path / "a2", [(0.60, 0.2), (0.60, 0.2)])
    b1 = _tree(tmp_path / "b1", [(0.75, 0.3), (0.75, 0.3)])
    b2 = _tree(tmp_path / "b2", [(0.74, 0.3), (0.74, 0.3)])
    assert _sweep(tmp_path, f"a={a1}", f"b={b1}")["choice_on_dev"] == "a"
    out = _sweep(tmp_path, f"a={a1},{a2}", f"b={b1},{b2}")
    assert out["choice_on_dev"] == "b"
    a = out["settings"]["a"]
    assert a["per_tree_selection"] == pytest.approx([1.0, 0.7])
    assert a["dev"]["selection"][0] == pytest.approx(0.85)


def test_a_setting_with_a_seed_missing_folds_is_not_ranked(tmp_path: Path) -> None:
    a1 = _tree(tmp_path / "a1", [(0.80, 0.4), (0.80, 0.4)])
    a2 = _tree(tmp_path / "a2", [(0.90, 0.4)])
    b1 = _tree(tmp_path / "b1", [(0.70, 0.3), (0.70, 0.3)])
    out = _sweep(tmp_path, f"a={a1},{a2}", f"b={b1}")
    assert out["choice_on_dev"] == "b" and not out["settings"]["a"]["complete"]
