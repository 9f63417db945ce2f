"""Robustness validation's transcription path: the subset drawn, a degraded recording scored through
TransKun and a symbolic fold model, and the report entry comparing it with the ground-truth MIDI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pianoeval.audio.render import render_midi
from pianoeval.audio.transcription_check import note_scores
from pianoeval.config import validate_config
from pianoeval.constants import N_DIMS
from pianoeval.data.midi import Performance, load_performance, write_performance
from pianoeval.inference import ScoringNetwork
from pianoeval.pipeline.featurize import kind_meta
from pianoeval.robustness import _transcribed_entry, conditions, transcribed_symbolic, transcription_subset
from pianoeval.training.registry import build_network


@pytest.mark.parametrize(
    ("groups", "n", "expected"),
    [
        ([0, 0, 0, 1, 1, 1], 4, [0, 1, 3, 4]),  # two per group: one pair in each
        ([0, 1, 0, 1, 2, 2], 3, [0, 2]),  # whole pairs only, never a lone member
        ([0, 0, 0, 1, 1, 1], 1, [0, 1]),  # at least one pair, even above n
        ([0, 0, 1], 0, [0, 1, 2]),  # 0 = all
        ([0, 0, 1], 5, [0, 1, 2]),  # fewer than asked: all
    ],
    ids=["spread", "whole-pairs", "one-pair-at-least", "zero-means-all", "fewer-than-n"],
)
def test_transcription_subset_keeps_within_group_pairs(groups: list[int], n: int, expected: list[int]) -> None:
    got = transcription_subset(np.array(groups), n)
    assert got.tolist() == expected
    if 0 < n < len(groups):  # a drawn subset: every chosen group can form a pair
        g = np.array(groups)[got]
        assert all((g == x).sum() >= 2 for x in np.unique(g))


def test_transcribed_symbolic_scores_what_transkun_hears(tmp_path: Path) -> None:
    """A rendered 4 s melody, degraded by the 'all' chain, is transcribed and scored by an s3 network:
    the transcription finds the notes, and the scores are the network's on that transcription."""
    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.pipeline.featurize import featurize_file
    from pianoeval.robustness import degrade

    onsets = np.arange(8) * 0.5
    pitches = np.array([60, 62, 64, 65, 67, 69, 71, 72])
    notes = np.stack([onsets, onsets + 0.4, pitches, np.full(8, 80)], axis=1).astype(float)
    midi = write_performance(Performance(notes, np.zeros((0, 2)), None), tmp_path / "melody.mid")
    wav = render_midi(midi, tmp_path / "melody.wav", sample_rate=24000)
    wave, sr = sf.read(str(wav), dtype="float32")
    chain = dict(conditions([20.0]))["all"]
    degraded = degrade(wave, chain, AudioAugmentor(seed=0, sample_rate=sr))

    config = validate_config({"symbolic": {"hidden": 32, "layers": 1, "heads": 2}, "features": {"frame_rate": 10}})
    torch.manual_seed(0)
    net = ScoringNetwork(build_network("s3", kind_meta("curves", config["features"]), config)).eval()
    out, perf = transcribed_symbolic(degraded, sr, net, "curves", config["features"], None)
    assert note_scores(load_performance(midi).notes, perf.notes)["onset"]["f1"] >= 0.8
    assert out is not None and out["z"].shape == (net.encoder.hidden_size,) and out["scores"].shape == (N_DIMS,)
    assert ((out["scores"] > 0) & (out["scores"] < 1)).all()
    # The same scores as featurizing the transcription and running the network on it.
    again = write_performance(perf, tmp_path / "again.mid")
    with torch.no_grad():
        expected = net(multi_task_collate_fn([featurize_file("curves", str(again), config["features"])]))[0]
    torch.testing.assert_close(out["scores"], expected)
    # Silence transcribes to nothing: no scores, not a crash.
    nothing, _ = transcribed_symbolic(np.zeros(sr * 3, dtype=np.float32), sr, net, "curves", config["features"], None)
    assert nothing is None


def test_transcribed_entry_measures_the_drop_against_the_ground_truth_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(0.3, 0.7, size=(12, N_DIMS))
    g = np.repeat(np.arange(3), 4)
    good = y + rng.normal(0, 0.01, y.shape)  # ranks nearly every pair right
    noisy = y + rng.normal(0, 0.2, y.shape)

    def parts(ref: np.ndarray, aug: np.ndarray) -> dict:
        return {
            "fusion": [aug], "symbolic": [aug], "fusion_ref": [ref], "symbolic_ref": [ref],
            "y": [y], "g": [g], "f1": [0.9, 0.7], "empty": [],
        }  # fmt: skip

    same = _transcribed_entry(parts(good, good), veto=15.0)
    assert same["fusion"]["score_drop_pct"] == pytest.approx(0.0) and same["fusion"]["pearson_r"] == pytest.approx(1.0)
    assert same["fusion"]["passed"] and same["note_f1_onset_mean"] == pytest.approx(0.8)
    worse = _transcribed_entry(parts(good, noisy), veto=15.0)
    assert worse["symbolic"]["score_drop_pct"] > 15.0 and not worse["symbolic"]["passed"]
    assert worse["symbolic"]["reference"]["pairwise_acc"] > worse["symbolic"]["pairwise_acc"]
    assert worse["n_segments"] == 12
