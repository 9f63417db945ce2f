"""Score-to-performance alignment of piano MIDI, and its check against ASAP's beat annotations.

`align(score, perf)` returns a monotone map between score time and performance time in three stages:

1. **Coarse DTW** over pitch-onset features (88 keys, onsets spread over three frames with decay,
   L2-normalised, cosine cost). The score is first stretched to the performance's length, so the path
   stays near the diagonal; the frame rate is chosen so the cost grid stays below `MAX_DTW_CELLS`.
2. **Note matching**: each score note is mapped through the current map and paired with the nearest
   unused performance note of the same pitch within a window (greedy by distance, one-to-one).
   Extra notes (ornaments, mistakes) simply stay unmatched; missing notes leave score notes unmatched.
3. **Anchors**: one per score onset (the median performance onset of its matched notes), made monotone
   by weighted isotonic regression; anchors far from that fit are dropped. Stages 2-3 repeat with
   narrowing windows (`REFINE_PASSES`).

The map is piecewise linear between anchors and extrapolated with the tempo of the outer anchors.
`run_align_check` aligns every ASAP performance to its score MIDI and scores the predicted beat times
against the annotated ones (metrics defined in docs/scoring.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path, write_json
from pianoeval.data.midi import Performance

log = logging.getLogger(__name__)

# Largest coarse DTW grid (score frames x performance frames): 1.5e7 float32 cells = 60 MB, so a
# 12-minute movement still aligns at ~5 frames/s on a laptop; shorter pieces get up to MAX_DTW_FPS.
MAX_DTW_CELLS: float = 1.5e7
# 20 frames/s (50 ms) resolves the onsets of ordinary passage work; note matching refines beyond it.
MAX_DTW_FPS: float = 20.0
# Weights of an onset in its own frame and the next two: an onset near a frame boundary still
# overlaps its counterpart in the other sequence.
ONSET_DECAY: tuple[float, ...] = (1.0, 0.5, 0.25)
# (matching window, anchor rejection) in seconds per refinement pass: the first pass must absorb the
# coarse map's error (a few frames plus rubato); later passes only fix local slips.
REFINE_PASSES: tuple[tuple[float, float], ...] = ((0.75, 0.3), (0.3, 0.15), (0.15, 0.1))
# Anchors used at each end to estimate the tempo for extrapolating beyond the first/last matched onset.
EXTRAPOLATION_ANCHORS: int = 10
# Beat-error tolerances (ms) reported as "share of beats within": 1 ms = the predicted beat is the
# annotated performed onset itself (ASAP places beats on performed notes); 50 ms is about the
# just-noticeable asynchrony of two piano onsets; 100 ms a sixteenth note at a fast tempo.
BEAT_TOLERANCES_MS: tuple[int, ...] = (1, 50, 100)
# A score beat counts as "on a score onset" when a score note starts within this time of it (s).
ON_ONSET_S: float = 0.002
# Name of the score-side annotation file in every ASAP piece folder.
SCORE_ANNOTATIONS = "midi_score_annotations.txt"


@dataclass
class TimeMap:
    """A monotone piecewise-linear map between score and performance time: anchors score_s [K], perf_s [K]."""

    score_s: np.ndarray
    perf_s: np.ndarray

    def __post_init__(self) -> None:
        self.score_s = np.asarray(self.score_s, dtype=np.float64)
        self.perf_s = np.asarray(self.perf_s, dtype=np.float64)
        if len(self.score_s) < 2 or len(self.score_s) != len(self.perf_s):
            raise ValueError("a TimeMap needs at least two (score, performance) anchors of equal count")
        if (np.diff(self.score_s) <= 0).any() or (np.diff(self.perf_s) <= 0).any():
            raise ValueError("TimeMap anchors must be strictly increasing on both axes")

    def score_to_perf(self, score_s: np.ndarray) -> np.ndarray:
        """Performance times [N] of score times [N] (s)."""
        return _interp_extrap(np.asarray(score_s, dtype=np.float64), self.score_s, self.perf_s)


@dataclass
class Alignment:
    """Result of `align`: the time map, matched note pairs [P, 2] (score idx, perf idx) and quality figures."""

    map: TimeMap
    pairs: np.ndarray
    perf_match_rate: float  # share of performance notes paired with a score note of the same pitch
    score_match_rate: float  # share of score notes paired with a performance note
    dtw_cost: float  # mean cosine cost along the coarse path (0 = identical onset patterns)
    dtw_fps: float  # frame rate the coarse DTW ran at

    def beat_times(self, score_beats: np.ndarray) -> np.ndarray:
        """Predicted performance times [B] (s) of the score's beats [B] (s)."""
        return self.map.score_to_perf(score_beats)


