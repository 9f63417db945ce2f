"""The winner rule where its two metrics meet: an R² difference decides only when the pairwise-accuracy
interval holds 0, and the pairwise leader by mean is not a winner unless its interval says so.

The bootstrap draws are written by hand ({model: {metric: (point, draws)}}, as `paired_bootstrap`
returns them), so each case sets exactly which intervals exclude 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pianoeval.evaluation.compare import beats, pick_winner

N_DRAWS = 2000


def _draws(mean: float, spread: float, seed: int) -> tuple[float, np.ndarray]:
    """(point, draws [N_DRAWS]) centred on `mean`; the 95 % interval is about mean ± 2 spread."""
    return mean, mean + spread * np.random.default_rng(seed).standard_normal(N_DRAWS)


def _summary(costs: dict[str, int], boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A comparison's summary as pick_winner reads it: eligibility flags, cost and the metric means."""
    return {
        m: {
            "baseline": False,
            "reference": False,
            "n_parameters": p,
            "wall_s_total": 1.0,
            **{metric: {"mean": boot[m][metric][0]} for metric in ("pairwise_acc", "r2")},
        }
        for m, p in costs.items()
    }


def _boot(acc: dict[str, tuple[float, float]], r2: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Per model its (mean, spread) of pairwise accuracy and R²; every model shares its draws' noise
    per metric except for a small own part, so differences are paired as the real bootstrap's are."""
    boot = {}
    for k, model in enumerate(acc):
        shared_a, own_a = _draws(0.0, 0.01, 1), _draws(0.0, acc[model][1], 10 + k)
        shared_r, own_r = _draws(0.0, 0.01, 2), _draws(0.0, r2[model][1], 20 + k)
        boot[model] = {
            "pairwise_acc": (acc[model][0], acc[model][0] + shared_a[1] + own_a[1]),
            "r2": (r2[model][0], r2[model][0] + shared_r[1] + own_r[1]),
        }
    return boot


def test_r2_decides_when_the_pairwise_interval_holds_zero() -> None:
    """'lead' has the higher mean pairwise accuracy but not significantly; 'fit' is far better on R²
    and costlier. The rule says 'fit' beats 'lead' (R² tiebreak), so 'fit' wins alone.

    Fails when R² is ignored (both unbeaten: the cheaper 'lead' wins, `tie_cheapest`) and when the
    pairwise leader by mean is taken without reading its interval ('lead')."""
    boot = _boot(
        acc={"lead": (0.72, 0.02), "fit": (0.71, 0.02)},  # difference +0.01, interval about ±0.06: holds 0
        r2={"lead": (0.10, 0.005), "fit": (0.30, 0.005)},  # difference -0.20, interval well below 0
    )
    assert not beats(boot, "lead", "fit") and beats(boot, "fit", "lead")
    winner, decided_by, unbeaten = pick_winner(_summary({"lead": 100, "fit": 10_000}, boot), boot)
    assert (winner, decided_by, unbeaten) == ("fit", "significant", ["fit"])


def test_r2_does_not_override_a_significant_pairwise_difference() -> None:
    """'acc' is significantly better on pairwise accuracy, 'fit' significantly better on R². Pairwise
    accuracy comes first: 'acc' beats 'fit', and 'fit' does not beat 'acc' (the R² tiebreak applies only
    when the pairwise interval holds 0).

    Fails when either metric's significant difference counts as a win (a cycle: the cheapest of all,
    'fit', wins)."""
    boot = _boot(
        acc={"acc": (0.80, 0.005), "fit": (0.70, 0.005)},
        r2={"acc": (0.10, 0.005), "fit": (0.30, 0.005)},
    )
    assert beats(boot, "acc", "fit") and not beats(boot, "fit", "acc")
    winner, decided_by, unbeaten = pick_winner(_summary({"acc": 10_000, "fit": 100}, boot), boot)
    assert (winner, decided_by, unbeaten) == ("acc", "significant", ["acc"])


@pytest.mark.parametrize(
    ("r2_gap", "expected"),
    [(0.0, ("cheap", "tie_cheapest")), (0.2, ("dear", "significant"))],
    ids=["no-r2-gap-cheapest", "r2-gap-decides"],
)
def test_a_pairwise_tie_goes_to_r2_then_to_cost(r2_gap: float, expected: tuple[str, str]) -> None:
    """Equal pairwise accuracy: without an R² difference the cheaper model wins (`tie_cheapest`); with
    a significant one, the better fit wins whatever it costs."""
    boot = _boot(
        acc={"cheap": (0.70, 0.02), "dear": (0.70, 0.02)},
        r2={"cheap": (0.10, 0.005), "dear": (0.10 + r2_gap, 0.005)},
    )
    winner, decided_by, _ = pick_winner(_summary({"cheap": 100, "dear": 10_000}, boot), boot)
    assert (winner, decided_by) == expected
