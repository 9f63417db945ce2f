"""Note graphs (S2): one node per note, typed edges for time, chords, overlap and voices.

Nodes are the notes of the performance in onset-then-pitch order. A "chord" (onset group) is a run of
onsets each within CHORD_WINDOW_S of the previous one. Edge types (every edge is stored in both
directions, with the same type):
- next: every note of a chord to every note of the next chord;
- onset: every pair of notes of one chord;
- sustain: a note to each earlier note (of another chord) still sounding at its onset, where a note
  held by the sustain pedal sounds until the pedal is released; each note keeps only its
  MAX_SUSTAIN_EDGES most recent such partners, so dense pedalled passages stay small;
- voice: consecutive notes of one estimated voice (see `estimate_voices`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from pianoeval.core.constants import PEDAL_DOWN_THRESHOLD
from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, pedal_down_mask, pedal_intervals
from pianoeval.symbolic.features import PITCH_LOW, PITCH_SPAN, chord_starts, log_time

NODE_FEATURES: tuple[str, ...] = (
    "pitch",  # (p - 21) / 87
    "velocity",  # v / 127
    "onset",  # (onset - first onset) / (last onset - first onset): position in the segment, [0, 1]
    "log_duration",  # duration on the log time scale of features.log_time, [0, 1]
    "pedal_at_onset",  # 1 if the sustain pedal is down (CC64 >= 64) at the onset
    "ioi",  # interval from the previous chord onset to this note's chord onset, log-scaled; 0 first
    "voice_top",  # one-hot voice estimate: melody (highest line)
    "voice_inner",
    "voice_bass",
    "score_matched",  # 1 if the note was matched to a score note (0 without a score)
    "score_onset_dev",  # onset - linearly time-scaled score onset, seconds, clipped to +-2
    "score_duration_ratio",  # log2(duration / time-scaled score duration), clipped to +-3
    "score_velocity_dev",  # (velocity - score velocity) / 127
)
EDGE_TYPES: tuple[str, ...] = ("next", "onset", "sustain", "voice")
N_EDGE_TYPES: int = len(EDGE_TYPES)
# Voice ids returned by estimate_voices (columns voice_top + id in NODE_FEATURES).
VOICE_TOP, VOICE_INNER, VOICE_BASS = 0, 1, 2
# Each note links by a sustain edge to at most this many earlier sounding notes (the most recent).
MAX_SUSTAIN_EDGES: int = 8
# ... found among this many preceding notes (bounds the work at N * lookback).
SUSTAIN_LOOKBACK: int = 128
# Score alignment: a performance note may match one of this many next unmatched score notes of its pitch.
MATCH_LOOKAHEAD: int = 3


def chord_groups(onsets: np.ndarray) -> list[np.ndarray]:
    """Note indices of each chord (onset group), in time order, for sorted onsets [N]."""
    ids = chord_starts(onsets)
    bounds = np.flatnonzero(np.r_[True, np.diff(ids) > 0, True])
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]


def estimate_voices(notes: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Skyline voice per note [N]: VOICE_TOP, VOICE_INNER or VOICE_BASS.

    In a chord the highest note is the top voice, the lowest the bass and the rest inner. A lone note
    joins whichever of the last top and bass pitches is nearer (top on a tie); until both are known,
    it is top from middle C (60) up and bass below.
    """
    pitches = notes[:, 2]
    voice = np.full(len(notes), VOICE_INNER, dtype=np.int64)
    last_top: float | None = None
    last_bass: float | None = None
    for group in groups:
        p = pitches[group]
        if len(group) > 1:
            voice[group[np.argmax(p)]], voice[group[np.argmin(p)]] = VOICE_TOP, VOICE_BASS
            last_top, last_bass = float(p.max()), float(p.min())
            continue
        pitch = float(p[0])
        if last_top is None or last_bass is None:
            is_top = pitch >= 60.0
        else:
            is_top = abs(pitch - last_top) <= abs(pitch - last_bass)
        voice[group[0]] = VOICE_TOP if is_top else VOICE_BASS
        if is_top:
            last_top = pitch
        else:
            last_bass = pitch
    return voice


def sounding_until(perf: Performance) -> np.ndarray:
    """Time each note [N] stops sounding: its offset, or the pedal release if the pedal holds it."""
    offsets = perf.notes[:, 1].copy()
    intervals = pedal_intervals(perf, PEDAL_DOWN_THRESHOLD)
    if len(intervals):
        k = np.searchsorted(intervals[:, 0], offsets, side="right") - 1
        held = (k >= 0) & (offsets < intervals[np.maximum(k, 0), 1])
        offsets = np.where(held, np.maximum(offsets, intervals[np.maximum(k, 0), 1]), offsets)
    return offsets


