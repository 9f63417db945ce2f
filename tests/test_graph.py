"""Note graphs: hand-enumerated edges, one-hot edge types, symmetry, voices, score deviations, speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, load_performance
from pianoeval.symbolic.graph import (
    EDGE_TYPES,
    MAX_SUSTAIN_EDGES,
    NODE_FEATURES,
    VOICE_BASS,
    VOICE_INNER,
    VOICE_TOP,
    build_note_graph,
    chord_groups,
    estimate_voices,
)

COL = {name: i for i, name in enumerate(NODE_FEATURES)}


def edges_of(graph, kind: str) -> set[tuple[int, int]]:  # graph: torch_geometric Data
    """Directed (src, dst) pairs of one edge type."""
    sel = graph.edge_type == EDGE_TYPES.index(kind)
    return {(int(a), int(b)) for a, b in graph.edge_index[:, sel].t()}


def both(pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    return set(pairs) | {(b, a) for a, b in pairs}


def chord_then_note(chord_end: float = 0.9, pedal: list[list[float]] | None = None) -> Performance:
    """Notes 0-2: a C-major chord rolled over 20 ms; note 3: C5 at 1.0 s."""
    notes = [[0.0, chord_end, 60, 70], [0.01, chord_end, 64, 60], [0.02, chord_end, 67, 90], [1.0, 1.5, 72, 80]]
    return Performance(notes, pedal if pedal is not None else np.zeros((0, 2)))


def test_chord_and_next_note_edges_are_exact() -> None:
    graph = build_note_graph(chord_then_note())
    assert graph.num_nodes == 4 and graph.x.shape == (4, len(NODE_FEATURES))
    assert edges_of(graph, "onset") == both([(0, 1), (0, 2), (1, 2)])
    assert edges_of(graph, "next") == both([(0, 3), (1, 3), (2, 3)])
    assert edges_of(graph, "sustain") == set()
    # Skyline: 67 is the chord's top, 60 its bass; 72 continues the top line.
    assert edges_of(graph, "voice") == both([(2, 3)])
    assert graph.edge_index.shape == (2, 14)


@pytest.mark.parametrize(
    ("chord_end", "pedal"),
    [(1.2, None), (0.9, [[0.5, 127.0], [1.5, 0.0]])],
    ids=["overlap", "pedal"],
)
def test_sustain_edges_from_overlap_or_pedal(chord_end: float, pedal: list[list[float]] | None) -> None:
    graph = build_note_graph(chord_then_note(chord_end, pedal))
    assert edges_of(graph, "sustain") == both([(0, 3), (1, 3), (2, 3)])


def test_pedal_released_before_offset_gives_no_sustain() -> None:
    graph = build_note_graph(chord_then_note(0.9, [[0.0, 127.0], [0.5, 0.0]]))
    assert edges_of(graph, "sustain") == set()
    assert graph.x[:, COL["pedal_at_onset"]].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_edge_attr_is_one_hot_of_edge_type_and_edges_are_symmetric() -> None:
    graph = build_note_graph(chord_then_note(1.2, [[0.5, 127.0], [1.5, 0.0]]))
    assert graph.edge_attr.shape == (graph.edge_index.shape[1], len(EDGE_TYPES))
    assert torch.all(graph.edge_attr.sum(dim=1) == 1)
    assert torch.equal(graph.edge_attr.argmax(dim=1), graph.edge_type)
    triples = {(int(a), int(b), int(t)) for (a, b), t in zip(graph.edge_index.t(), graph.edge_type, strict=True)}
    assert triples == {(b, a, t) for a, b, t in triples}
    assert all(a != b for a, b, _ in triples)


def test_node_features_by_hand() -> None:
    x = build_note_graph(chord_then_note()).x
    assert x[:, COL["pitch"]].tolist() == pytest.approx([(p - 21) / 87 for p in (60, 64, 67, 72)])
    assert x[:, COL["velocity"]].tolist() == pytest.approx([70 / 127, 60 / 127, 90 / 127, 80 / 127])
    assert x[:, COL["onset"]].tolist() == pytest.approx([0.0, 0.01, 0.02, 1.0])
    assert x[:3, COL["ioi"]].tolist() == [0.0, 0.0, 0.0] and x[3, COL["ioi"]] > 0.5
    voices = x[:, COL["voice_top"] : COL["voice_bass"] + 1]
    assert voices.tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 0, 0]]
    assert torch.all(x[:, COL["score_matched"] :] == 0)


def test_voice_estimate_for_lone_notes() -> None:
    # Two-note chord (C3, C5), then lone notes near the bass and near the top.
    notes = np.array([[0, 1, 48, 80], [0, 1, 72, 80], [1, 2, 50, 80], [2, 3, 70, 80], [3, 4, 60, 80]], float)
    voices = estimate_voices(notes, chord_groups(notes[:, 0]))
    # 60 is 10 from the last bass (50) and 10 from the last top (70): a tie goes to the top.
    assert voices.tolist() == [VOICE_BASS, VOICE_TOP, VOICE_BASS, VOICE_TOP, VOICE_TOP]
    chord = np.array([[0, 1, 48, 80], [0, 1, 60, 80], [0, 1, 64, 80], [0, 1, 72, 80]], float)
    assert estimate_voices(chord, chord_groups(chord[:, 0])).tolist() == [
        VOICE_BASS,
        VOICE_INNER,
        VOICE_INNER,
        VOICE_TOP,
    ]


def test_score_deviation_is_zero_when_score_is_the_performance() -> None:
    perf = chord_then_note(1.2, [[0.5, 127.0], [1.5, 0.0]])
    x = build_note_graph(perf, score=perf).x
    assert torch.all(x[:, COL["score_matched"]] == 1)
    assert torch.all(x[:, COL["score_onset_dev"] :] == 0)
    np.testing.assert_array_equal(x[:, : COL["score_matched"]], build_note_graph(perf).x[:, : COL["score_matched"]])


def test_score_deviations_measure_the_changed_note() -> None:
    score = Performance([[float(k), k + 0.5, 60 + k, 64] for k in range(5)])
    perf_notes = score.notes.copy()
    perf_notes[2] = [2.1, 3.1, 62, 84]  # late by 0.1 s, twice as long, 20 louder
    x = build_note_graph(Performance(perf_notes), score=score).x
    assert torch.all(x[:, COL["score_matched"]] == 1)
    assert x[2, COL["score_onset_dev"]].item() == pytest.approx(0.1, abs=1e-6)
    assert x[2, COL["score_duration_ratio"]].item() == pytest.approx(1.0, abs=1e-6)
    assert x[2, COL["score_velocity_dev"]].item() == pytest.approx(20 / 127, abs=1e-6)
    others = [0, 1, 3, 4]
    assert torch.all(x[others, COL["score_onset_dev"] :].abs() < 1e-6)


def test_score_match_skips_a_missing_note() -> None:
    # The performer skips the score's second C4; the later C4 must match the later score note.
    score = Performance([[0, 0.4, 60, 64], [1, 1.4, 60, 64], [2, 2.4, 60, 64], [3, 3.4, 67, 64]])
    perf = Performance([[0, 0.4, 60, 64], [2, 2.4, 60, 64], [3, 3.4, 67, 64]])
    x = build_note_graph(perf, score=score).x
    assert x[:, COL["score_matched"]].tolist() == [1.0, 1.0, 1.0]
    assert torch.all(x[:, COL["score_onset_dev"]].abs() < 1e-6)


def test_sustain_edges_are_capped_per_note() -> None:
    # 40 single notes under one long pedal: every earlier note still sounds at each onset.
    notes = [[0.1 * k, 0.1 * k + 0.05, 40 + k, 80] for k in range(40)]
    graph = build_note_graph(Performance(notes, [[0.0, 127.0], [10.0, 0.0]]))
    sustain = edges_of(graph, "sustain")
    from_earlier = np.bincount([b for a, b in sustain if a < b], minlength=40)
    assert from_earlier.tolist() == [min(k, MAX_SUSTAIN_EDGES) for k in range(40)]
    # The kept partners are the most recent ones.
    assert {a for a, b in sustain if b == 30 and a < b} == set(range(22, 30))


def test_no_notes_raises() -> None:
    with pytest.raises(InputError, match="no notes"):
        build_note_graph(Performance(np.zeros((0, 4)), path="x.mid"))


def test_large_piece_builds_with_bounded_sustain_edges() -> None:
    # Speed is measured by the featurize rule's benchmark file (benchmarks/featurize/graphs.tsv), not
    # asserted here: a wall-clock limit fails on a loaded machine without any regression.
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 300, 2000))
    notes = np.stack(
        [onsets, onsets + rng.uniform(0.05, 2.0, 2000), rng.integers(21, 109, 2000), rng.integers(20, 120, 2000)], 1
    )
    perf = Performance(notes, [[0.0, 127.0], [300.0, 0.0]])
    graph = build_note_graph(perf, score=perf)
    assert graph.num_nodes == 2000
    n_sustain = int((graph.edge_type == EDGE_TYPES.index("sustain")).sum())
    assert 0 < n_sustain <= 2 * MAX_SUSTAIN_EDGES * 2000


def test_real_percepiano_file_builds_every_edge_type(shared_data: Path) -> None:
    path = shared_data / "percepiano/midi/performances/Schubert_D960_mv2_8bars_4_07.mid"
    perf = load_performance(path)
    graph = build_note_graph(perf)
    assert graph.num_nodes == len(perf.notes) == 219
    assert set(graph.edge_type.unique().tolist()) == set(range(len(EDGE_TYPES)))
    assert torch.isfinite(graph.x).all()
