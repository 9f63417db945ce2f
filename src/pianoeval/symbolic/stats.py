"""Hand-made MIDI statistics: the feature vector of the ridge-regression baseline."""

from __future__ import annotations

import logging

import numpy as np

from pianoeval.core.constants import SCORE_COLUMNS as SCORE_COLUMNS  # still read from here by steps/score.py
from pianoeval.core.constants import SCORE_STAT_NAMES
from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, pedal_down_mask
from pianoeval.symbolic.score_stats import ScoreMatch, score_relative_statistics

log = logging.getLogger(__name__)

# Onsets closer than this (s) belong to one chord.
_CHORD_WINDOW_S = 0.03


def midi_statistics(perf: Performance) -> np.ndarray:
    """Summarise a performance as a float32 vector [len(STAT_NAMES)] (no NaN)."""
    notes = perf.notes
    onsets, offsets, pitch, vel = notes[:, 0], notes[:, 1], notes[:, 2], notes[:, 3]
    duration = max(perf.duration - float(onsets.min()), 1e-3)
    # Chord onsets: the first onset of each run of onsets within the chord window.
    starts = np.r_[True, np.diff(onsets) > _CHORD_WINDOW_S]
    chord_onsets = onsets[starts]
    ioi = np.diff(chord_onsets) if len(chord_onsets) > 1 else np.array([0.5])
    ioi = np.clip(ioi, 1e-3, None)
    durs = np.clip(offsets - onsets, 1e-3, None)
    # Legato: each note's duration relative to the gap to the next chord onset after it.
    next_idx = np.searchsorted(chord_onsets, onsets + _CHORD_WINDOW_S, side="left")
    next_onset = np.where(
        next_idx < len(chord_onsets), chord_onsets[np.minimum(next_idx, len(chord_onsets) - 1)], np.nan
    )
    gap = next_onset - onsets
    legato = np.where(np.isfinite(gap) & (gap > 1e-3), durs / np.where(gap > 1e-3, gap, 1.0), np.nan)
    legato_mean = float(np.nanmedian(legato)) if np.isfinite(legato).any() else 1.0
    grid = np.arange(onsets.min(), perf.duration, 0.05)
    polyphony = ((onsets[None, :] <= grid[:, None]) & (offsets[None, :] > grid[:, None])).sum(axis=1)
    pedal_frac = float(pedal_down_mask(perf, grid).mean()) if len(grid) else 0.0
    down = perf.pedal[:, 1] >= 64 if len(perf.pedal) else np.zeros(0, bool)
    pedal_changes = float(np.abs(np.diff(down.astype(int))).sum()) if len(down) > 1 else 0.0
    slope = float(np.polyfit(onsets - onsets.min(), vel, 1)[0]) if len(np.unique(onsets)) > 1 else 0.0
    # Melody projection: the highest note of each chord against the mean velocity.
    group_ids = np.cumsum(starts) - 1
    top = np.array([vel[group_ids == g][np.argmax(pitch[group_ids == g])] for g in range(group_ids[-1] + 1)])
    spreads = [
        float(onsets[group_ids == g].max() - onsets[group_ids == g].min()) * 1000.0
        for g in range(group_ids[-1] + 1)
        if (group_ids == g).sum() > 1
    ]
    values = [
        np.log(duration),
        len(notes) / duration,
        vel.mean() / 127.0,
        vel.std() / 127.0,
        (np.percentile(vel, 90) - np.percentile(vel, 10)) / 127.0,
        np.log(ioi).mean(),
        np.log(ioi).std(),
        ioi.std() / ioi.mean(),
        np.log(durs).mean(),
        np.log(max(legato_mean, 1e-3)),
        pitch.mean() / 127.0,
        pitch.std() / 127.0,
        float(polyphony.mean()) if len(polyphony) else 0.0,
        pedal_frac,
        pedal_changes / duration,
        slope / 127.0,
        (top.mean() - vel.mean()) / 127.0,
        float(np.mean(spreads)) if spreads else 0.0,
    ]
    out = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32)


def performance_statistics(
    perf: Performance, score: Performance | None = None, match: ScoreMatch | None = None
) -> np.ndarray:
    """The full statistics vector float32 [len(ALL_STAT_NAMES)] of a performance and (optionally) its score.

    A score that cannot be aligned (too few shared notes) leaves the score part at zeros with the flag
    at 0, exactly as a missing score does: the performance statistics still stand. `match`, the score's
    `match_score` when the caller already has it (the alignment is then not run again).
    """
    own = midi_statistics(perf)
    rel = np.zeros(len(SCORE_STAT_NAMES) + 1, dtype=np.float32)
    if score is not None:
        try:
            rel[:-1] = score_relative_statistics(perf, score, match)
            rel[-1] = 1.0
        except InputError as exc:
            log.warning("score statistics skipped: %s", exc)
    return np.concatenate([own, rel])
