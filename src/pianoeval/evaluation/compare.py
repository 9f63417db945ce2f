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
from pianoeval.core.io import atomic_path, read_json, write_json

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


def run_compare(
    track: str, config: dict[str, Any], metrics_files: list[Path], out_dir: Path, robustness: list[Path] = ()
) -> dict[str, Any]:
    """Write comparison.json, comparison.md, winner.json and per_dimension.png for one track
    (`robustness`: the audio models' robustness reports, see add_robustness)."""
    summary = summarise(metrics_files)
    vetoed = add_robustness(summary, list(robustness))
    candidates = {m for m, s in summary.items() if not s["baseline"]}
    all_vetoed = bool(candidates) and candidates <= vetoed
    if all_vetoed:
        # Nothing passes: the track still needs a winner for fusion; take the least fragile one, flagged.
        winner = min(candidates, key=lambda m: summary[m]["robustness"]["worst_drop_pct"])
        log.warning("%s: every model is vetoed for robustness; %s has the smallest worst drop", track, winner)
    else:
        winner = pick_winner(summary, vetoed)
    s = summary[winner]
    write_json(
        {"track": track, "rule": WINNER_RULE, "winner": winner, "models": summary},
        out_dir / "comparison.json",
    )
    with atomic_path(out_dir / "comparison.md") as tmp:
        tmp.write_text(comparison_markdown(track, summary, winner))
    if robustness:
        plot_robustness(summary, out_dir / "robustness.png", f"{track}: score drop under recording conditions")
    plot_per_dimension(summary, out_dir / "per_dimension.png", f"{track}: per-dimension results (mean over folds)")
    result = {
        "track": track,
        "model": winner,
        "pairwise_acc_mean": s["pairwise_acc_mean"],
        "pairwise_acc_std": s["pairwise_acc_std"],
        "r2_mean": s["r2_mean"],
        "r2_std": s["r2_std"],
        "folds": s["folds"],
        "rule": WINNER_RULE,
    }
    if robustness:
        result.update(robustness=s.get("robustness"), vetoed=sorted(vetoed), all_vetoed=all_vetoed)
    write_json(result, out_dir / "winner.json")
    log.info("%s winner: %s (pairwise %.3f, R2 %.3f)", track, winner, s["pairwise_acc_mean"], s["r2_mean"])
    return result


def run_finalize(fusion: Path, symbolic: Path, audio: Path, robustness: Path, out: Path) -> dict[str, Any]:
    """Write results/fusion/winner.json: the fusion winner beside both single-track winners."""
    fus, sym, aud, rob = (read_json(p) for p in (fusion, symbolic, audio, robustness))
    fw = fus["models"][fus["winner"]]
    singles = {
        name: {
            "model": c["winner"],
            **{
                k: c["models"][c["winner"]][k]
                for k in ("pairwise_acc_mean", "pairwise_acc_std", "r2_mean", "r2_std", "folds")
            },
        }
        for name, c in (("symbolic", sym), ("audio", aud))
    }
    best_single = max(singles.values(), key=lambda s: (s["pairwise_acc_mean"], s["r2_mean"]))
    result = {
        "winner": fus["winner"],
        "pairwise_acc_mean": fw["pairwise_acc_mean"],
        "pairwise_acc_std": fw["pairwise_acc_std"],
        "r2_mean": fw["r2_mean"],
        "r2_std": fw["r2_std"],
        "folds": fw["folds"],
        "details": fus.get("details", {}).get(fus["winner"], {}),
        "single_track_winners": singles,
        "gain_over_best_single_track": {
            "best_single_track": best_single["model"],
            "pairwise_acc": fw["pairwise_acc_mean"] - best_single["pairwise_acc_mean"],
            "r2": fw["r2_mean"] - best_single["r2_mean"],
        },
        "error_correlation_between_tracks": fw.get("error_correlation_mean"),
        "robustness": {
            "passed": rob.get("passed"),
            "worst_drop_pct": rob.get("worst_drop_pct"),
            "veto_drop_pct": rob.get("veto_drop_pct"),
        },
        "rule": fus["rule"],
    }
    write_json(result, out)
    return result
