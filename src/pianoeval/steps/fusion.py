"""The fusion rule: results/fusion/winner.json, the fusion winner beside both single-track winners."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pianoeval.core.io import read_json, write_json

log = logging.getLogger(__name__)


def run_fusion(fusion: Path, symbolic: Path, audio: Path, robustness: Path, out: Path) -> dict[str, Any]:
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
