"""Tests for the generated demo corpus: files, manifest rows, determinism and learnable labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from pianoeval.core.constants import DIMENSIONS, LABEL_MAX, LABEL_MIN
from pianoeval.data.demo import (
    DEVIATION_RANGES,
    DEVIATIONS,
    LABEL_WEIGHTS,
    TEXTURES,
    demo_labels,
    generate_demo_corpus,
    generate_piece,
    perform,
    weight_matrix,
    weights_markdown,
)
from pianoeval.data.manifest import MANIFEST_COLUMNS, label_matrix, read_manifest, write_manifest
from pianoeval.data.midi import load_performance, pedal_down_mask

DOC = Path(__file__).resolve().parents[1] / "docs" / "demo_corpus.md"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """The default-size corpus (6 pieces x 10 performances), generated once for the module."""
    out = tmp_path_factory.mktemp("demo")
    return out, generate_demo_corpus(out)


def test_files_and_manifest_columns(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, df = corpus
    assert len(df) == 60 and df["segment_id"].is_unique
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert sorted(c for c in df.columns if c.startswith("dev_")) == sorted(f"dev_{n}" for n in DEVIATIONS)
    assert set(df["tier"]) == {"T1"} and set(df["source"]) == {"demo"}
    assert df["audio_path"].isna().all() and df["label_std"].isna().all() and df["placement"].isna().all()
    assert (df["segment_group"] == df["piece_id"]).all()
    assert df.groupby("piece_id")["performer"].nunique().eq(10).all()
    assert len(list((out / "score").glob("*.mid"))) == 6
    assert len(list((out / "performance").glob("*.mid"))) == 60
    for path in (*df["midi_path"], *df["score_midi_path"]):
        assert Path(path).is_absolute() and Path(path).is_file()
    labels = label_matrix(df)
    assert labels.shape == (60, 19)
    assert labels.min() >= LABEL_MIN - 1e-6 and labels.max() <= LABEL_MAX + 1e-6
    # The returned frame is a valid manifest (extra dev_ columns are ignored on write).
    back = read_manifest(write_manifest(df, tmp_path / "m.parquet"))
    np.testing.assert_allclose(label_matrix(back), labels)
    dev_csv = pd.read_csv(out / "deviations.csv")
    np.testing.assert_allclose(dev_csv["dev_jitter_ms"], df["dev_jitter_ms"], rtol=1e-5)


def test_deterministic_for_a_seed(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, df = corpus
    again = generate_demo_corpus(tmp_path / "again")
    np.testing.assert_array_equal(label_matrix(again), label_matrix(df))
    for a, b in zip(df["midi_path"], again["midi_path"], strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    other = generate_demo_corpus(tmp_path / "other", n_pieces=2, n_performances=2, seed=7)
    assert not np.allclose(label_matrix(other), label_matrix(df)[[0, 1, 10, 11]])


def test_pieces_vary_in_texture_and_difficulty(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, df = corpus
    pieces = [generate_piece(i) for i in range(6)]
    assert {p.texture for p in pieces} == set(TEXTURES)
    for p in pieces:
        assert 4 <= p.n_bars <= 8
        score = load_performance(df.loc[df["piece_id"] == p.piece_id, "score_midi_path"].iloc[0])
        assert score.duration == pytest.approx(8.0, abs=0.6)
    difficulty = df.groupby("piece_id")["difficulty"].first()
    assert difficulty.max() - difficulty.min() > 3.0
    # Difficulty follows density: the arpeggio piece is harder than the chorale piece.
    by_texture = {p.texture: difficulty[p.piece_id] for p in pieces}
    assert by_texture["arpeggio"] > by_texture["chorale"]


def test_deviations_are_audible_in_the_midi(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, df = corpus
    perfs = [load_performance(p) for p in df["midi_path"]]
    mean_velocity = np.array([p.notes[:, 3].mean() for p in perfs])
    pedal_fraction = np.array([pedal_down_mask(p, np.linspace(0, p.duration, 200)).mean() for p in perfs])
    length = np.array([p.duration for p in perfs])
    assert np.corrcoef(mean_velocity, df["dev_velocity_mean"])[0, 1] > 0.9
    assert np.corrcoef(pedal_fraction, df["dev_pedal_amount"])[0, 1] > 0.6
    # Faster tempo -> shorter performance, within each piece.
    for _, idx in df.groupby("piece_id").groups.items():
        assert np.corrcoef(length[idx], df.loc[idx, "dev_tempo_factor"])[0, 1] < -0.6


def test_perform_extremes() -> None:
    piece = generate_piece(2)
    base = {n: float(np.mean(r)) for n, r in DEVIATION_RANGES.items()}
    rng = np.random.default_rng
    clean = perform(piece, {**base, "jitter_ms": 0.0, "wrong_note_rate": 0.0, "pedal_amount": 0.0}, rng(0))
    assert len(clean.pedal) == 0
    assert {n.pitch for n in piece.notes} >= set(clean.pitches.tolist())
    staccato = perform(piece, {**base, "articulation": 0.35}, rng(0))
    legato = perform(piece, {**base, "articulation": 1.25}, rng(0))
    ratio = np.median(legato.notes[:, 1] - legato.notes[:, 0]) / np.median(staccato.notes[:, 1] - staccato.notes[:, 0])
    assert ratio == pytest.approx(1.25 / 0.35, rel=0.2)
    wrong = perform(piece, {**base, "jitter_ms": 0.0, "wrong_note_rate": 0.06, "pedal_amount": 0.0}, rng(0))
    # Same random draws up to the wrong notes, so onsets match; count notes whose (onset, pitch) changed.
    played = Counter(zip(wrong.onsets.round(6), wrong.pitches, strict=True))
    written = Counter(zip(clean.onsets.round(6), clean.pitches, strict=True))
    assert 0 < sum((played - written).values()) / len(piece.notes) < 0.15


def test_labels_learnable_from_deviations_across_pieces(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, df = corpus
    x = df[[f"dev_{n}" for n in DEVIATIONS]].to_numpy()
    y = label_matrix(df).astype(np.float64)
    held_out = df["piece_id"].isin(["piece04", "piece05"]).to_numpy()

    def held_out_r2(targets: np.ndarray) -> float:
        scaler = StandardScaler().fit(x[~held_out])
        model = Ridge(alpha=1.0).fit(scaler.transform(x[~held_out]), targets[~held_out])
        return r2_score(targets[held_out], model.predict(scaler.transform(x[held_out])))

    assert held_out_r2(y) > 0.8
    shuffled = y[np.random.default_rng(0).permutation(len(y))]
    assert held_out_r2(shuffled) < 0.1
    # Performances of one piece differ: within-piece label std above 0.05 for most dimensions.
    within = pd.DataFrame(y).groupby(df["piece_id"].to_numpy()).std().mean()
    assert (within > 0.05).sum() >= 17


def test_label_function_slopes() -> None:
    # Every dimension depends on at least one deviation, and named examples have the stated sign.
    w = weight_matrix()
    assert w.shape == (19, len(DEVIATIONS)) and (np.abs(w).max(axis=1) >= 1.0).all()
    mid = pd.DataFrame([{n: float(np.mean(r)) for n, r in DEVIATION_RANGES.items()}])

    def slope(dim: str, dev: str) -> float:
        lo, hi = mid.copy(), mid.copy()
        lo[dev], hi[dev] = DEVIATION_RANGES[dev]
        j = DIMENSIONS.index(dim)
        return float(demo_labels(hi)[0, j] - demo_labels(lo)[0, j])

    assert slope("Timing_Stable_Unstable", "jitter_ms") > 0.3
    assert slope("Articulation_Short_Long", "articulation") > 0.3
    assert slope("Pedal_Sparse/dry_Saturated/wet", "pedal_amount") > 0.3
    assert slope("Pedal_Clean_Blurred", "pedal_blur") > 0.3
    assert slope("Timbre_Soft_Loud", "velocity_mean") > 0.3
    assert slope("Dynamic_Little_dynamic_range_Large_dynamic_range", "velocity_range") > 0.3
    assert slope("Music_Making_Fast_paced_Slow_paced", "tempo_factor") < -0.3
    assert slope("Interpretation_Unsatisfactory/doubtful_Convincing", "wrong_note_rate") < -0.3
    # Noise-free labels at the centre of every range are the midpoint of [1/7, 1].
    np.testing.assert_allclose(demo_labels(mid), (LABEL_MIN + LABEL_MAX) / 2, atol=1e-6)


def test_doc_prints_the_weight_table() -> None:
    assert set(LABEL_WEIGHTS) == set(DIMENSIONS)
    assert weights_markdown() in DOC.read_text()
