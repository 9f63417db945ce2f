"""Score-relative statistics: how a performance departs from the score it plays.

The hand-made statistics (`stats.py`) describe a performance on its own, so a slow piece and a
slowly played piece look alike. PercePiano's raters judged each performance *of a given score*;
these statistics put the score beside it. The performance is aligned to the score MIDI
(`alignment.align`: DTW, then one-to-one note matching), and each statistic compares a matched
note, chord or passage with its notated counterpart:

- tempo: the performed/notated duration ratio over the whole segment, and the local tempo curve
  (between successive matched score onsets, in log ratio to the global tempo): its spread (rubato),
  its frame-to-frame jitter, its overall trend (accelerando/ritardando) and the final slowing.
- timing: onset deviation from a smoothed tempo map (what is left after rubato), and chord asynchrony
  (spread of the onsets of notes notated together).
- articulation: performed duration / notated duration (in performed time), log scale: mean, spread,
  and the share of notes played much shorter (staccato) or much longer (overlapping) than written.
- dynamics: the notated velocity (score MIDI velocities follow the dynamic markings) against the
  performed one: correlation, slope, the performed velocity range relative to the notated range.
- accuracy: share of performed notes with no score counterpart (extra/wrong notes) and of score
  notes not played.

Every value is finite; statistics undefined for a segment (e.g. no chords) take a neutral value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance

if TYPE_CHECKING:
    from pianoeval.symbolic.alignment import Alignment

# Below this share of matched notes the "score" is not what was played (wrong file, other piece):
# the comparison would be noise, so it is refused.
MIN_MATCH_SHARE = 0.3
# Local tempo is measured between matched score onsets at least this far apart (s, score time):
# closer onsets give ratios dominated by onset jitter rather than tempo.
_MIN_SPAN_S = 0.2
# The smoothed tempo map that onset deviations are measured against: a moving median over this many
# consecutive matched score onsets (about a bar of ordinary texture).
_SMOOTH_ONSETS = 7
# Articulation thresholds in log(performed / notated duration): half as long = staccato, 1.5x = overlap.
_STACCATO = np.log(0.5)
_OVERLAP = np.log(1.5)
# The last part of the segment (share of its score span) that `final_ritardando` compares.
_FINAL_SHARE = 0.2


def _safe_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two vectors, 0 when either is constant or too short."""
    if len(a) < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _moving_median(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving median of x [N] over `width` samples (shrinking at the ends)."""
    half = width // 2
    return np.array([np.median(x[max(0, i - half) : i + half + 1]) for i in range(len(x))])


@dataclass
class ScoreMatch:
    """A performance aligned to its score, reduced to what the statistics and the curves compare.

    `pairs` [P, 2] (score idx, perf idx) are the matched notes; `onsets` [K] the distinct matched score
    onsets (s, score time) and `perf_onsets` [K] the median performed onset of each one's notes;
    `group` [P] the index in `onsets` of each pair; `log_tempo` the global log(notated / performed span),
    > 0 when played faster than notated.
    """

    alignment: Alignment
    onsets: np.ndarray
    perf_onsets: np.ndarray
    group: np.ndarray
    log_tempo: float

    @property
    def pairs(self) -> np.ndarray:
        return self.alignment.pairs


def match_score(perf: Performance, score: Performance) -> ScoreMatch:
    """Align `perf` to `score` and group the matched notes by score onset (InputError if unalignable)."""
    from pianoeval.symbolic.alignment import align

    al = align(score, perf)
    pairs = al.pairs
    if len(pairs) < max(3, MIN_MATCH_SHARE * min(len(score.notes), len(perf.notes))):
        raise InputError(f"shares too few notes with its score ({len(pairs)} matched of {len(perf.notes)})", perf.path)
    s_on, p_on = score.onsets[pairs[:, 0]], perf.onsets[pairs[:, 1]]
    s_span = max(float(score.onsets.max() - score.onsets.min()), 1e-3)
    p_span = max(float(perf.onsets.max() - perf.onsets.min()), 1e-3)
    # One point per matched score onset (median performed onset of its notes), as in the alignment.
    onsets, group = np.unique(s_on, return_inverse=True)
    perf_med = np.array([np.median(p_on[group == k]) for k in range(len(onsets))])
    return ScoreMatch(al, onsets, perf_med, group, float(np.log(s_span / p_span)))


def local_tempo(match: ScoreMatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local log(notated / performed duration) between matched score onsets at least _MIN_SPAN_S apart
    [M], and each span's middle [M] in score time and in performed time (s)."""
    onsets, perf_med = match.onsets, match.perf_onsets
    ratios, mids, perf_mids = [], [], []
    i = 0
    while i < len(onsets) - 1:
        # Walk forward to the next onset far enough away for a tempo, not onset jitter.
        j = int(np.searchsorted(onsets, onsets[i] + _MIN_SPAN_S))
        if j >= len(onsets):
            break
        d_perf = perf_med[j] - perf_med[i]
        if d_perf > 1e-3:
            ratios.append(np.log((onsets[j] - onsets[i]) / d_perf))
            mids.append(0.5 * (onsets[i] + onsets[j]))
            perf_mids.append(0.5 * (perf_med[i] + perf_med[j]))
        i = j
    return tuple(np.asarray(x, dtype=np.float64) for x in (ratios, mids, perf_mids))


def onset_deviations(match: ScoreMatch) -> np.ndarray:
    """Performed minus expected onset [K] (s) per matched score onset, the expectation being the global
    tempo plus a moving median over _SMOOTH_ONSETS onsets (what is left after rubato); zeros below 3."""
    if len(match.onsets) < 3:
        return np.zeros(len(match.onsets))
    offset = match.perf_onsets - match.onsets * np.exp(-match.log_tempo)
    return offset - _moving_median(offset, _SMOOTH_ONSETS)


def duration_ratios(match: ScoreMatch, perf: Performance, score: Performance) -> np.ndarray:
    """log(performed / notated duration) [P] per matched note, the notated one in performed time."""
    s_idx, p_idx = match.pairs[:, 0], match.pairs[:, 1]
    onsets, perf_med = match.onsets, match.perf_onsets
    s_on = score.onsets[s_idx]
    local_scale = np.interp(s_on, onsets, np.gradient(perf_med, onsets)) if len(onsets) >= 2 else np.ones(len(s_on))
    local_scale = np.clip(local_scale, 0.2, 5.0)
    s_dur = (score.notes[s_idx, 1] - score.notes[s_idx, 0]) * local_scale
    p_dur = perf.notes[p_idx, 1] - perf.notes[p_idx, 0]
    return np.log(np.clip(p_dur, 1e-3, None) / np.clip(s_dur, 1e-3, None))


def score_relative_statistics(perf: Performance, score: Performance, match: ScoreMatch | None = None) -> np.ndarray:
    """Compare a performance with its score → float32 [len(SCORE_STAT_NAMES)] (InputError if unalignable).

    `match`, the result of `match_score(perf, score)` when the caller already has it (it is not free).
    """
    match = match if match is not None else match_score(perf, score)
    al, pairs, log_tempo = match.alignment, match.pairs, match.log_tempo
    s_idx, p_idx = pairs[:, 0], pairs[:, 1]
    p_on = perf.onsets[p_idx]
    onsets, inverse = match.onsets, match.group
    spread = np.array([np.ptp(p_on[inverse == k]) for k in range(len(onsets)) if (inverse == k).sum() > 1])
    ratios_a, mids_a, _ = local_tempo(match)
    ratios_a = ratios_a - log_tempo
    if len(ratios_a) >= 2:
        tempo_std = float(ratios_a.std())
        jitter = float(np.abs(np.diff(ratios_a)).mean())
        rel = (mids_a - onsets[0]) / max(onsets[-1] - onsets[0], 1e-3)
        trend = float(np.polyfit(rel, ratios_a, 1)[0]) if np.ptp(rel) > 0 else 0.0
        tail = rel >= 1.0 - _FINAL_SHARE
        final_rit = float(ratios_a[~tail].mean() - ratios_a[tail].mean()) if tail.any() and (~tail).any() else 0.0
    else:
        tempo_std = jitter = trend = final_rit = 0.0
    deviation_ms = float(np.std(onset_deviations(match)) * 1000.0) if len(onsets) >= 3 else 0.0

    # Articulation: performed duration against the notated one, in performed time.
    art = duration_ratios(match, perf, score)

    s_vel, p_vel = score.notes[s_idx, 3], perf.notes[p_idx, 3]
    vel_corr = _safe_corr(s_vel, p_vel)
    vel_slope = float(np.polyfit(s_vel, p_vel, 1)[0]) if np.std(s_vel) > 1e-9 and len(s_vel) >= 3 else 0.0
    s_range = np.ptp(score.notes[:, 3]) if len(score.notes) else 0.0
    p_range = np.percentile(perf.notes[:, 3], 95) - np.percentile(perf.notes[:, 3], 5)
    range_ratio = float(np.log((p_range + 8.0) / (s_range + 8.0)))

    values = [
        log_tempo,
        tempo_std,
        jitter,
        trend,
        final_rit,
        deviation_ms,
        float(np.median(spread) * 1000.0) if len(spread) else 0.0,
        float(art.mean()) if len(art) else 0.0,
        float(art.std()) if len(art) else 0.0,
        float((art < _STACCATO).mean()) if len(art) else 0.0,
        float((art > _OVERLAP).mean()) if len(art) else 0.0,
        vel_corr,
        float(np.clip(vel_slope, -3.0, 3.0)),
        range_ratio,
        1.0 - al.perf_match_rate,
        1.0 - al.score_match_rate,
    ]
    out = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32)