def _interp_extrap(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp inside [xp[0], xp[-1]], linear with the tempo of the outer anchors outside."""
    y = np.interp(x, xp, fp)
    k = min(len(xp) - 1, EXTRAPOLATION_ANCHORS)
    lo = (fp[k] - fp[0]) / (xp[k] - xp[0])
    hi = (fp[-1] - fp[-1 - k]) / (xp[-1] - xp[-1 - k])
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * lo, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi, y)


def onset_features(onsets: np.ndarray, pitches: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Pitch-onset features [T, 88] float32 (decayed onsets per key, L2-normalised; silent frames all zero)."""
    raw = np.zeros((n_frames, 88), dtype=np.float32)
    frame = np.clip(np.floor(onsets * fps).astype(np.int64), 0, n_frames - 1)
    np.add.at(raw, (frame, np.clip(pitches - 21, 0, 87)), 1.0)
    feats = raw * ONSET_DECAY[0]
    for lag, weight in enumerate(ONSET_DECAY[1:], start=1):
        feats[lag:] += weight * raw[:-lag]
    norm = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norm, 1e-9)


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """DTW of features a [N, D] and b [M, D] (cosine cost, steps (1,1), (1,0), (0,1)) → path [K, 2], mean cost.

    Two silent frames cost 0 and a silent against a sounding frame 1. Row i of the accumulated cost is
    computed in one vectorised step: D[i, j] = C[j] + min_{k <= j} (A[k] - C[k-1]) with C the prefix sum
    of row i's cost and A[k] = min(D[i-1, k-1], D[i-1, k]) (the horizontal moves unrolled).
    """
    n, m = len(a), len(b)
    a_silent, b_silent = ~a.any(axis=1), ~b.any(axis=1)

    def row_cost(i: int) -> np.ndarray:
        c = 1.0 - (b @ a[i]).astype(np.float64)  # a silent frame has a zero vector: cost 1 ...
        if a_silent[i]:
            c[b_silent] = 0.0  # ... except against another silent frame (rests line up)
        return c

    acc = np.empty((n, m), dtype=np.float32)
    prev = np.cumsum(row_cost(0))
    acc[0] = prev
    for i in range(1, n):
        enter = np.empty(m)
        enter[0] = prev[0]
        enter[1:] = np.minimum(prev[1:], prev[:-1])
        csum = np.cumsum(row_cost(i))
        prev = csum + np.minimum.accumulate(enter - np.concatenate(([0.0], csum[:-1])))
        acc[i] = prev
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))  # ties prefer the diagonal
            i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        path.append((i, j))
    return np.array(path[::-1]), float(prev[-1]) / len(path)


