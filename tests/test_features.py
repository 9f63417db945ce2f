"""Continuous MIDI curves: frame alignment, pedal, velocity, timing and articulation proxies."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, load_performance
from pianoeval.symbolic.features import (
    FEATURE_NAMES,
    PITCH_LOW,
    PITCH_SPAN,
    articulation_ratios,
    extract_continuous_features,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def scale(velocity: int = 80, step: float = 0.5, legato: float = 0.9, n: int = 8) -> Performance:
    """A C-major scale: n notes `step` s apart, each lasting legato * step."""
    pitches = [60, 62, 64, 65, 67, 69, 71, 72][:n]
    onsets = np.arange(n) * step
    return Performance(np.stack([onsets, onsets + legato * step, pitches, np.full(n, velocity)], axis=1))


@pytest.mark.parametrize("frame_rate", [20, 50], ids=["20fps", "50fps"])
def test_shape_and_no_nan(frame_rate: int) -> None:
    perf = scale()
    curves = extract_continuous_features(perf, frame_rate=frame_rate)
    assert curves.dtype == np.float32
    assert curves.shape == (math.ceil(perf.duration * frame_rate) + 1, len(FEATURE_NAMES))
    assert np.isfinite(curves).all()


def test_onset_lands_on_exact_frame() -> None:
    perf = Performance([[1.0, 1.4, 60, 100]])
    curves = extract_continuous_features(perf, frame_rate=20)
    onset = curves[:, COL["onset"]]
    assert np.flatnonzero(onset).tolist() == [20]
    assert curves[20, COL["onset_velocity"]] == pytest.approx(100 / 127)
    # Held velocity starts at the onset; polyphony is one note on frames 20..27 (1.0 s to 1.4 s).
    assert curves[19, COL["velocity"]] == 0 and curves[27, COL["velocity"]] == pytest.approx(100 / 127)
    assert np.flatnonzero(curves[:, COL["polyphony"]]).tolist() == list(range(20, 28))
    assert curves[22, COL["pitch_mean"]] == pytest.approx((60 - PITCH_LOW) / PITCH_SPAN)


def test_pedal_curve_is_exactly_where_pedal_is_down() -> None:
    perf = Performance([[0.0, 4.0, 48, 70]], [[2.0, 127], [3.0, 0]])
    pedal = extract_continuous_features(perf, frame_rate=20)[:, COL["pedal"]]
    assert np.flatnonzero(pedal).tolist() == list(range(40, 60))
    assert pedal[40:60] == pytest.approx(np.ones(20))


def test_half_pedal_value_is_kept() -> None:
    perf = Performance([[0.0, 2.0, 48, 70]], [[0.5, 50], [1.0, 0]])
    pedal = extract_continuous_features(perf, frame_rate=20)[:, COL["pedal"]]
    assert pedal[15] == pytest.approx(50 / 127)


def test_louder_performance_has_higher_velocity_curve() -> None:
    soft = extract_continuous_features(scale(velocity=40))
    loud = extract_continuous_features(scale(velocity=100))
    assert loud[:, COL["velocity"]].mean() > soft[:, COL["velocity"]].mean() + 0.3
    # Nothing but loudness changed.
    others = [COL[n] for n in FEATURE_NAMES if "velocity" not in n]
    np.testing.assert_array_equal(loud[:, others], soft[:, others])


def test_faster_performance_has_higher_tempo_and_lower_ioi() -> None:
    slow = extract_continuous_features(scale(step=0.5))
    fast = extract_continuous_features(scale(step=0.25))
    assert fast[:, COL["tempo"]].mean() > slow[:, COL["tempo"]].mean()
    assert fast[10, COL["ioi"]] < slow[10, COL["ioi"]]
    # A steady scale at 2 notes/s is tempo 2 chords/s (scaled by 10) once the first IOI exists.
    assert slow[20:60, COL["tempo"]] == pytest.approx(np.full(40, 0.2), rel=1e-6)
    assert slow[30:80, COL["onset_density"]].mean() == pytest.approx(2 / 20, rel=0.1)


def test_chord_counts_once_for_timing_and_fully_for_polyphony() -> None:
    chord = Performance([[0.0, 1.0, 60, 80], [0.01, 1.0, 64, 80], [0.02, 1.0, 67, 80], [1.0, 1.5, 72, 80]])
    curves = extract_continuous_features(chord, frame_rate=20)
    assert curves[5, COL["polyphony"]] == pytest.approx(0.3)
    assert curves[5, COL["pitch_range"]] == pytest.approx(7 / PITCH_SPAN)
    # The IOI between the chord and the next note is 1.0 s (not 0.01 s between chord notes).
    assert curves[21, COL["ioi"]] == pytest.approx(np.log1p(1.0 / 0.05) / np.log1p(4.0 / 0.05), rel=1e-3)


@pytest.mark.parametrize(("legato", "expected"), [(0.5, 0.25), (1.0, 0.5), (1.5, 0.75)], ids=["half", "legato", "over"])
def test_articulation_reflects_duration_over_gap(legato: float, expected: float) -> None:
    perf = scale(legato=legato)
    ratios = articulation_ratios(perf.notes)
    assert ratios[:-1] == pytest.approx(np.full(7, legato))
    assert np.isnan(ratios[-1])  # the last note has no successor
    art = extract_continuous_features(perf)[:, COL["articulation"]]
    assert art == pytest.approx(np.full(len(art), expected))


def test_articulation_ignores_far_register() -> None:
    # A bass note followed only by a high note two octaves up has no successor in its register.
    perf = Performance([[0.0, 0.2, 40, 80], [0.5, 1.0, 64, 80]])
    assert np.isnan(articulation_ratios(perf.notes)).all()


def test_no_notes_raises() -> None:
    with pytest.raises(InputError, match="no notes"):
        extract_continuous_features(Performance(np.zeros((0, 4)), path="x.mid"))


def test_real_percepiano_file(shared_data: Path) -> None:
    perf = load_performance(shared_data / "percepiano/midi/performances/Schubert_D960_mv2_8bars_4_07.mid")
    curves = extract_continuous_features(perf)
    assert curves.shape == (math.ceil(perf.duration * 20) + 1, len(FEATURE_NAMES))
    assert np.isfinite(curves).all()
    assert int(curves[:, COL["onset"]].sum()) <= len(perf.notes)
    assert curves.min() >= 0.0 and curves[:, COL["pedal"]].max() <= 1.0
