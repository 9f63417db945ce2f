"""The compare rule: one track's models across folds with paired bootstrap intervals, the comparison
table and plots, and the winner (evaluation/compare.py has the rule)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pianoeval.core.io import atomic_path, write_json
from pianoeval.core.settings import CompareSettings
from pianoeval.evaluation.compare import (
    LEVEL,
    WINNER_RULE,
    add_contrasts,
    add_intervals,
    add_robustness,
    best_baseline,
    differences,
    pick_winner,
    read_fold_predictions,
    read_runs,
    summarise,
)
from pianoeval.evaluation.report import comparison_markdown, plot_differences, plot_per_dimension, plot_robustness

log = logging.getLogger(__name__)


def run_compare(
    track: str,
    config: dict[str, Any],
    metrics_files: list[Path],
    predictions: list[Path],
    out_dir: Path,
    robustness: list[Path] = (),
    references: list[Path] = (),
) -> dict[str, Any]:
    """Write comparison.json, comparison.md, winner.json, per_dimension.png and differences.png for one
    track. `predictions`: each fold's predictions.csv, beside its metrics file; `robustness`: the audio
    models' robustness reports (veto); `references`: fold metrics of models shown but never eligible
    (the fusion comparison's single-track winners, `<track>/<model>`)."""
    from pianoeval.metrics import paired_bootstrap

    by_model = read_runs(list(metrics_files), list(references))
    summary = summarise(by_model)
    vetoed = add_robustness(summary, list(robustness))
    folds = read_fold_predictions(by_model, list(predictions))
    settings, seed = CompareSettings.from_config(config), int(config["seed"])
    boot = paired_bootstrap(folds, n_resamples=settings.resamples, seed=seed)
    add_intervals(summary, boot, by_model)
    winner, decided_by, unbeaten = pick_winner(summary, boot, vetoed)
    diffs = differences(summary, boot, winner)
    add_contrasts(summary, diffs)
    comparison = {
        "track": track,
        "rule": WINNER_RULE,
        "winner": winner,
        "decided_by": decided_by,
        "unbeaten": unbeaten,
        "best_baseline": best_baseline(summary),
        "bootstrap": {
            "resamples": settings.resamples,
            "seed": seed,
            "level": LEVEL,
            "n_folds": len(folds),
            "n_groups": sum(len({g for *_, groups in fold.values() for g in groups}) for fold in folds),
            "scheme": "validation segment groups resampled with replacement, pooled over folds (each stays "
            "with its fold), the same draws for every model; statistic: mean over folds of the fold metric",
        },
        "models": summary,
        "differences": diffs,
    }
    write_json(comparison, out_dir / "comparison.json")
    with atomic_path(out_dir / "comparison.md") as tmp:
        tmp.write_text(comparison_markdown(track, comparison))
    if robustness:
        plot_robustness(summary, out_dir / "robustness.png", f"{track}: score drop under recording conditions")
    plot_per_dimension(summary, out_dir / "per_dimension.png", f"{track}: per-dimension results (mean over folds)")
    plot_differences(comparison, out_dir / "differences.png", f"{track}: differences between models")
    s = summary[winner]
    result = {
        "track": track,
        "model": winner,
        "decided_by": decided_by,
        "unbeaten": unbeaten,
        "pairwise_acc": s["pairwise_acc"],
        "r2": s["r2"],
        "n_parameters": s["n_parameters"],
        "wall_s_total": s["wall_s_total"],
        "differences": [d for d in diffs if "winner" in d["roles"]],
        "rule": WINNER_RULE,
    }
    if robustness:
        result.update(robustness=s.get("robustness"), vetoed=sorted(vetoed), all_vetoed=decided_by == "all_vetoed")
    write_json(result, out_dir / "winner.json")
    log.info(
        "%s winner: %s (%s; pairwise %.3f %s, R2 %.3f %s)",
        track,
        winner,
        decided_by,
        s["pairwise_acc"]["mean"],
        s["pairwise_acc"]["ci95"],
        s["r2"]["mean"],
        s["r2"]["ci95"],
    )
    return result