def coarse_map(score: Performance, perf: Performance) -> tuple[np.ndarray, np.ndarray, float, float]:
    """DTW map from score to performance onsets: (score_s [M], perf_s [M] non-decreasing, fps, mean cost)."""
    s0, s1 = float(score.onsets.min()), float(score.onsets.max())
    p0, p1 = float(perf.onsets.min()), float(perf.onsets.max())
    # Stretching the score to the performance's span keeps the path near the diagonal, so the
    # global tempo difference (2x in some ASAP pieces) costs no DTW steps.
    stretch = (p1 - p0) / max(s1 - s0, 1e-3)
    span = p1 - p0 + 1.0
    fps = float(min(MAX_DTW_FPS, np.sqrt(MAX_DTW_CELLS) / span))
    n = int(np.ceil(span * fps)) + 1
    a = onset_features((score.onsets - s0) * stretch, score.pitches, n, fps)
    b = onset_features(perf.onsets - p0, perf.pitches, n, fps)
    path, cost = dtw_path(a, b)
    frames, first = np.unique(path[:, 0], return_index=True)
    # A score frame held over several performance frames (a fermata) maps to their mean.
    mean_perf = np.add.reduceat(path[:, 1], first) / np.diff(np.append(first, len(path)))
    score_s = (frames + 0.5) / fps / stretch + s0
    perf_s = np.maximum.accumulate((mean_perf + 0.5) / fps + p0)
    return score_s, perf_s, fps, cost


def match_notes(score: Performance, perf: Performance, expected: np.ndarray, window: float) -> np.ndarray:
    """Pairs [P, 2] (score idx, perf idx): same pitch, |perf onset - expected [N_score]| < window, greedy one-to-one."""
    cand_d, cand_s, cand_p = [], [], []
    s_pitch, p_pitch = score.pitches, perf.pitches
    for pitch in np.intersect1d(np.unique(s_pitch), np.unique(p_pitch)):
        si = np.flatnonzero(s_pitch == pitch)
        pi = np.flatnonzero(p_pitch == pitch)
        onsets = perf.onsets[pi]  # sorted: Performance keeps notes in onset order
        lo = np.searchsorted(onsets, expected[si] - window)
        hi = np.searchsorted(onsets, expected[si] + window)
        counts = hi - lo
        if not counts.sum():
            continue
        rows = np.repeat(np.arange(len(si)), counts)
        cols = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True) if b > a])
        cand_d.append(np.abs(onsets[cols] - expected[si[rows]]))
        cand_s.append(si[rows])
        cand_p.append(pi[cols])
    if not cand_d:
        return np.zeros((0, 2), dtype=np.int64)
    dist, s_idx, p_idx = np.concatenate(cand_d), np.concatenate(cand_s), np.concatenate(cand_p)
    order = np.argsort(dist, kind="stable")
    used_s = np.zeros(len(score.notes), dtype=bool)
    used_p = np.zeros(len(perf.notes), dtype=bool)
    pairs = []
    for k in order:
        s, p = s_idx[k], p_idx[k]
        if not used_s[s] and not used_p[p]:
            used_s[s] = used_p[p] = True
            pairs.append((s, p))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def fit_anchors(
    score: Performance, perf: Performance, pairs: np.ndarray, reject: float
) -> tuple[np.ndarray, np.ndarray]:
    """Monotone anchors (score_s [K], perf_s [K], both strictly increasing) from matched pairs [P, 2]."""
    from sklearn.isotonic import IsotonicRegression

    s_on, p_on = score.onsets[pairs[:, 0]], perf.onsets[pairs[:, 1]]
    onsets, inverse = np.unique(s_on, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(onsets)))
    # The median performed onset of a chord ignores a rolled or mis-matched note.
    median = np.array([np.median(g) for g in np.split(p_on[order], starts[1:])])
    weight = np.bincount(inverse, minlength=len(onsets)).astype(float)
    fit = IsotonicRegression(increasing=True).fit(onsets, median, sample_weight=weight).predict(onsets)
    keep = np.abs(median - fit) <= reject
    if keep.sum() >= 2:
        onsets, median, weight = onsets[keep], median[keep], weight[keep]
        fit = IsotonicRegression(increasing=True).fit(onsets, median, sample_weight=weight).predict(onsets)
    # Isotonic fits have flat steps; one anchor per step (at its weighted mean score time) keeps the
    # map invertible.
    levels, step = np.unique(fit, return_inverse=True)
    score_s = np.bincount(step, weights=onsets * weight) / np.bincount(step, weights=weight)
    return score_s, levels


