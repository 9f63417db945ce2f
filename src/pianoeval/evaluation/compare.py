"""Compare models across folds with a paired bootstrap over segment groups and pick winners by a documented
rule (its table and plots: evaluation/report.py).

Intervals (`metrics.paired_bootstrap`): the folds' validation predictions (`predictions.csv`) are
resampled by whole segment groups, pooled over folds, with replacement, the same draw for every model
(each drawn group stays with its fold); a statistic is the mean over folds of the fold metric (as the
point estimate). The 2.5th and 97.5th
percentiles of `compare.resamples` draws (seeded by the config's seed) are the 95 % interval, for each
model's pairwise accuracy and R² and for differences between models (paired: the same draws).

Winner rule (per track): a model *beats* another when the interval of their difference in pairwise
accuracy lies above 0, or, when that interval holds 0, the interval of their difference in R² does.
Among the eligible models (not baselines, not references, not vetoed) that no eligible model beats,
the cheapest wins: fewest parameters, then least training time. `decided_by` says `significant` (one
model is left unbeaten), `tie_cheapest` (several are; the cost decided) or `only_candidate`. On the
audio track, a model whose score drops by more than `robustness.veto_drop_pct` under any recording
condition (`results/audio_robustness/<model>/report.json`) is vetoed; if every model is, the one with
the smallest worst drop wins (`decided_by: all_vetoed`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json

log = logging.getLogger(__name__)

METRICS = ("pairwise_acc", "r2")
# The interval every comparison reports (a 95 % percentile interval).
LEVEL = 0.95
# A fold's mean from predictions.csv must equal metrics.json's to this (they are the same predictions).
CONSISTENCY_TOL = 1e-6
WINNER_RULE = (
    "paired bootstrap over the validation segment groups (pooled over folds, mean over folds); "
    "a model beats another when the 95% interval of their pairwise-accuracy difference lies above 0, or, "
    "when it holds 0, that of their R² difference does; among the eligible models no eligible model beats, "
    "the cheapest wins (parameters, then training time); baselines and references are never eligible"
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std of the finite values (NaN when there are none)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(arr):
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())


def _name(m: dict[str, Any], reference: bool) -> str:
    """The row name of a metrics file: the model, or `<track>/<model>` for a reference (fusion's view of
    the single-track winners)."""
    return f"{m.get('track', 'track')}/{m['model']}" if reference else str(m["model"])


def read_runs(metrics_files: list[Path], references: list[Path] = ()) -> dict[str, list[dict[str, Any]]]:
    """Fold metrics grouped by row name, each with its `_path`; references flagged `_reference`."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for path, reference in [(p, False) for p in metrics_files] + [(p, True) for p in references]:
        m = read_json(path)
        for key in ("pairwise_acc", "r2", "model", "fold"):
            if key not in m:
                raise InputError(f"metrics file lacks '{key}'", path)
        by_model.setdefault(_name(m, reference), []).append({**m, "_path": Path(path), "_reference": reference})
    for runs in by_model.values():
        runs.sort(key=lambda r: r["fold"])
    return by_model


