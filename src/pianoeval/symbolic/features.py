"""Continuous MIDI curves (S3): a performance sampled at a fixed frame rate as [T, D] float32 curves.

Frame t stands for time t / frame_rate; T = ceil(duration * frame_rate) + 1, so the last frame holds
the end of the performance. An onset at time s falls on frame round(s * frame_rate); a note sounds on
frames [round(onset * fr), round(offset * fr)), and at least on its onset frame so that very short
notes are not lost. Every curve is scaled by a fixed constant (below), never by per-file statistics,
so the same value means the same thing in every file; most lie in [0, 1].

Curves ("held" = the value of the last onset, kept until the next one):
- onset: 1 on frames with a note onset, else 0.
- onset_velocity: loudest onset velocity / 127 on onset frames, else 0.
- velocity: onset_velocity held (0 before the first onset).
- onset_density: onsets per second, smoothed over ONSET_DENSITY_WINDOW_S, / ONSET_DENSITY_SCALE.
- pitch_mean: mean pitch of sounding notes, (p - 21) / 87; held through silences.
- pitch_range: (highest - lowest sounding pitch) / 87; 0 with fewer than two notes.
- polyphony: number of sounding notes / POLYPHONY_SCALE.
- pedal: sustain pedal CC64 / 127, the raw continuous value (half pedalling kept).
- ioi: last inter-onset interval between chords (onsets within CHORD_WINDOW_S form one chord),
  log-scaled by `log_time`, held.
- time_since_onset: time since the last chord onset, log-scaled by `log_time` (1 before the first).
- tempo: local tempo proxy, chord onsets per second = 1 / exp(mean log ioi over TEMPO_WINDOW_S),
  / TEMPO_SCALE.
- articulation: per chord, mean of note duration / gap to the next onset within REGISTER_SEMITONES
  of the note's pitch (1 = legato, < 1 detached, > 1 overlapping), clipped to [0, 2] and halved, held.

Score-aligned curves (SCORE_CURVE_NAMES), when the score the performance plays is given and aligns
(`score_stats.match_score`); all 0 otherwise (no score, or too few shared notes), `score_aligned` telling
which. They hold what the curves above cannot: how the playing departs from what is written.
- score_aligned: 1 on every frame when the score aligned, else 0.
- score_tempo: local log(notated / performed duration) between matched score onsets at least 0.2 s
  apart (> 0 faster than written), interpolated between the spans' performed middles, clipped to ±2.
- score_timing: onset deviation from the smoothed tempo map (`score_stats.onset_deviations`) of the
  last matched onset, / SCORE_TIMING_SCALE s, clipped to ±3, held.
- score_velocity: the loudest notated velocity (score MIDI velocities follow the dynamics) of the
  notes matched at the last onset / 127, held.
- score_articulation: mean log(performed / notated duration) of the notes matched at the last onset,
  clipped to ±2 and halved, held.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from pianoeval.core.constants import FEATURE_FRAME_RATE
from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance

if TYPE_CHECKING:
    from pianoeval.symbolic.score_stats import ScoreMatch

PERFORMANCE_CURVE_NAMES: tuple[str, ...] = (
    "onset",
    "onset_velocity",
    "velocity",
    "onset_density",
    "pitch_mean",
    "pitch_range",
    "polyphony",
    "pedal",
    "ioi",
    "time_since_onset",
    "tempo",
    "articulation",
)
SCORE_CURVE_NAMES: tuple[str, ...] = (
    "score_aligned",
    "score_tempo",
    "score_timing",
    "score_velocity",
    "score_articulation",
)
FEATURE_NAMES: tuple[str, ...] = PERFORMANCE_CURVE_NAMES + SCORE_CURVE_NAMES

# Piano keys: A0 = 21 .. C8 = 108, so (p - 21) / 87 lies in [0, 1].
PITCH_LOW: int = 21
PITCH_SPAN: int = 87
# Ten sounding keys is a full two-hand texture; denser (pedal-less) counts go above 1.
POLYPHONY_SCALE: float = 10.0
# Twenty onsets per second is virtuoso density (fast two-hand passage work).
ONSET_DENSITY_SCALE: float = 20.0
# Density is smoothed over half a second: long enough to count, short enough to follow a phrase.
ONSET_DENSITY_WINDOW_S: float = 0.5
# Onsets closer than this (s) are one chord (same value as the hand-made statistics).
CHORD_WINDOW_S: float = 0.03
# Log time scale: log(1 + t / 50 ms) / log(1 + 4 s / 50 ms), so 50 ms -> 0.16, 0.5 s -> 0.55, 4 s -> 1.
IOI_REF_S: float = 0.05
IOI_MAX_S: float = 4.0
# Local tempo: log IOIs averaged over 2 s; 10 chords per second maps to 1.
TEMPO_WINDOW_S: float = 2.0
TEMPO_SCALE: float = 10.0
# Articulation compares a note with the next onset within a fifth of it (its voice or register).
REGISTER_SEMITONES: int = 7
ARTICULATION_MAX: float = 2.0
# Onset deviations from the tempo map: 100 ms (a clearly audible early or late note) maps to 1.
SCORE_TIMING_SCALE: float = 0.1


def log_time(seconds: np.ndarray) -> np.ndarray:
    """Map durations in seconds to [0, 1] on a log scale (see IOI_REF_S, IOI_MAX_S)."""
    scaled = np.log1p(np.clip(seconds, 0.0, None) / IOI_REF_S) / math.log1p(IOI_MAX_S / IOI_REF_S)
    return np.clip(scaled, 0.0, 1.0)


def _smooth(x: np.ndarray, width_frames: int) -> np.ndarray:
    """Hann-window moving average [T] -> [T]; edges are renormalised so a constant stays constant."""
    if width_frames < 2 or len(x) == 0:
        return x.astype(np.float64)
    win = np.hanning(width_frames + 2)[1:-1]
    # Full convolution, centred slice: np.convolve(mode="same") would return the window's length
    # when the window is longer than the curve.
    start = (len(win) - 1) // 2
    num = np.convolve(x, win)[start : start + len(x)]
    den = np.convolve(np.ones(len(x)), win)[start : start + len(x)]
    return num / den


def _hold(values: np.ndarray, defined: np.ndarray, before: float) -> np.ndarray:
    """Forward-fill `values` [T] from the frames where `defined` [T] is True; `before` until the first."""
    idx = np.where(defined, np.arange(len(values)), -1)
    idx = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(idx >= 0, values[np.maximum(idx, 0)], before)


def chord_starts(onsets: np.ndarray) -> np.ndarray:
    """Chord id [N] of each sorted onset: a new chord starts more than CHORD_WINDOW_S after the last."""
    return np.cumsum(np.r_[True, np.diff(onsets) > CHORD_WINDOW_S]) - 1


def articulation_ratios(notes: np.ndarray) -> np.ndarray:
    """Duration / gap to the next onset within REGISTER_SEMITONES, per note [N] (NaN if none follows)."""
    onsets, pitches = notes[:, 0], notes[:, 2]
    out = np.full(len(notes), np.nan)
    for i in range(len(notes)):
        # Only later chords count; searching a 4 s horizon keeps this linear in N.
        lo = np.searchsorted(onsets, onsets[i] + CHORD_WINDOW_S, side="right")
        hi = np.searchsorted(onsets, onsets[i] + IOI_MAX_S, side="right")
        near = np.flatnonzero(np.abs(pitches[lo:hi] - pitches[i]) <= REGISTER_SEMITONES)
        if len(near):
            gap = onsets[lo + near[0]] - onsets[i]
            out[i] = (notes[i, 1] - onsets[i]) / gap
    return out


def extract_continuous_features(
    perf: Performance,
    frame_rate: int = FEATURE_FRAME_RATE,
    score: Performance | None = None,
    match: ScoreMatch | None = None,
) -> np.ndarray:
    """Performance -> curves [T, D] float32 (D = len(FEATURE_NAMES), T = ceil(duration * fr) + 1), no NaN.

    The score-aligned curves are filled when both `score` and its `match` (`score_stats.match_score`)
    are given, else left at 0.
    """
    if len(perf.notes) == 0:
        raise InputError("performance has no notes to turn into curves", perf.path)
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    fr = float(frame_rate)
    n_frames = math.ceil(perf.duration * fr) + 1
    times = np.arange(n_frames) / fr
    on_idx = np.clip(np.round(perf.notes[:, 0] * fr).astype(np.int64), 0, n_frames - 1)
    off_idx = np.clip(np.round(perf.notes[:, 1] * fr).astype(np.int64), on_idx + 1, n_frames)
    curves = np.zeros((n_frames, len(FEATURE_NAMES)), dtype=np.float64)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    _onset_curves(curves, col, on_idx, perf.notes[:, 3], fr)
    _sounding_curves(curves, col, on_idx, off_idx, perf.notes[:, 2])
    if len(perf.pedal):
        # Sustain pedal: the last CC64 value at each frame time.
        last = np.searchsorted(perf.pedal[:, 0], times, side="right") - 1
        curves[:, col["pedal"]] = np.where(last >= 0, perf.pedal[np.maximum(last, 0), 1], 0.0) / 127.0
    _timing_curves(curves, col, perf.notes[:, 0], on_idx, times, fr)
    _articulation_curve(curves, col, perf.notes, on_idx)
    if score is not None and match is not None:
        _score_curves(curves, col, perf, score, match, times, fr)
    return np.nan_to_num(curves, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _onset_curves(curves: np.ndarray, col: dict[str, int], on_idx: np.ndarray, vels: np.ndarray, fr: float) -> None:
    """Onsets, their velocities (at the onset and held), and the smoothed onset density."""
    n_frames = len(curves)
    counts = np.bincount(on_idx, minlength=n_frames).astype(np.float64)
    has_onset = counts > 0
    curves[:, col["onset"]] = has_onset
    onset_vel = np.zeros(n_frames)
    np.maximum.at(onset_vel, on_idx, vels / 127.0)
    curves[:, col["onset_velocity"]] = onset_vel
    curves[:, col["velocity"]] = _hold(onset_vel, has_onset, 0.0)
    width = max(1, round(ONSET_DENSITY_WINDOW_S * fr))
    curves[:, col["onset_density"]] = _smooth(counts * fr, width) / ONSET_DENSITY_SCALE


def _sounding_curves(
    curves: np.ndarray, col: dict[str, int], on_idx: np.ndarray, off_idx: np.ndarray, pitches: np.ndarray
) -> None:
    """Sounding notes per frame: polyphony, mean pitch (held through silences) and pitch range."""
    n_frames = len(curves)
    delta = np.zeros(n_frames + 1)
    np.add.at(delta, on_idx, 1.0)
    np.add.at(delta, off_idx, -1.0)
    active = np.cumsum(delta)[:n_frames]
    pdelta = np.zeros(n_frames + 1)
    np.add.at(pdelta, on_idx, pitches)
    np.add.at(pdelta, off_idx, -pitches)
    psum = np.cumsum(pdelta)[:n_frames]
    highest = np.full(n_frames, -np.inf)
    lowest = np.full(n_frames, np.inf)
    for s, e, p in zip(on_idx, off_idx, pitches, strict=True):
        np.maximum(highest[s:e], p, out=highest[s:e])
        np.minimum(lowest[s:e], p, out=lowest[s:e])
    sounding = active > 0.5
    pitch_now = np.where(sounding, psum / np.maximum(active, 1.0), 0.0)
    first_pitch = pitch_now[np.argmax(sounding)]
    curves[:, col["pitch_mean"]] = (_hold(pitch_now, sounding, first_pitch) - PITCH_LOW) / PITCH_SPAN
    curves[:, col["pitch_range"]] = np.where(active > 1.5, highest - lowest, 0.0) / PITCH_SPAN
    curves[:, col["polyphony"]] = active / POLYPHONY_SCALE


def _timing_curves(
    curves: np.ndarray, col: dict[str, int], onsets: np.ndarray, on_idx: np.ndarray, times: np.ndarray, fr: float
) -> None:
    """Chord-level timing: time since the last chord, the held IOI and the local tempo."""
    chord = chord_starts(onsets)
    first_of_chord = np.r_[True, np.diff(chord) > 0]
    chord_on = onsets[first_of_chord]
    chord_frame = on_idx[first_of_chord]
    last_chord = np.searchsorted(chord_on, times, side="right") - 1
    since = np.where(last_chord >= 0, times - chord_on[np.maximum(last_chord, 0)], IOI_MAX_S)
    curves[:, col["time_since_onset"]] = log_time(since)
    if len(chord_on) > 1:
        iois = np.clip(np.diff(chord_on), 1e-3, IOI_MAX_S)
        ioi_at = np.full(len(curves), np.nan)
        ioi_at[chord_frame[1:]] = iois  # the IOI that ends at each chord onset
        defined = np.isfinite(ioi_at)
        held = _hold(np.nan_to_num(ioi_at), defined, iois[0])
        curves[:, col["ioi"]] = log_time(held)
        log_ioi = _smooth(np.log(held), max(1, round(TEMPO_WINDOW_S * fr)))
        curves[:, col["tempo"]] = np.exp(-log_ioi) / TEMPO_SCALE


def _articulation_curve(curves: np.ndarray, col: dict[str, int], notes: np.ndarray, on_idx: np.ndarray) -> None:
    """Articulation per chord (mean over its notes that have a following note nearby), held."""
    n_frames = len(curves)
    ratio = np.clip(articulation_ratios(notes), 0.0, ARTICULATION_MAX) / ARTICULATION_MAX
    ok = np.isfinite(ratio)
    art, has_art = _frame_mean(ratio[ok], on_idx[ok], n_frames)
    first_art = art[np.argmax(has_art)] if ok.any() else 0.5
    curves[:, col["articulation"]] = _hold(art, has_art, first_art)


def _frame_mean(values: np.ndarray, frame_idx: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` [N] per frame of `frame_idx` [N] → (means [T], 0 where none; has [T] bool)."""
    total = np.bincount(frame_idx, weights=values, minlength=n_frames)
    count = np.bincount(frame_idx, minlength=n_frames)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0), count > 0


