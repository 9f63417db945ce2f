"""scripts/probe_statistics.py: its probe finds a statistic the embedding carries, and not one it lacks."""

from __future__ import annotations

import numpy as np
from conftest import load_script


def _probe():
    return load_script("probe_statistics")


def test_a_carried_statistic_scores_high_and_a_missing_one_does_not() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 8))
    split = np.array(["train"] * 200 + ["dev"] * 50 + ["val"] * 50)
    carried = z @ rng.normal(size=8) + 0.1 * rng.normal(size=300)
    missing = rng.normal(size=300)
    probe = _probe()
    assert probe.ridge_r2(z, carried, split) > 0.95
    assert probe.ridge_r2(z, missing, split) < 0.1
    assert probe.ridge_r2(z, np.ones(300), split) is None