def summarise(by_model: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per model: fold metrics (mean, std, per fold), per-dimension means, cost and flags; the
    intervals are added by add_intervals."""
    summary: dict[str, dict[str, Any]] = {}
    for model, runs in sorted(by_model.items()):
        entry: dict[str, Any] = {}
        for metric in METRICS:
            mean, std = _mean_std([r[metric] for r in runs])
            entry[metric] = {"mean": mean, "std": std, "folds": {int(r["fold"]): r[metric] for r in runs}}
        per_dim = {}
        for dim in DIMENSIONS:
            cells = [r["per_dimension"].get(dim, {}) for r in runs if r.get("per_dimension")]
            per_dim[dim] = {metric: _mean_std([c.get(metric) for c in cells])[0] for metric in METRICS}
        params = [r["n_parameters"] for r in runs if r.get("n_parameters") is not None]
        entry.update(
            n_folds=len(runs),
            baseline=model.startswith("baseline_"),
            reference=bool(runs[0]["_reference"]),
            wall_s_total=float(sum(r.get("wall_s", 0.0) for r in runs)),
            n_parameters=round(float(np.mean(params))) if params else None,
            n_val={int(r["fold"]): r.get("n_val") for r in runs},
            per_dimension=per_dim,
        )
        if all("val_transcribed" in r for r in runs):
            # The same validation segments scored from TransKun's transcription of their rendering.
            entry["val_transcribed"] = {
                f"{metric}_mean": _mean_std([r["val_transcribed"][metric] for r in runs])[0] for metric in METRICS
            }
        if any("error_correlation" in r for r in runs):
            entry["error_correlation_mean"] = _mean_std([r.get("error_correlation") for r in runs])[0]
        summary[model] = entry
    return summary


def read_fold_predictions(
    by_model: dict[str, list[dict[str, Any]]], predictions: list[Path]
) -> list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Validation rows per fold and model, {model: (pred [N, 19], labels [N, 19], groups [N])}, from
    each fold's predictions.csv, which must sit beside one of the metrics files. InputError when one
    is missing, or when two models put the same segment in different groups."""
    by_folder = {Path(p).parent.resolve(): Path(p) for p in predictions}
    folds: dict[int, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    group_of: dict[tuple[int, str], Any] = {}
    pred_cols, label_cols = [f"pred_{d}" for d in DIMENSIONS], [f"label_{d}" for d in DIMENSIONS]
    for model, runs in by_model.items():
        for run in runs:
            path = by_folder.get(run["_path"].parent.resolve())
            if path is None:
                raise InputError("no predictions.csv beside this metrics file among the inputs", run["_path"])
            df = pd.read_csv(path)
            missing = [c for c in ("segment_id", "split", "group", *pred_cols, *label_cols) if c not in df]
            if missing:
                raise InputError(f"predictions lack column(s) {', '.join(missing[:3])}", path)
            val = df[df["split"] == "val"]
            fold = int(run["fold"])
            for sid, group in zip(val["segment_id"], val["group"], strict=True):
                if group_of.setdefault((fold, sid), group) != group:
                    raise InputError(f"segment {sid} is in another group than in the other models' predictions", path)
            folds.setdefault(fold, {})[model] = (
                val[pred_cols].to_numpy(float),
                val[label_cols].to_numpy(float),
                val["group"].to_numpy(),
            )
    return [folds[f] for f in sorted(folds)]


def add_intervals(
    summary: dict[str, dict[str, Any]],
    boot: dict[str, dict[str, tuple[float, np.ndarray]]],
    by_model: dict[str, list[dict[str, Any]]],
) -> None:
    """Put each model's bootstrap interval (`ci95`) beside its mean; InputError naming a metrics file
    whose predictions.csv does not give its metrics (mismatched or stale files)."""
    from pianoeval.metrics import percentile_interval

    for model, entry in summary.items():
        for metric in METRICS:
            point, samples = boot[model][metric]
            mean = entry[metric]["mean"]
            if math.isfinite(mean) and not abs(point - mean) <= CONSISTENCY_TOL:
                raise InputError(
                    f"{model}: {metric} from predictions.csv ({point:.6f}) differs from metrics.json's ({mean:.6f})",
                    by_model[model][0]["_path"],
                )
            entry[metric]["ci95"] = percentile_interval(samples, LEVEL)


def difference(boot: dict[str, dict[str, tuple[float, np.ndarray]]], a: str, b: str, metric: str) -> dict[str, Any]:
    """`a - b` on `metric`: mean (of the point estimates) and the paired bootstrap's 95 % interval."""
    from pianoeval.metrics import percentile_interval

    (pa, sa), (pb, sb) = boot[a][metric], boot[b][metric]
    return {"a": a, "b": b, "metric": metric, "mean": pa - pb, "ci95": percentile_interval(sa - sb, LEVEL)}


def _excludes_zero_above(diff: dict[str, Any]) -> bool:
    """The interval of a difference lies entirely above 0."""
    low = diff["ci95"][0]
    return math.isfinite(low) and low > 0


def beats(boot: dict[str, dict[str, tuple[float, np.ndarray]]], a: str, b: str) -> bool:
    """Whether `a` beats `b`: pairwise-accuracy difference significantly above 0, or, when its interval
    holds 0, the R² difference significantly above 0."""
    acc = difference(boot, a, b, "pairwise_acc")
    if _excludes_zero_above(acc):
        return True
    acc_low, acc_high = acc["ci95"]
    holds_zero = not (math.isfinite(acc_low) and (acc_low > 0 or acc_high < 0))
    return holds_zero and _excludes_zero_above(difference(boot, a, b, "r2"))


def best_baseline(summary: dict[str, dict[str, Any]]) -> str | None:
    """The strongest non-eligible row: highest mean pairwise accuracy, then R² (references count)."""
    rows = [m for m, s in summary.items() if s["baseline"] or s["reference"]]
    key = _rank_key(summary)
    return max(rows, key=key) if rows else None


def _rank_key(summary: dict[str, dict[str, Any]]) -> Any:
    """Sort key: mean pairwise accuracy, then mean R² (NaN last)."""

    def key(m: str) -> tuple[float, float]:
        s = summary[m]
        return (np.nan_to_num(s["pairwise_acc"]["mean"], nan=-1.0), np.nan_to_num(s["r2"]["mean"], nan=-np.inf))

    return key


def pick_winner(
    summary: dict[str, dict[str, Any]],
    boot: dict[str, dict[str, tuple[float, np.ndarray]]],
    vetoed: set[str] = frozenset(),
) -> tuple[str, str, list[str]]:
    """Apply WINNER_RULE: (winner, decided_by, the unbeaten models). InputError without a candidate."""
    candidates = sorted(m for m, s in summary.items() if not s["baseline"] and not s["reference"])
    eligible = [m for m in candidates if m not in vetoed]
    if not candidates:
        raise InputError("no eligible (non-baseline) model to compare")
    if not eligible:
        # Nothing passes the veto: the track still needs a winner for fusion; the least fragile one.
        winner = min(candidates, key=lambda m: summary[m]["robustness"]["worst_drop_pct"])
        return winner, "all_vetoed", [winner]
    unbeaten = [m for m in eligible if not any(beats(boot, o, m) for o in eligible if o != m)]
    if not unbeaten:  # a cycle of "beats" (possible with two metrics): none can be preferred
        log.warning("every eligible model is beaten by another (a cycle); the cheapest of all wins")
        unbeaten = list(eligible)

    def cost(m: str) -> tuple[float, float, str]:
        params = summary[m]["n_parameters"]
        return (float("inf") if params is None else float(params), summary[m]["wall_s_total"], m)

    if len(eligible) == 1:
        return eligible[0], "only_candidate", eligible
    return min(unbeaten, key=cost), "significant" if len(unbeaten) == 1 else "tie_cheapest", unbeaten


def differences(
    summary: dict[str, dict[str, Any]],
    boot: dict[str, dict[str, tuple[float, np.ndarray]]],
    winner: str,
) -> list[dict[str, Any]]:
    """Every reported difference once, with its `roles`: `winner` (the winner minus each other model),
    `vs_best_baseline` (each model minus the best baseline), `deep_adds` (each wide & deep or deep-only
    encoder minus `baseline_blend`, the wide part it starts from), `candidates` (every pair of eligible
    models, what the winner rule read)."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for other in summary:
        if other != winner:
            wanted.setdefault((winner, other), []).append("winner")
    base = best_baseline(summary)
    if base is not None:
        for model in summary:
            if model != base:
                wanted.setdefault((model, base), []).append("vs_best_baseline")
    if "baseline_blend" in summary:
        for model, s in summary.items():
            if not s["baseline"] and not s["reference"]:
                wanted.setdefault((model, "baseline_blend"), []).append("deep_adds")
    eligible = sorted(m for m, s in summary.items() if not s["baseline"] and not s["reference"])
    for k, a in enumerate(eligible):
        for b in eligible[k + 1 :]:
            pair = (b, a) if (b, a) in wanted else (a, b)
            wanted.setdefault(pair, []).append("candidates")
    return [
        {**difference(boot, a, b, metric), "roles": roles} for (a, b), roles in wanted.items() for metric in METRICS
    ]


def add_contrasts(summary: dict[str, dict[str, Any]], diffs: list[dict[str, Any]]) -> None:
    """Copy each model's `vs_best_baseline` and `deep_adds` differences into its summary entry."""
    for d in diffs:
        for role in ("vs_best_baseline", "deep_adds"):
            if role in d["roles"]:
                summary[d["a"]].setdefault(role, {"b": d["b"]})[d["metric"]] = {"mean": d["mean"], "ci95": d["ci95"]}


def add_robustness(summary: dict[str, dict[str, Any]], reports: list[Path]) -> set[str]:
    """Put each model's robustness report (`run_audio_robustness`) in its summary entry as
    `robustness` {worst_drop_pct, passed, drop_pct per condition}; return the vetoed models."""
    vetoed = set()
    for path in reports:
        rep = read_json(path)
        if rep.get("model") not in summary:
            raise InputError(f"robustness report of {rep.get('model')!r}, which is not among the compared models", path)
        summary[rep["model"]]["robustness"] = {
            "worst_drop_pct": rep["worst_drop_pct"],
            "passed": rep["passed"],
            "veto_drop_pct": rep["veto_drop_pct"],
            "drop_pct": {c: e["score_drop_pct"] for c, e in rep["conditions"].items()},
        }
        if not rep["passed"]:
            vetoed.add(rep["model"])
    return vetoed