def align(score: Performance, perf: Performance) -> Alignment:
    """Align a performance to its score (both Performances; score times in score-MIDI seconds) → Alignment."""
    if len(score.notes) < 2 or len(perf.notes) < 2:
        raise InputError("alignment needs at least two notes on each side", perf.path or score.path)
    xp, fp, fps, cost = coarse_map(score, perf)
    pairs = np.zeros((0, 2), dtype=np.int64)
    for window, reject in REFINE_PASSES:
        found = match_notes(score, perf, _interp_extrap(score.onsets, *_strict(xp, fp)), window)
        if len(found) < 2:
            break  # keep the previous map: too little agreement to refine it
        sx, sy = fit_anchors(score, perf, found, reject)
        if len(sx) < 2:
            break
        xp, fp, pairs = sx, sy, found
    xp, fp = _strict(xp, fp)
    return Alignment(
        map=TimeMap(xp, fp),
        pairs=pairs,
        perf_match_rate=len(pairs) / len(perf.notes),
        score_match_rate=len(pairs) / len(score.notes),
        dtw_cost=cost,
        dtw_fps=fps,
    )


def _strict(xp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop anchors until xp [K] and fp [K] are both strictly increasing (the coarse path has flat runs)."""
    while len(xp) >= 2 and ((np.diff(xp) <= 0).any() or (np.diff(fp) <= 0).any()):
        keep = np.ones(len(xp), dtype=bool)
        keep[1:] = (np.diff(xp) > 0) & (np.diff(fp) > 0)
        xp, fp = xp[keep], fp[keep]
    if len(xp) < 2:
        raise InputError("could not align: the performance shares too few notes with the score")
    return xp, fp


def linear_map(score: Performance, perf: Performance) -> TimeMap:
    """Baseline map: first and last onsets matched, constant tempo in between."""
    return TimeMap(np.array([score.onsets.min(), score.onsets.max()]), np.array([perf.onsets.min(), perf.onsets.max()]))


def measure_accuracy(pred_downbeats: np.ndarray, true_downbeats: np.ndarray) -> float:
    """Share of annotated downbeats [M] whose nearest predicted downbeat [M] is the same measure's."""
    nearest = np.argmin(np.abs(pred_downbeats[None, :] - true_downbeats[:, None]), axis=1)
    return float(np.mean(nearest == np.arange(len(true_downbeats))))


@dataclass
class BeatCheck:
    """One performance's predicted and annotated beat times [B] (s), downbeat [B] and on-a-score-onset [B] masks."""

    pred: np.ndarray
    true: np.ndarray
    downbeat: np.ndarray
    on_onset: np.ndarray


def beat_metrics(
    pred: np.ndarray, true: np.ndarray, downbeat: np.ndarray, on_onset: np.ndarray | None = None
) -> dict[str, Any]:
    """Error figures of predicted beat times [B] against annotated ones [B] (s); downbeat, on_onset [B] bool."""
    err_ms = np.abs(pred - true) * 1000.0
    out: dict[str, Any] = {
        "n_beats": len(err_ms),
        "median_abs_error_ms": float(np.median(err_ms)),
        "mean_abs_error_ms": float(np.mean(err_ms)),
        "p90_abs_error_ms": float(np.percentile(err_ms, 90)),
    }
    for tol in BEAT_TOLERANCES_MS:
        out[f"within_{tol}ms"] = float(np.mean(err_ms <= tol))
    if on_onset is not None:
        # Beats with no score note of their own are placed by interpolating between anchors: the
        # part of the check that does not reduce to finding the right performed note.
        between = err_ms[~on_onset]
        out["n_beats_between_onsets"] = len(between)
        out["median_abs_error_between_onsets_ms"] = float(np.median(between)) if len(between) else None
        out["mean_abs_error_between_onsets_ms"] = float(np.mean(between)) if len(between) else None
    out["n_downbeats"] = int(downbeat.sum())
    out["measure_accuracy"] = measure_accuracy(pred[downbeat], true[downbeat]) if downbeat.any() else None
    return out


def _pooled(checks: list[BeatCheck]) -> dict[str, Any]:
    """Beat metrics pooled over performances: errors over all beats, measure accuracy over all downbeats."""
    out = beat_metrics(
        np.concatenate([c.pred for c in checks]),
        np.concatenate([c.true for c in checks]),
        np.zeros(sum(len(c.pred) for c in checks), dtype=bool),
        np.concatenate([c.on_onset for c in checks]),
    )
    # Measure accuracy compares downbeats within one performance (nearest predicted downbeat), so the
    # pooled value counts hits performance by performance.
    hits = sum(measure_accuracy(c.pred[c.downbeat], c.true[c.downbeat]) * c.downbeat.sum() for c in checks)
    n_down = int(sum(c.downbeat.sum() for c in checks))
    out["n_downbeats"] = n_down
    out["measure_accuracy"] = float(hits / n_down) if n_down else None
    return out


def check_performance(
    score: Performance,
    score_beats: np.ndarray,
    perf_path: Path,
    annotations: Path,
    downbeat: np.ndarray,
    aligner: Callable[[Performance, Performance], Alignment] | None = None,
) -> dict[str, Any]:
    """Align one performance (with `aligner`, default `align`) and compare its predicted beats with the
    annotations: {metrics, check, baseline}."""
    from pianoeval.data.asap import load_beat_annotations
    from pianoeval.data.midi import load_performance

    perf = load_performance(perf_path)
    true, _ = load_beat_annotations(annotations)
    if len(true) != len(score_beats):
        raise InputError(
            f"{len(true)} annotated beats but the score has {len(score_beats)} (repeats played differently); "
            "beats cannot be paired one to one",
            annotations,
        )
    start = time.perf_counter()
    result = (aligner or align)(score, perf)
    wall = time.perf_counter() - start
    onsets = np.unique(score.onsets)
    after = np.clip(np.searchsorted(onsets, score_beats), 1, len(onsets) - 1)
    gap = np.minimum(np.abs(onsets[after - 1] - score_beats), np.abs(onsets[after] - score_beats))
    on_onset = gap <= ON_ONSET_S
    check = BeatCheck(result.beat_times(score_beats), true, downbeat, on_onset)
    baseline = BeatCheck(linear_map(score, perf).score_to_perf(score_beats), true, downbeat, on_onset)
    metrics = beat_metrics(check.pred, true, downbeat, on_onset)
    metrics.update(
        perf_match_rate=result.perf_match_rate,
        score_match_rate=result.score_match_rate,
        dtw_cost=result.dtw_cost,
        dtw_fps=result.dtw_fps,
        n_notes=len(perf.notes),
        wall_s=wall,
    )
    return {"metrics": metrics, "check": check, "baseline": baseline}


def run_align_check(asap_root: Path, out: Path) -> dict[str, Any]:
    """Align every ASAP performance under `asap_root` to its score; write the beat-error report (JSON + PNG)."""
    from pianoeval.data.asap import load_asap, load_beat_annotations
    from pianoeval.data.midi import load_performance

    start = time.perf_counter()
    rows = load_asap(asap_root)
    per_piece: dict[str, list[dict[str, Any]]] = {}
    excluded: list[dict[str, str]] = []
    report_pieces: dict[str, Any] = {}
    for piece, group in rows.groupby("piece_id", sort=True):
        score_path = group["score_midi_path"].iloc[0]
        if not isinstance(score_path, str):
            excluded.extend({"performance": p, "reason": "piece has no score MIDI"} for p in group["midi_path"])
            continue
        try:
            score = load_performance(score_path)
            score_beats, labels = load_beat_annotations(Path(score_path).parent / SCORE_ANNOTATIONS)
        except InputError as exc:  # one broken piece should not hide the others' results
            excluded.extend({"performance": p, "reason": str(exc)} for p in group["midi_path"])
            log.warning("excluded %s", exc)
            continue
        downbeat = np.array([lab.split(",")[0] == "db" for lab in labels])
        entries: dict[str, dict[str, Any]] = {}
        for perf_path in group["midi_path"]:
            perf_path = Path(perf_path)
            try:
                entry = check_performance(
                    score, score_beats, perf_path, perf_path.with_name(f"{perf_path.stem}_annotations.txt"), downbeat
                )
            except InputError as exc:
                excluded.append({"performance": str(perf_path), "reason": str(exc)})
                log.warning("excluded %s", exc)
                continue
            entries[perf_path.stem] = entry
            m = entry["metrics"]
            log.info(
                "%s/%s: median %.1f ms, mean %.1f ms, measures %.3f",
                piece,
                perf_path.stem,
                m["median_abs_error_ms"],
                m["mean_abs_error_ms"],
                float("nan") if m["measure_accuracy"] is None else m["measure_accuracy"],
            )
        if not entries:
            continue
        per_piece[piece] = list(entries.values())
        report_pieces[piece] = {
            **_pooled([e["check"] for e in per_piece[piece]]),
            "n_performances": len(entries),
            "baseline_linear": _pooled([e["baseline"] for e in per_piece[piece]]),
            "performances": {name: e["metrics"] for name, e in entries.items()},
        }
    if not per_piece:
        raise InputError("no ASAP performance could be evaluated (see the log for why)", asap_root)
    everything = [e for entries in per_piece.values() for e in entries]
    report = {
        "asap_root": str(asap_root),
        "method": {
            "features": "88-key onset features, decay " + ", ".join(f"{w:g}" for w in ONSET_DECAY),
            "max_dtw_cells": MAX_DTW_CELLS,
            "max_dtw_fps": MAX_DTW_FPS,
            "refine_passes_window_reject_s": [list(p) for p in REFINE_PASSES],
        },
        "overall": {
            **_pooled([e["check"] for e in everything]),
            "n_performances": len(everything),
            "n_pieces": len(per_piece),
            "median_of_performance_medians_ms": float(
                np.median([e["metrics"]["median_abs_error_ms"] for e in everything])
            ),
            "baseline_linear": _pooled([e["baseline"] for e in everything]),
        },
        "pieces": report_pieces,
        "excluded": excluded,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    plot_errors(per_piece, out.with_suffix(".png"))
    write_json(report, out)  # last: its presence means the check completed
    return report


def plot_errors(per_piece: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """CDF of absolute beat errors per piece (and the linear baseline) + signed error histogram (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def errors_ms(entries: list[dict[str, Any]], key: str = "check") -> np.ndarray:
        return np.concatenate([(e[key].pred - e[key].true) * 1000.0 for e in entries])

    fig, (ax_cdf, ax_hist) = plt.subplots(1, 2, figsize=(13, 5))
    floor = 1.0  # errors below 1 ms are drawn at 1 ms (log axis)
    for k, (piece, entries) in enumerate(per_piece.items()):
        err = np.sort(np.maximum(np.abs(errors_ms(entries)), floor))
        ax_cdf.plot(err, np.arange(1, len(err) + 1) / len(err), color=f"C{k % 10}", lw=1, label=piece)
    everything = [e for entries in per_piece.values() for e in entries]
    for key, style, label in (("check", "-", "all pieces"), ("baseline", "--", "linear baseline (all)")):
        err = np.sort(np.maximum(np.abs(errors_ms(everything, key)), floor))
        ax_cdf.plot(err, np.arange(1, len(err) + 1) / len(err), "k" + style, lw=2, label=label)
    for tol in BEAT_TOLERANCES_MS:
        ax_cdf.axvline(tol, color="0.7", lw=0.8)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("|predicted - annotated beat time| (ms, < 1 ms drawn at 1)")
    ax_cdf.set_ylabel("share of beats")
    ax_cdf.set_title("Cumulative beat error")
    ax_cdf.legend(fontsize=7, loc="center right")
    signed = np.clip(errors_ms(everything), -500, 500)
    ax_hist.hist(signed, bins=np.linspace(-500, 500, 101), color="C0")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("predicted - annotated (ms, clipped to ±500)")
    ax_hist.set_ylabel("beats")
    ax_hist.set_title(f"Signed beat error, {len(signed)} beats of {len(everything)} performances")
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