def align_to_score(perf: Performance, score: Performance) -> tuple[np.ndarray, float, float, float]:
    """Greedy pitch + order match: score note index per performance note [N] (-1 if none), and the
    linear time map (scale, perf_start, score_start) from score onsets to performance onsets."""
    p_on, s_on = perf.notes[:, 0], score.notes[:, 0]
    p0, s0 = float(p_on.min()), float(s_on.min())
    span_s = float(s_on.max()) - s0
    span_p = float(p_on.max()) - p0
    scale = span_p / span_s if span_s > 1e-6 and span_p > 1e-6 else 1.0
    mapped = p0 + (s_on - s0) * scale
    match = np.full(len(p_on), -1, dtype=np.int64)
    for pitch in np.unique(perf.notes[:, 2]):
        perf_idx = np.flatnonzero(perf.notes[:, 2] == pitch)
        score_idx = np.flatnonzero(score.notes[:, 2] == pitch)
        k = 0
        for i in perf_idx:
            cands = score_idx[k : k + MATCH_LOOKAHEAD]
            if len(cands) == 0:
                break
            best = int(np.argmin(np.abs(mapped[cands] - p_on[i])))
            match[i] = cands[best]
            k += best + 1
    return match, scale, p0, s0


def _score_features(perf: Performance, score: Performance) -> np.ndarray:
    """[N, 4] score_matched, onset deviation, log2 duration ratio and velocity deviation per note."""
    match, scale, p0, s0 = align_to_score(perf, score)
    out = np.zeros((len(perf.notes), 4))
    ok = match >= 0
    if not ok.any():
        return out
    pn, sn = perf.notes[ok], score.notes[match[ok]]
    out[ok, 0] = 1.0
    out[ok, 1] = np.clip((pn[:, 0] - p0) - (sn[:, 0] - s0) * scale, -2.0, 2.0)
    perf_dur = np.maximum(pn[:, 1] - pn[:, 0], 1e-3)
    score_dur = np.maximum((sn[:, 1] - sn[:, 0]) * scale, 1e-3)
    out[ok, 2] = np.clip(np.log2(perf_dur / score_dur), -3.0, 3.0)
    out[ok, 3] = (pn[:, 3] - sn[:, 3]) / 127.0
    return out


