"""Compare models across folds, pick winners by a documented rule, and write the final winner.

Winner rule (per track): among non-baseline models, the highest mean within-piece pairwise
accuracy over folds; when two are within `TIE_PAIRWISE` of each other, the higher mean R² wins.
Baselines are reported beside the models but are never winners. On the audio track, a model whose
score drops by more than `robustness.veto_drop_pct` under any phone-like recording condition
(`results/audio_robustness/<model>/report.json`) is vetoed; if every model is, the one with the
smallest worst drop wins, flagged `all_vetoed`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path, read_json

log = logging.getLogger(__name__)

# Two mean pairwise accuracies closer than this (half a percentage point) count as a tie.
TIE_PAIRWISE = 0.005
WINNER_RULE = (
    "highest mean within-piece pairwise accuracy over folds (ambiguous pairs excluded); "
    f"models within {TIE_PAIRWISE:.3f} of the best are a tie, broken by higher mean R²; baselines excluded"
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std of the finite values (NaN when there are none)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(arr):
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())


def summarise(metrics_files: list[Path]) -> dict[str, dict[str, Any]]:
    """Group fold metrics by model: mean ± std of pairwise accuracy and R², per-dimension means."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for path in metrics_files:
        m = read_json(path)
        for key in ("pairwise_acc", "r2", "model", "fold"):
            if key not in m:
                raise InputError(f"metrics file lacks '{key}'", path)
        by_model.setdefault(m["model"], []).append(m)
    summary: dict[str, dict[str, Any]] = {}
    for model, runs in sorted(by_model.items()):
        runs.sort(key=lambda r: r["fold"])
        acc_mean, acc_std = _mean_std([r["pairwise_acc"] for r in runs])
        r2_mean, r2_std = _mean_std([r["r2"] for r in runs])
        per_dim = {}
        for dim in DIMENSIONS:
            accs = [r["per_dimension"].get(dim, {}).get("pairwise_acc") for r in runs if r.get("per_dimension")]
            r2s = [r["per_dimension"].get(dim, {}).get("r2") for r in runs if r.get("per_dimension")]
            per_dim[dim] = {"pairwise_acc": _mean_std(accs)[0], "r2": _mean_std(r2s)[0]}
        summary[model] = {
            "pairwise_acc_mean": acc_mean,
            "pairwise_acc_std": acc_std,
            "r2_mean": r2_mean,
            "r2_std": r2_std,
            "n_folds": len(runs),
            "baseline": model.startswith("baseline_"),
            "wall_s_total": float(sum(r.get("wall_s", 0.0) for r in runs)),
            "folds": {
                int(r["fold"]): {"pairwise_acc": r["pairwise_acc"], "r2": r["r2"], "n_val": r.get("n_val")}
                for r in runs
            },
            "per_dimension": per_dim,
        }
        if all("val_transcribed" in r for r in runs):
            # The same validation segments scored from TransKun's transcription of their rendering.
            summary[model]["val_transcribed"] = {
                "pairwise_acc_mean": _mean_std([r["val_transcribed"]["pairwise_acc"] for r in runs])[0],
                "r2_mean": _mean_std([r["val_transcribed"]["r2"] for r in runs])[0],
            }
        if any("error_correlation" in r for r in runs):
            summary[model]["error_correlation_mean"] = _mean_std([r.get("error_correlation") for r in runs])[0]
    return summary


def pick_winner(summary: dict[str, dict[str, Any]], vetoed: set[str] | None = None) -> str:
    """Apply WINNER_RULE to a summary; raise if no eligible model."""
    eligible = {m: s for m, s in summary.items() if not s["baseline"] and m not in (vetoed or set())}
    if not eligible:
        raise InputError("no eligible (non-baseline, non-vetoed) model to compare")
    best_acc = max(np.nan_to_num(s["pairwise_acc_mean"], nan=-1.0) for s in eligible.values())
    tied = [
        m for m, s in eligible.items() if np.nan_to_num(s["pairwise_acc_mean"], nan=-1.0) >= best_acc - TIE_PAIRWISE
    ]
    return max(
        tied,
        key=lambda m: (np.nan_to_num(eligible[m]["r2_mean"], nan=-np.inf), eligible[m]["pairwise_acc_mean"]),
    )


def comparison_markdown(track: str, summary: dict[str, dict[str, Any]], winner: str) -> str:
    """A Markdown table: one row per model with mean ± std over folds."""
    from pianoeval.metrics import format_comparison_table

    rows = []
    for model, s in sorted(summary.items(), key=lambda kv: -np.nan_to_num(kv[1]["pairwise_acc_mean"], nan=-1)):
        rows.append(
            {
                "model": f"**{model}**" if model == winner else model,
                "pairwise acc": f"{s['pairwise_acc_mean']:.3f} ± {s['pairwise_acc_std']:.3f}",
                "R²": f"{s['r2_mean']:.3f} ± {s['r2_std']:.3f}",
                "folds": str(s["n_folds"]),
                "baseline": "yes" if s["baseline"] else "",
                "train time (s)": f"{s['wall_s_total']:.0f}",
                "worst drop %": f"{s['robustness']['worst_drop_pct']:.1f}" if "robustness" in s else "",
                "veto": ("" if s["robustness"]["passed"] else "vetoed") if "robustness" in s else "",
                "transcribed acc / R²": (
                    f"{s['val_transcribed']['pairwise_acc_mean']:.3f} / {s['val_transcribed']['r2_mean']:.3f}"
                    if "val_transcribed" in s
                    else ""
                ),
            }
        )
    columns = ["model", "pairwise acc", "R²", "folds", "baseline", "train time (s)"]
    if any("val_transcribed" in s for s in summary.values()):
        columns += ["transcribed acc / R²"]
    if any("robustness" in s for s in summary.values()):
        columns += ["worst drop %", "veto"]
    head = f"# {track} comparison\n\nWinner: **{winner}**. Rule: {WINNER_RULE}.\n\n"
    return head + format_comparison_table(rows, columns) + "\n"


def plot_per_dimension(summary: dict[str, dict[str, Any]], out: Path, title: str) -> None:
    """Grouped horizontal bars: per-dimension pairwise accuracy of each model (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(14, 8), sharey=True)
    y = np.arange(len(DIMENSIONS))
    height = 0.8 / max(1, len(models))
    for metric, ax in zip(("pairwise_acc", "r2"), axes, strict=True):
        for k, model in enumerate(models):
            vals = [np.nan_to_num(summary[model]["per_dimension"][d][metric], nan=0.0) for d in DIMENSIONS]
            ax.barh(y + k * height, vals, height=height, label=model)
        ax.axvline(0.5 if metric == "pairwise_acc" else 0.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("within-piece pairwise accuracy" if metric == "pairwise_acc" else "R²")
    axes[0].set_yticks(y + 0.4 - height / 2, [d.replace("_", " ") for d in DIMENSIONS], fontsize=7)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_robustness(summary: dict[str, dict[str, Any]], out: Path, title: str) -> None:
    """Grouped bars: each model's score drop (%) per recording condition, with the veto line (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m, s in summary.items() if "robustness" in s]
    names = list(summary[models[0]]["robustness"]["drop_pct"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, model in enumerate(models):
        drops = [summary[model]["robustness"]["drop_pct"][n] for n in names]
        ax.bar(np.arange(len(names)) + (k - (len(models) - 1) / 2) * width, drops, width=width, label=model)
    ax.axhline(summary[models[0]]["robustness"]["veto_drop_pct"], color="r", ls="--", label="veto threshold")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("pairwise-accuracy drop vs clean (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


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
