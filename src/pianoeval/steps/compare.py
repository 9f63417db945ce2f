"""The compare rule: one track's models across folds, the comparison table and plots, and the winner."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pianoeval.core.io import atomic_path, write_json
from pianoeval.evaluation.compare import (
    WINNER_RULE,
    add_robustness,
    comparison_markdown,
    pick_winner,
    plot_per_dimension,
    plot_robustness,
    summarise,
)

log = logging.getLogger(__name__)


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
