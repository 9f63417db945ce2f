"""Robustness validation's transcription path: the subset drawn, a degraded recording scored through
TransKun and a symbolic fold model, and the report entry comparing it with the ground-truth MIDI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pianoeval.audio.render import render_midi
from pianoeval.audio.transcription_check import note_scores
from pianoeval.core.config import validate_config
from pianoeval.core.constants import N_DIMS
from pianoeval.core.settings import BackboneSettings, FeaturesSettings, FitSettings
from pianoeval.data.midi import Performance, load_performance, write_performance
from pianoeval.evaluation.robustness import _transcribed_entry, conditions, group_subset, transcribed_symbolic
from pianoeval.networks.scorer import ScoreNetwork
from pianoeval.symbolic.featurize import kind_meta
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
def test_group_subset_keeps_within_group_pairs(groups: list[int], n: int, expected: list[int]) -> None:
    got = group_subset(np.array(groups), n)
    assert got.tolist() == expected
    if 0 < n < len(groups):  # a drawn subset: every chosen group can form a pair
        g = np.array(groups)[got]
        assert all((g == x).sum() >= 2 for x in np.unique(g))


def test_transcribed_symbolic_scores_what_transkun_hears(tmp_path: Path) -> None:
    """A rendered 4 s melody, degraded by the 'all' chain, is transcribed and scored by an s3 network:
    the transcription finds the notes, and the scores are the network's on that transcription."""
    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.evaluation.robustness import degrade
    from pianoeval.symbolic.featurize import featurize_file

    onsets = np.arange(8) * 0.5
    pitches = np.array([60, 62, 64, 65, 67, 69, 71, 72])
    notes = np.stack([onsets, onsets + 0.4, pitches, np.full(8, 80)], axis=1).astype(float)
    midi = write_performance(Performance(notes, np.zeros((0, 2)), None), tmp_path / "melody.mid")
    wav = render_midi(midi, tmp_path / "melody.wav", sample_rate=24000)
    wave, sr = sf.read(str(wav), dtype="float32")
    chain = dict(conditions([20.0]))["all"]
    degraded = degrade(wave, chain, AudioAugmentor(seed=0, sample_rate=sr))

    config = validate_config({"symbolic": {"hidden": 32, "layers": 1, "heads": 2}, "features": {"frame_rate": 10}})
    features = FeaturesSettings.from_config(config)
    torch.manual_seed(0)
    net = ScoreNetwork(build_network("s3", kind_meta("curves", features), FitSettings.from_config(config))).eval()
    out, perf = transcribed_symbolic(degraded, sr, net, "curves", features, None)
    assert note_scores(load_performance(midi).notes, perf.notes)["onset"]["f1"] >= 0.8
    assert out is not None and out["z"].shape == (net.encoder.hidden_size,) and out["scores"].shape == (N_DIMS,)
    assert ((out["scores"] > 0) & (out["scores"] < 1)).all()
    # The same scores as featurizing the transcription and running the network on it.
    again = write_performance(perf, tmp_path / "again.mid")
    with torch.no_grad():
        expected = net(multi_task_collate_fn([featurize_file("curves", str(again), features)]))[0]
    torch.testing.assert_close(out["scores"], expected)
    # Silence transcribes to nothing: no scores, not a crash.
    nothing, _ = transcribed_symbolic(np.zeros(sr * 3, dtype=np.float32), sr, net, "curves", features, None)
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


def test_audio_robustness_reports_every_condition_against_the_clean_scores(
    tmp_path: Path, one_fold: Callable[..., dict]
) -> None:
    """A logmel probe trained on synthetic recordings: the clean re-embedding reproduces its validation
    metrics exactly, and every condition gets a drop, a Pearson r and a verdict."""
    from pianoeval.audio.embed import CACHE_FRAME_RATE, embed_wave
    from pianoeval.core.io import read_json
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.manifest import MANIFEST_COLUMNS, label_matrix, write_manifest
    from pianoeval.steps.audio_robustness import run_audio_robustness
    from pianoeval.steps.train import run_train
    from pianoeval.training.registry import build_frozen_backbone

    sr = 24_000
    df = generate_demo_corpus(tmp_path / "demo", n_pieces=4, n_performances=4, seconds=2.0, seed=3)
    labels = label_matrix(df)
    t = np.arange(int(1.5 * sr)) / sr
    paths = []
    for i in range(len(df)):
        # Loudness and brightness follow the labels: something for the probe to hear.
        wave = sum(np.sin(2 * np.pi * 220.0 * h * t) / h ** (2 - labels[i, 0]) for h in (1, 2, 3, 4))
        wave = (0.2 + 0.4 * labels[i].mean()) * wave / np.abs(wave).max() * np.exp(-t)
        paths.append(str(tmp_path / f"seg{i:02d}.wav"))
        sf.write(paths[-1], wave.astype(np.float32), sr, subtype="FLOAT")
    df["audio_path"] = paths
    manifest = tmp_path / "manifest.parquet"
    write_manifest(df[list(MANIFEST_COLUMNS)], manifest)
    one_fold(df, tmp_path / "folds.json", n_train=2, n_dev=1)
    config = validate_config(
        {
            "seed": 1,
            "audio": {"models": ["probe"], "backbone": "logmel", "hidden": 16},
            "training": {"max_epochs": 2, "batch_size": 4, "patience": 5},
            "robustness": {"audio_per_fold": 0},
        }
    )
    backbone = build_frozen_backbone("logmel", BackboneSettings.from_config(config))
    items = {
        sid: {"audio_emb": embed_wave(backbone, sf.read(p, dtype="float32")[0], sr)}
        for sid, p in zip(df["segment_id"], paths, strict=True)
    }
    dim = int(next(iter(items.values()))["audio_emb"].shape[1])
    meta = {"backbone": "logmel", "dim": dim, "frame_rate": CACHE_FRAME_RATE, "sample_rate": backbone.sample_rate}
    store = {"kind": "audio", "meta": meta, "items": items}
    torch.save(store, tmp_path / "logmel.pt")
    results = tmp_path / "results"
    fold_dir = results / "train" / "audio" / "probe" / "fold_0"
    metrics = run_train(
        "audio", "probe", config, 0, manifest, tmp_path / "folds.json", tmp_path / "logmel.pt", fold_dir
    )
    report = run_audio_robustness("probe", config, manifest, tmp_path / "folds.json", results, tmp_path / "r.json")
    assert read_json(tmp_path / "r.json") == json.loads(json.dumps(report))
    assert report["n_segments"] == metrics["n_val"]
    assert report["clean"]["pairwise_acc"] == pytest.approx(metrics["pairwise_acc"], abs=1e-6)
    assert report["clean"]["r2"] == pytest.approx(metrics["r2"], abs=1e-5)
    assert set(report["conditions"]) == {name for name, _ in conditions([10.0, 20.0, 30.0])}
    for entry in report["conditions"].values():
        assert np.isfinite(entry["score_drop_pct"]) and -1.0 <= entry["pearson_r"] <= 1.0
        assert entry["passed"] == (entry["score_drop_pct"] <= report["veto_drop_pct"])
    assert report["worst_drop_pct"] == max(e["score_drop_pct"] for e in report["conditions"].values())
    # Degrading changes what the probe hears: some condition moves its scores.
    assert min(e["pearson_r"] for e in report["conditions"].values()) < 0.999
