"""The fusion rule: results/fusion/winner.json, the fusion winner beside both single-track winners, with
the interval of its gain over the best of them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json

log = logging.getLogger(__name__)

# What winner.json repeats of a model's comparison entry.
_FIGURES = ("pairwise_acc", "r2", "n_parameters", "wall_s_total")


def gain_over_single_tracks(fusion_comparison: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fusion winner minus the best single-track winner (the fusion comparison's best reference),
    per metric with its paired bootstrap interval; InputError when the comparison has no reference."""
    winner, best = fusion_comparison["winner"], fusion_comparison.get("best_baseline")
    if not best or not fusion_comparison["models"].get(best, {}).get("reference"):
        raise InputError("the fusion comparison has no single-track winner beside it; rerun compare fusion", path)
    gain: dict[str, Any] = {"best_single_track": best}
    for d in fusion_comparison["differences"]:
        if d["a"] == winner and d["b"] == best:
            gain[d["metric"]] = {"mean": d["mean"], "ci95": d["ci95"]}
    return gain


def run_fusion(fusion: Path, symbolic: Path, audio: Path, robustness: Path, out: Path) -> dict[str, Any]:
    """Write results/fusion/winner.json: the fusion winner (means with 95 % intervals, how it was
    decided), both single-track winners, the fusion's gain over the better one with its interval."""
    fus, sym, aud, rob = (read_json(p) for p in (fusion, symbolic, audio, robustness))
    for path, comparison in ((fusion, fus), (symbolic, sym), (audio, aud)):
        if "decided_by" not in comparison or "differences" not in comparison:
            raise InputError("comparison without intervals (made by an older version); rerun its compare rule", path)
    fw = fus["models"][fus["winner"]]
    singles = {
        name: {
            "model": c["winner"],
            "decided_by": c["decided_by"],
            **{k: c["models"][c["winner"]][k] for k in _FIGURES},
        }
        for name, c in (("symbolic", sym), ("audio", aud))
    }
    result = {
        "winner": fus["winner"],
        "decided_by": fus["decided_by"],
        **{k: fw[k] for k in _FIGURES},
        "details": fus.get("details", {}).get(fus["winner"], {}),
        "single_track_winners": singles,
        "gain_over_best_single_track": gain_over_single_tracks(fus, fusion),
        "error_correlation_between_tracks": fw.get("error_correlation_mean"),
        "stacking": "out-of-fold: each track winner's training-row predictions come from its inner folds",
        "robustness": {
            "passed": rob.get("passed"),
            "worst_drop_pct": rob.get("worst_drop_pct"),
            "veto_drop_pct": rob.get("veto_drop_pct"),
        },
        "rule": fus["rule"],
    }
    write_json(result, out)
    gain = result["gain_over_best_single_track"]
    log.info(
        "fusion winner %s (%s); gain over %s: %s", fus["winner"], fus["decided_by"], gain["best_single_track"], gain
    )
    return result
