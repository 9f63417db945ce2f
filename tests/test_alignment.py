"""Score alignment: synthetic warped performances with known beats, a shuffled one, and a real ASAP piece."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, load_performance, write_performance
from pianoeval.symbolic.alignment import (
    TimeMap,
    align,
    beat_metrics,
    dtw_path,
    measure_accuracy,
    onset_features,
    run_align_check,
)

BEAT_S = 0.5  # score tempo: 120 bpm
BEATS_PER_BAR = 4
N_BARS = 24


def make_score(seed: int = 0) -> tuple[Performance, np.ndarray]:
    """A 24-bar 4/4 score (eighth-note melody over a chord per beat) → (Performance, beat times [96])."""
    rng = np.random.default_rng(seed)
    notes = []
    n_beats = N_BARS * BEATS_PER_BAR
    for beat in range(n_beats):
        t = beat * BEAT_S
        root = 48 + int(rng.integers(0, 12))
        for p in (root, root + 4, root + 7):
            notes.append((t, t + BEAT_S, p, 64))
        for half in (0.0, 0.5):
            notes.append((t + half * BEAT_S, t + (half + 0.5) * BEAT_S, 67 + int(rng.integers(0, 14)), 64))
    return Performance(np.array(notes)), np.arange(n_beats) * BEAT_S


def warp(s: np.ndarray) -> np.ndarray:
    """Ground-truth score → performance time: 15% slower, ±0.6 s rubato swell, 1 s lead-in (monotone)."""
    return 1.0 + 1.15 * s + 0.6 * np.sin(2 * np.pi * s / 20.0)


def perform(score: Performance, seed: int = 1, jitter_s: float = 0.015) -> Performance:
    """Warp a score, jitter onsets, drop 5% of notes, add grace notes before 5% and 2% wrong pitches."""
    rng = np.random.default_rng(seed)
    notes = score.notes.copy()
    on = warp(notes[:, 0]) + rng.normal(0, jitter_s, len(notes))
    dur = warp(notes[:, 1]) - warp(notes[:, 0])
    notes[:, 0], notes[:, 1] = on, on + dur
    notes[:, 3] = rng.integers(40, 100, len(notes))
    wrong = rng.random(len(notes)) < 0.02
    notes[wrong, 2] += rng.choice([-1, 1], wrong.sum())
    keep = rng.random(len(notes)) >= 0.05
    graces = notes[rng.random(len(notes)) < 0.05].copy()
    graces[:, 0] -= 0.06
    graces[:, 1] = graces[:, 0] + 0.05
    graces[:, 2] += 2
    return Performance(np.concatenate([notes[keep], graces]))


def test_onset_features_shape_and_norm() -> None:
    feats = onset_features(np.array([0.0, 0.0, 0.26]), np.array([60, 64, 60]), n_frames=10, fps=10.0)
    assert feats.shape == (10, 88) and feats.dtype == np.float32
    norms = np.linalg.norm(feats, axis=1)
    np.testing.assert_allclose(norms[:5], 1.0, rtol=1e-6)  # onsets at frames 0 and 2 decay over 3 frames
    assert np.all(norms[5:] == 0)  # silence stays a zero vector


def test_dtw_recovers_a_known_path() -> None:
    eye = np.eye(88, dtype=np.float32)
    a = eye[[0, 1, 2, 3]]
    b = eye[[0, 0, 1, 2, 2, 2, 3]]  # the same sequence with held frames
    path, cost = dtw_path(a, b)
    assert cost == 0.0
    np.testing.assert_array_equal(path, [[0, 0], [0, 1], [1, 2], [2, 3], [2, 4], [2, 5], [3, 6]])


def test_time_map_interpolates_and_extrapolates() -> None:
    tmap = TimeMap(np.array([0.0, 1.0, 3.0]), np.array([10.0, 12.0, 13.0]))
    s = np.array([-1.0, 0.5, 2.0, 4.0])  # both extrapolated ends included
    # Linear between anchors; outside, the tempo of the outer anchors (here all three: 1 s per score s).
    np.testing.assert_allclose(tmap.score_to_perf(s), [9.0, 11.0, 12.5, 14.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        TimeMap(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 2.0]))


def test_measure_accuracy_counts_nearest_downbeat() -> None:
    true = np.array([0.0, 2.0, 4.0, 6.0])
    assert measure_accuracy(true + 0.3, true) == 1.0
    assert measure_accuracy(np.array([0.0, 2.0, 6.1, 4.1]), true) == 0.5  # two measures swapped
    m = beat_metrics(true + np.array([0.0, 0.04, 0.08, 0.2]), true, np.ones(4, dtype=bool))
    assert m["median_abs_error_ms"] == pytest.approx(60.0) and m["within_50ms"] == 0.5
    assert m["within_100ms"] == 0.75 and m["measure_accuracy"] == 1.0
    m = beat_metrics(true + np.array([0.0, 0.04, 0.08, 0.2]), true, np.ones(4, dtype=bool), np.array([1, 1, 0, 0]) > 0)
    assert m["n_beats_between_onsets"] == 2 and m["median_abs_error_between_onsets_ms"] == pytest.approx(140.0)


def test_synthetic_warped_performance_aligns() -> None:
    score, beats = make_score()
    result = align(score, perform(score))
    truth = warp(beats)
    err_ms = np.abs(result.beat_times(beats) - truth) * 1000
    downbeat = np.arange(len(beats)) % BEATS_PER_BAR == 0
    assert np.median(err_ms) < 20, err_ms
    assert np.percentile(err_ms, 95) < 60, err_ms
    assert measure_accuracy(result.beat_times(beats)[downbeat], truth[downbeat]) == 1.0
    assert result.perf_match_rate > 0.85  # grace notes and wrong pitches stay unmatched


def test_shuffled_performance_is_worse() -> None:
    score, beats = make_score()
    perf = perform(score)
    good = align(score, perf)
    # Play the three 8-bar sections in the order 3, 1, 2: no monotone map can fit that.
    section = warp(np.array([0.0, 16.0, 32.0, 48.0])) - 0.1
    notes = perf.notes.copy()
    which = np.searchsorted(section, notes[:, 0]) - 1
    lengths = np.diff(section)
    new_start = {2: 0.0, 0: lengths[2], 1: lengths[2] + lengths[0]}
    for k in range(3):
        notes[which == k, :2] += new_start[k] + section[0] - section[k]
    bad = align(score, Performance(notes))
    truth = warp(beats)
    good_err = np.median(np.abs(good.beat_times(beats) - truth))
    bad_err = np.median(np.abs(bad.beat_times(beats) - truth))
    assert bad_err > 20 * max(good_err, 0.005)
    assert bad.perf_match_rate < good.perf_match_rate - 0.2  # the alignment itself reports the problem
    assert bad.dtw_cost > good.dtw_cost


def test_align_refuses_empty_input() -> None:
    score, _ = make_score()
    with pytest.raises(InputError, match="at least two notes"):
        align(score, Performance(np.array([[0.0, 1.0, 60, 80]])))


def _fake_asap(root: Path) -> Path:
    """An ASAP-shaped folder: one piece, a warped performance and a shuffled one, with annotations."""
    score, beats = make_score()
    folder = root / "Composer" / "Set" / "piece"
    write_performance(score, folder / "midi_score.mid")
    labels = ["db" if k % BEATS_PER_BAR == 0 else "b" for k in range(len(beats))]

    def annotate(path: Path, times: np.ndarray) -> None:
        path.write_text("".join(f"{t}\t{t}\t{lab}\n" for t, lab in zip(times, labels[: len(times)], strict=True)))

    annotate(folder / "midi_score_annotations.txt", beats)
    write_performance(perform(score), folder / "good.mid")
    annotate(folder / "good_annotations.txt", warp(beats))
    write_performance(perform(score, seed=2), folder / "short.mid")
    annotate(folder / "short_annotations.txt", warp(beats)[:-8])  # a skipped repeat: not one-to-one
    return root


def test_run_align_check_writes_report(tmp_path: Path) -> None:
    root = _fake_asap(tmp_path / "asap")
    out = tmp_path / "alignment" / "report.json"
    report = run_align_check(root, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    piece = report["pieces"]["Composer/Set/piece"]
    assert piece["n_performances"] == 1 and piece["median_abs_error_ms"] < 20
    assert piece["measure_accuracy"] == 1.0
    assert piece["baseline_linear"]["median_abs_error_ms"] > piece["median_abs_error_ms"]
    assert [Path(e["performance"]).name for e in report["excluded"]] == ["short.mid"]
    assert "one to one" in report["excluded"][0]["reason"]
    assert not list(out.parent.glob(".*"))  # no temporary files left


def test_cli_align_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pianoeval.cli import main

    out = tmp_path / "alignment" / "report.json"
    assert main(["align-check", "--asap-root", str(_fake_asap(tmp_path / "asap")), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["overall"]["n_performances"] == 1
    missing = tmp_path / "nowhere"
    assert main(["align-check", "--asap-root", str(missing), "--out", str(tmp_path / "other.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {missing.resolve()}: ASAP folder not found"
    assert not (tmp_path / "other.json").exists()


def test_real_asap_piece(shared_data: Path) -> None:
    """Bach WTC I prelude in D (bwv_854), one human performance against its score MIDI."""
    from pianoeval.data.asap import load_beat_annotations

    folder = shared_data / "asap" / "Bach" / "Prelude" / "bwv_854"
    score = load_performance(folder / "midi_score.mid")
    beats, labels = load_beat_annotations(folder / "midi_score_annotations.txt")
    true, _ = load_beat_annotations(folder / "Ozaki01M_annotations.txt")
    result = align(score, load_performance(folder / "Ozaki01M.mid"))
    pred = result.beat_times(beats)
    err_ms = np.abs(pred - true) * 1000
    downbeat = np.array([lab.startswith("db") for lab in labels])
    assert np.median(err_ms) < 10 and np.mean(err_ms <= 50) > 0.95, np.sort(err_ms)[-10:]
    assert measure_accuracy(pred[downbeat], true[downbeat]) == 1.0
    assert result.perf_match_rate > 0.9


def test_check_performance_uses_the_given_aligner(tmp_path: Path) -> None:
    """`check_performance(aligner=...)` scores that aligner (how scripts/bench_align.py compares libraries):
    the constant-tempo map given as the aligner scores exactly as the linear baseline."""
    from pianoeval.data.asap import load_beat_annotations
    from pianoeval.symbolic.alignment import Alignment, check_performance, linear_map

    folder = _fake_asap(tmp_path / "asap") / "Composer" / "Set" / "piece"
    score = load_performance(folder / "midi_score.mid")
    beats, labels = load_beat_annotations(folder / "midi_score_annotations.txt")
    downbeat = np.array([lab == "db" for lab in labels])

    def linear(s: Performance, p: Performance) -> Alignment:
        return Alignment(linear_map(s, p), np.zeros((0, 2), dtype=np.int64), 0.0, 0.0, float("nan"), float("nan"))

    args = (score, beats, folder / "good.mid", folder / "good_annotations.txt", downbeat)
    ours, lin = check_performance(*args), check_performance(*args, aligner=linear)
    np.testing.assert_array_equal(lin["check"].pred, lin["baseline"].pred)
    assert lin["metrics"]["median_abs_error_ms"] > 10 * max(ours["metrics"]["median_abs_error_ms"], 1.0)