def _pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All (a_i, b_j) pairs [2, |a| * |b|]."""
    return np.stack([np.repeat(a, len(b)), np.tile(b, len(a))])


def _note_edges(perf: Performance, groups: list[np.ndarray], voice: np.ndarray) -> dict[str, np.ndarray]:
    """One-directional edges [2, E_t] per edge type (before symmetrisation)."""
    n = len(perf.notes)
    empty = np.zeros((2, 0), dtype=np.int64)
    nxt = [_pairs(g, h) for g, h in itertools.pairwise(groups)]
    onset = [_pairs(g, g) for g in groups if len(g) > 1]
    onset = [e[:, e[0] < e[1]] for e in onset]

    # Sustain: for each note j, earlier notes i of another chord with sounding_until[i] > onset[j].
    group_id = np.empty(n, dtype=np.int64)
    for k, g in enumerate(groups):
        group_id[g] = k
    until = sounding_until(perf)
    onsets = perf.notes[:, 0]
    lookback = min(SUSTAIN_LOOKBACK, n - 1)
    sustain = empty
    if lookback > 0:
        j = np.arange(n)[:, None]
        i = j - np.arange(1, lookback + 1)[None, :]  # most recent first
        valid = i >= 0
        i_safe = np.maximum(i, 0)
        ok = valid & (group_id[i_safe] != group_id[j]) & (until[i_safe] > onsets[j])
        # Keep the first MAX_SUSTAIN_EDGES hits of each row (nearest in time).
        ok &= np.cumsum(ok, axis=1) <= MAX_SUSTAIN_EDGES
        rows, cols = np.nonzero(ok)
        sustain = np.stack([i[rows, cols], rows])

    # Voice: top and bass are single lines; an inner note links to the nearest-pitch inner note of
    # the next chord that has inner notes.
    voice_edges = []
    for v in (VOICE_TOP, VOICE_BASS):
        seq = np.flatnonzero(voice == v)
        if len(seq) > 1:
            voice_edges.append(np.stack([seq[:-1], seq[1:]]))
    inner_groups = [g[voice[g] == VOICE_INNER] for g in groups]
    inner_groups = [g for g in inner_groups if len(g)]
    pitches = perf.notes[:, 2]
    for g, h in itertools.pairwise(inner_groups):
        nearest = h[np.argmin(np.abs(pitches[h][None, :] - pitches[g][:, None]), axis=1)]
        voice_edges.append(np.stack([g, nearest]))

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=1).astype(np.int64) if parts else empty

    return {"next": cat(nxt), "onset": cat(onset), "sustain": sustain.astype(np.int64), "voice": cat(voice_edges)}


def node_features(perf: Performance, score: Performance | None = None) -> np.ndarray:
    """Node feature matrix [N, len(NODE_FEATURES)] float32 (score columns zero without a score)."""
    groups = chord_groups(perf.notes[:, 0])
    return _node_matrix(perf, score, groups, estimate_voices(perf.notes, groups))


def _node_matrix(
    perf: Performance, score: Performance | None, groups: list[np.ndarray], voice: np.ndarray
) -> np.ndarray:
    """Node features [N, F] given the chords and voices already computed for the graph."""
    notes = perf.notes
    onsets = notes[:, 0]
    x = np.zeros((len(notes), len(NODE_FEATURES)))
    col = {name: k for k, name in enumerate(NODE_FEATURES)}
    x[:, col["pitch"]] = (notes[:, 2] - PITCH_LOW) / PITCH_SPAN
    x[:, col["velocity"]] = notes[:, 3] / 127.0
    span = float(onsets.max() - onsets.min())
    x[:, col["onset"]] = (onsets - onsets.min()) / span if span > 0 else 0.0
    x[:, col["log_duration"]] = log_time(notes[:, 1] - onsets)
    x[:, col["pedal_at_onset"]] = pedal_down_mask(perf, onsets, PEDAL_DOWN_THRESHOLD)
    chord_onset = np.array([onsets[g[0]] for g in groups])
    ioi = np.r_[0.0, np.diff(chord_onset)]
    for g, value in zip(groups, ioi, strict=True):
        x[g, col["ioi"]] = log_time(np.array(value))
    x[np.arange(len(notes)), col["voice_top"] + voice] = 1.0
    if score is not None and len(score.notes):
        x[:, col["score_matched"] :] = _score_features(perf, score)
    return np.nan_to_num(x).astype(np.float32)


@dataclass
class NoteGraph:
    """One note graph, or several batched into one (`batch`: graph id per node), as plain tensors.

    `x [N, F]`, `edge_index [2, E]` (source, target), `edge_attr [E, 4]` one-hot edge types,
    `edge_type [E]`. S2 (`symbolic/networks.NoteGAT`) and its link-prediction pretraining read these
    fields, as they would a torch_geometric `Batch`; keeping them plain spares `pianoeval score` the
    library's 3-second import.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    edge_type: torch.Tensor
    num_nodes: int
    batch: torch.Tensor | None = None
    num_graphs: int = 1

    @classmethod
    def collate(cls, graphs: list[NoteGraph]) -> NoteGraph:
        """Graphs side by side: nodes concatenated, edges renumbered, `batch` the graph of each node."""
        sizes = torch.tensor([g.num_nodes for g in graphs])
        offsets = torch.cumsum(sizes, 0) - sizes
        return cls(
            x=torch.cat([g.x for g in graphs]),
            edge_index=torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets, strict=True)], dim=1),
            edge_attr=torch.cat([g.edge_attr for g in graphs]),
            edge_type=torch.cat([g.edge_type for g in graphs]),
            num_nodes=int(sizes.sum()),
            batch=torch.repeat_interleave(torch.arange(len(graphs)), sizes),
            num_graphs=len(graphs),
        )

    def to(self, device: torch.device | str) -> NoteGraph:
        """The same graph with every tensor on `device`."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return NoteGraph(**moved)


def build_note_graph(perf: Performance, score: Performance | None = None) -> NoteGraph:
    """Performance (+ optional score) -> NoteGraph(x [N, F], edge_index [2, E], edge_attr [E, 4], edge_type [E])."""
    if len(perf.notes) == 0:
        raise InputError("performance has no notes to build a graph from", perf.path)
    groups = chord_groups(perf.notes[:, 0])
    voice = estimate_voices(perf.notes, groups)
    x = _node_matrix(perf, score, groups, voice)
    edges = _note_edges(perf, groups, voice)
    index_parts, type_parts = [], []
    for t, name in enumerate(EDGE_TYPES):
        e = edges[name]
        both = np.unique(np.concatenate([e, e[::-1]], axis=1), axis=1) if e.shape[1] else e
        index_parts.append(both)
        type_parts.append(np.full(both.shape[1], t, dtype=np.int64))
    edge_index = torch.from_numpy(np.concatenate(index_parts, axis=1))
    edge_type = torch.from_numpy(np.concatenate(type_parts))
    edge_attr = torch.nn.functional.one_hot(edge_type, N_EDGE_TYPES).to(torch.float32)
    return NoteGraph(
        x=torch.from_numpy(x), edge_index=edge_index, edge_attr=edge_attr, edge_type=edge_type, num_nodes=len(x)
    )
