"""Evaluation metrics: within-piece pairwise accuracy, R², robustness, tables, the paired bootstrap.

Inputs are numpy arrays (torch tensors are converted); outputs are plain floats, dicts and strings so
they can go straight into JSON. An undefined value (no comparable pair) is `None`; a value that is
defined but not finite for the data (R² of one sample) is NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from pianoeval.core.constants import AMBIGUOUS_THRESHOLD, DIMENSIONS


def _as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """An array from a numpy array, torch tensor or sequence (tensors are detached and moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _as_2d(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets as float arrays [N, D] of the same shape ([N] becomes [N, 1])."""
    p, t = _as_numpy(pred), _as_numpy(target)
    if p.ndim == 1:
        p = p[:, None]
    if t.ndim == 1:
        t = t[:, None]
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"pred {p.shape} and target {t.shape} must both be [N, D]")
    return p, t


def _dim_names(n_dims: int, names: Sequence[str] | None) -> list[str]:
    """The dimension names: `names` if it fits, the PercePiano names for 19 dims, else dim_0, dim_1, ..."""
    if names is not None and len(names) == n_dims:
        return list(names)
    if n_dims == len(DIMENSIONS):
        return list(DIMENSIONS)
    return [f"dim_{d}" for d in range(n_dims)]


def _within_group_pairs(groups: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), i < j, of every pair of the n rows sharing a group (ints or strings)."""
    g = np.asarray(groups.detach().cpu().numpy() if hasattr(groups, "detach") else groups).reshape(-1)
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries, expected one per row ({n})")
    # Integer codes so that string and int group labels are compared the same way.
    _, codes = np.unique(g, return_inverse=True)
    codes = codes.reshape(-1)
    firsts, seconds = [], []
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        if len(members) < 2:
            continue
        i, j = np.triu_indices(len(members), k=1)
        firsts.append(members[i])
        seconds.append(members[j])
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def pairwise_accuracy(
    pred: Any,
    target: Any,
    groups: Any,
    threshold: float = AMBIGUOUS_THRESHOLD,
    dimension_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Within-group pairwise ranking accuracy of pred [N, D] against target [N, D] with groups [N].

    A pair (i < j, same group) counts for a dimension when |target_i - target_j| >= threshold; it is
    correct when the predicted difference has the target's sign, and a predicted tie scores 0.5.
    Returns `overall` (all counted pairs of all dimensions pooled; None if there are none),
    `per_dimension` {name: accuracy or None}, `per_dimension_pairs` {name: count} and `n_pairs`.
    """
    p, t = _as_2d(pred, target)
    names = _dim_names(p.shape[1], dimension_names)
    i, j = _within_group_pairs(groups, len(p))
    dt = t[i] - t[j]  # [P, D]
    dp = p[i] - p[j]
    # NaN targets compare False, so unlabelled dimensions never count; equal targets have no order.
    counted = (np.abs(dt) >= threshold) & (dt != 0)
    score = np.where(np.sign(dp) == np.sign(dt), 1.0, 0.0)
    score = np.where(dp == 0, 0.5, score)
    correct = np.where(counted, score, 0.0).sum(axis=0)
    n_per_dim = counted.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = correct / n_per_dim
    per_dim = {name: (float(acc[d]) if n_per_dim[d] > 0 else None) for d, name in enumerate(names)}
    n_pairs = int(n_per_dim.sum())
    return {
        "overall": float(correct.sum() / n_pairs) if n_pairs > 0 else None,
        "per_dimension": per_dim,
        "per_dimension_pairs": {name: int(n_per_dim[d]) for d, name in enumerate(names)},
        "n_pairs": n_pairs,
    }


def r2_scores(pred: Any, target: Any, dimension_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Coefficient of determination of pred [N, D] vs target [N, D]: `mean` and `per_dimension`.

    Matches `sklearn.metrics.r2_score(target, pred)` (uniform average, force_finite): a dimension
    whose target is constant scores 1.0 if predicted exactly, else 0.0. Fewer than 2 rows give NaN.
    """
    p, t = _as_2d(pred, target)
    names = _dim_names(p.shape[1], dimension_names)
    if len(p) < 2:
        return {"mean": float("nan"), "per_dimension": {name: float("nan") for name in names}}
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
    r2 = np.where((ss_tot == 0) & (ss_res == 0), 1.0, r2)
    return {"mean": float(r2.mean()), "per_dimension": {name: float(r2[d]) for d, name in enumerate(names)}}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two flat arrays; NaN if either is constant or has fewer than 2 values."""
    if len(a) < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def compute_robustness_metrics(
    clean_pred: Any,
    aug_pred: Any,
    target: Any | None = None,
    groups: Any | None = None,
    threshold: float = AMBIGUOUS_THRESHOLD,
) -> dict[str, Any]:
    """How much predictions [N, D] move under augmentation, and how much the primary metric drops.

    Returns `pearson_r` (clean vs augmented, all values flattened), `pearson_r_per_dimension` [D],
    `mean_abs_change`, and when `target` is given `primary_metric` ("pairwise_acc" if `groups` is
    given and pairs exist, else "r2"), `clean_score`, `aug_score` and `score_drop_pct`
    = 100 * (clean - aug) / |clean| (positive = worse; None without target or when clean is 0).
    """
    c, a = _as_2d(clean_pred, aug_pred)
    result: dict[str, Any] = {
        "pearson_r": _pearson(c.reshape(-1), a.reshape(-1)),
        "pearson_r_per_dimension": [_pearson(c[:, d], a[:, d]) for d in range(c.shape[1])],
        "mean_abs_change": float(np.abs(a - c).mean()) if c.size else float("nan"),
        "primary_metric": None,
        "clean_score": None,
        "aug_score": None,
        "score_drop_pct": None,
    }
    if target is None:
        return result
    clean_score = aug_score = None
    metric = "r2"
    if groups is not None:
        clean_score = pairwise_accuracy(c, target, groups, threshold)["overall"]
        aug_score = pairwise_accuracy(a, target, groups, threshold)["overall"]
        metric = "pairwise_acc"
    if clean_score is None or aug_score is None:
        # No comparable pair: fall back to R², which is defined for any labelled set.
        metric = "r2"
        clean_score, aug_score = r2_scores(c, target)["mean"], r2_scores(a, target)["mean"]
    drop = None
    if clean_score != 0 and math.isfinite(clean_score) and math.isfinite(aug_score):
        # |clean| so that a negative R² that gets more negative still reads as a positive drop.
        drop = 100.0 * (clean_score - aug_score) / abs(clean_score)
    result.update(primary_metric=metric, clean_score=clean_score, aug_score=aug_score, score_drop_pct=drop)
    return result


class MetricsSuite:
    """The output-contract metrics of one evaluation: pairwise accuracy, R², per dimension, counts."""

    def __init__(
        self, ambiguous_threshold: float = AMBIGUOUS_THRESHOLD, dimension_names: Sequence[str] = DIMENSIONS
    ) -> None:
        self.ambiguous_threshold = float(ambiguous_threshold)
        self.dimension_names = tuple(dimension_names)

    def compute(self, pred: Any, target: Any, groups: Any) -> dict[str, Any]:
        """pred [N, D], target [N, D], groups [N] → {pairwise_acc, r2, per_dimension, n_pairs, n}."""
        p, t = _as_2d(pred, target)
        if p.shape[1] != len(self.dimension_names):
            expected = len(self.dimension_names)
            raise ValueError(f"predictions have {p.shape[1]} dimensions, expected {expected}")
        acc = pairwise_accuracy(p, t, groups, self.ambiguous_threshold, self.dimension_names)
        r2 = r2_scores(p, t, self.dimension_names)
        per_dim = {
            name: {
                "pairwise_acc": acc["per_dimension"][name],
                "r2": r2["per_dimension"][name],
                "n_pairs": acc["per_dimension_pairs"][name],
            }
            for name in self.dimension_names
        }
        return {
            "pairwise_acc": acc["overall"],
            "r2": r2["mean"],
            "per_dimension": per_dim,
            "n_pairs": acc["n_pairs"],
            "n": len(p),
        }


def _cell(value: Any, fmt: str) -> str:
    """One Markdown table cell: floats through `fmt`, None/NaN as '–', pipes escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return fmt.format(float(value))
    return str(value).replace("|", "\\|")


def format_comparison_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    sort_by: str | None = None,
    descending: bool = True,
    fmt: str = "{:.3f}",
) -> str:
    """A Markdown table of `rows` (dicts) with the given `columns`, optionally sorted by one column.

    Missing values and NaN show as '–' and sort last; floats are formatted with `fmt`.
    """
    if sort_by is not None:
        if sort_by not in columns:
            raise ValueError(f"sort_by {sort_by!r} is not one of the columns {columns}")

        def missing(row: dict[str, Any]) -> bool:
            v = row.get(sort_by)
            return v is None or (isinstance(v, float | np.floating) and math.isnan(v))

        def key(row: dict[str, Any]) -> tuple[int, float, str]:
            # Numbers compare as numbers, anything else as text (after the numbers).
            v = row[sort_by]
            if isinstance(v, int | float | np.number):
                return (0, float(v), "")
            return (1, 0.0, str(v))

        present = sorted((r for r in rows if not missing(r)), key=key, reverse=descending)
        rows = present + [r for r in rows if missing(r)]
    lines = [
        "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines.extend("| " + " | ".join(_cell(row.get(c), fmt) for c in columns) + " |" for row in rows)
    return "\n".join(lines)


# -- Paired bootstrap over segment groups ------------------------------------------------------------


def group_statistics(
    pred: Any, target: Any, groups: Any, group_names: Sequence[Any], threshold: float = AMBIGUOUS_THRESHOLD
) -> dict[str, np.ndarray]:
    """Per-group sums from which pairwise accuracy and R² of any reweighting of whole groups follow.

    pred, target [N, D], groups [N]; `group_names` [G] orders the output (a name without rows gets
    zeros). Returns `correct` [G] and `pairs` [G] (within-group pairs, as pairwise_accuracy counts
    them), `n` [G] rows, and `sum_y`, `sum_y2`, `sum_res2` [G, D] (labels, squared labels, squared
    residuals).
    """
    p, t = _as_2d(pred, target)
    g = np.asarray(groups).reshape(-1)
    code_of = {name: k for k, name in enumerate(group_names)}
    codes = np.array([code_of[x] for x in g], dtype=np.int64)
    n_groups = len(group_names)
    i, j = _within_group_pairs(codes, len(p))
    dt, dp = t[i] - t[j], p[i] - p[j]
    counted = (np.abs(dt) >= threshold) & (dt != 0)
    score = np.where(dp == 0, 0.5, np.where(np.sign(dp) == np.sign(dt), 1.0, 0.0))
    pair_group = codes[i]
    return {
        "correct": np.bincount(pair_group, weights=np.where(counted, score, 0.0).sum(axis=1), minlength=n_groups),
        "pairs": np.bincount(pair_group, weights=counted.sum(axis=1), minlength=n_groups),
        "n": np.bincount(codes, minlength=n_groups).astype(np.float64),
        "sum_y": _group_sums(codes, t, n_groups),
        "sum_y2": _group_sums(codes, t * t, n_groups),
        "sum_res2": _group_sums(codes, (t - p) ** 2, n_groups),
    }


def _group_sums(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Column sums of values [N, D] per group code [N] → [G, D]."""
    out = np.zeros((n_groups, values.shape[1]))
    np.add.at(out, codes, values)
    return out


def weighted_metrics(stats: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Pairwise accuracy and mean R² [B] when group k counts weights[b, k] times (weights [B, G]).

    Weight 1 everywhere gives exactly `MetricsSuite` on the original rows; a bootstrap draw of whole
    groups with replacement gives their counts. R²'s total sum of squares is taken around the
    original rows' label mean, not each draw's: 1 - MSE / (mean squared deviation from that mean).
    Why: around each draw's own mean, a draw's R² is biased low (the mean predictor, R² 0, scores
    below 0 in every draw, so its point estimate would lie outside its own interval). R² follows
    r2_scores' conventions (a dimension with constant labels scores 1 if predicted exactly, else 0);
    no pair or fewer than 2 rows give NaN.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    pairs = w @ stats["pairs"]
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(pairs > 0, (w @ stats["correct"]) / pairs, np.nan)
        n = (w @ stats["n"])[:, None]
        mean = stats["sum_y"].sum(axis=0) / stats["n"].sum()  # [D], the original rows' label mean
        ss_tot = w @ stats["sum_y2"] - 2.0 * (w @ stats["sum_y"]) * mean + n * mean**2
        ss_res = w @ stats["sum_res2"]
        # Round-off can leave a constant dimension's total a hair above 0: treat it as constant.
        constant = ss_tot <= 1e-12 * np.maximum(1.0, w @ stats["sum_y2"])
        r2 = np.where(constant, np.where(ss_res <= 1e-12, 1.0, 0.0), 1.0 - ss_res / np.where(constant, 1.0, ss_tot))
    r2_mean = np.where(n[:, 0] >= 2, r2.mean(axis=1), np.nan)
    return {"pairwise_acc": acc, "r2": r2_mean}


def paired_bootstrap(
    folds: Sequence[dict[str, tuple[Any, Any, Any]]],
    n_resamples: int = 1000,
    seed: int = 0,
    threshold: float = AMBIGUOUS_THRESHOLD,
) -> dict[str, dict[str, tuple[float, np.ndarray]]]:
    """Paired bootstrap over segment groups, pooled over folds.

    `folds[f]` maps each model to its validation (pred [N, D], target [N, D], groups [N]) of fold f.
    Each resample draws as many groups as all folds' validation sets hold together, with replacement
    from all of them pooled, the same draw for every model (paired); a drawn group stays with its fold
    (scored by that fold's model, counted in that fold's metric), and a model's statistic is the mean
    over folds of its fold metric, as the point estimate is (a fold that drew no group is left out of
    that draw's mean). Why pooled rather than per fold: with few groups per fold (the demo: 2) a
    per-fold draw has three outcomes and understates the spread; with many it makes no difference.
    Returns {model: {metric: (point, resamples [B])}}.
    """
    rng = np.random.default_rng(seed)
    models = sorted({m for fold in folds for m in fold})
    names = [
        sorted({x for _, _, g in fold.values() for x in np.asarray(g).reshape(-1).tolist()}, key=str) for fold in folds
    ]
    total = sum(len(n) for n in names)
    draws = rng.integers(0, total, size=(n_resamples, total))
    weights = np.zeros((n_resamples, total))
    np.add.at(weights, (np.repeat(np.arange(n_resamples), total), draws.ravel()), 1.0)
    per_fold: dict[str, dict[str, list[np.ndarray]]] = {m: {"pairwise_acc": [], "r2": []} for m in models}
    points: dict[str, dict[str, list[float]]] = {m: {"pairwise_acc": [], "r2": []} for m in models}
    start = 0
    for fold, fold_names in zip(folds, names, strict=True):
        fold_weights = weights[:, start : start + len(fold_names)]
        start += len(fold_names)
        for model in models:
            if model not in fold:
                continue  # a model without this fold: its mean is over the folds it has
            stats = group_statistics(*fold[model], fold_names, threshold)
            point, resampled = (
                weighted_metrics(stats, np.ones((1, len(fold_names)))),
                weighted_metrics(stats, fold_weights),
            )
            for metric in ("pairwise_acc", "r2"):
                points[model][metric].append(float(point[metric][0]))
                per_fold[model][metric].append(resampled[metric])
    out: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
    for model in models:
        out[model] = {}
        for metric in ("pairwise_acc", "r2"):
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a model without pairs
                samples = np.nanmean(np.stack(per_fold[model][metric]), axis=0)
                point = float(np.nanmean(points[model][metric])) if points[model][metric] else float("nan")
            out[model][metric] = (point, samples)
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """The central `level` percentile interval [low, high] of bootstrap samples (NaNs ignored; NaN if none)."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return [float("nan"), float("nan")]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return [float(low), float(high)]