def _score_curves(
    curves: np.ndarray,
    col: dict[str, int],
    perf: Performance,
    score: Performance,
    match: ScoreMatch,
    times: np.ndarray,
    fr: float,
) -> None:
    """The score-aligned curves of a performance matched to its score (see the module docstring)."""
    from pianoeval.symbolic.score_stats import duration_ratios, local_tempo, onset_deviations

    n_frames = len(curves)
    curves[:, col["score_aligned"]] = 1.0
    ratios, _, perf_mids = local_tempo(match)
    tempo = np.interp(times, perf_mids, ratios) if len(ratios) else np.full(n_frames, match.log_tempo)
    curves[:, col["score_tempo"]] = np.clip(tempo, -2.0, 2.0)
    # Timing: one value per matched score onset, at the frame of its performed (median) onset.
    group_idx = np.clip(np.round(match.perf_onsets * fr).astype(np.int64), 0, n_frames - 1)
    deviation = np.zeros(n_frames)
    has_group = np.zeros(n_frames, dtype=bool)
    deviation[group_idx] = np.clip(onset_deviations(match) / SCORE_TIMING_SCALE, -3.0, 3.0)
    has_group[group_idx] = True
    curves[:, col["score_timing"]] = _hold(deviation, has_group, 0.0)
    # Dynamics and articulation: per matched note, at its own onset frame.
    s_idx, p_idx = match.pairs[:, 0], match.pairs[:, 1]
    note_idx = np.clip(np.round(perf.onsets[p_idx] * fr).astype(np.int64), 0, n_frames - 1)
    art, has_note = _frame_mean(np.clip(duration_ratios(match, perf, score), -2.0, 2.0) / 2.0, note_idx, n_frames)
    curves[:, col["score_articulation"]] = _hold(art, has_note, 0.0)
    notated = np.zeros(n_frames)
    np.maximum.at(notated, note_idx, score.notes[s_idx, 3] / 127.0)
    curves[:, col["score_velocity"]] = _hold(notated, has_note, notated[note_idx.min()])
