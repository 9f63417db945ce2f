"""`pianoeval score` where it meets training: a symbolic model trained with transcription views reads a
recording's transcription as one (the `transcribed` flag), and the documented errors of a scoring run.

The results folder is built once by the pipeline's own functions: demo corpus → transcription views →
featurize (with the views' manifest, as the featurize rule reads it) → `run_train` on 2 folds →
`run_compare`. The views are made without TransKun, as a transcription differs from the ground-truth
MIDI (compressed velocities, no pedal, onsets a few ms off), to keep the fixture fast; the slow test
below transcribes a real rendering with TransKun.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.errors import InputError
from pianoeval.steps.score import TRANSCRIPTION_SUFFIX, run_score, score_midi

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3"
)
TRANSKUN_SLOW = "TransKun transcribes a few seconds of audio on CPU (about 10 s on an idle 2-core machine)"


def _as_transcribed(src: str, dst: Path, seed: int) -> str:
    """Write `src` as a transcription would give it: velocities compressed towards 64, no pedal,
    onsets jittered by a few ms. Returns the new path."""
    from pianoeval.data.midi import Performance, load_performance, write_performance

    perf = load_performance(src)
    notes = perf.notes.copy()
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0.0, 0.01, len(notes))
    notes[:, 0] = np.maximum(notes[:, 0] + jitter, 0.0)
    notes[:, 1] = np.maximum(notes[:, 1] + jitter, notes[:, 0] + 0.02)
    notes[:, 3] = np.round(64 + 0.3 * (notes[:, 3] - 64))
    return str(write_performance(Performance(notes, np.zeros((0, 2))), dst))


@pytest.fixture(scope="module")
def views_trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """results/ of s3 trained on 2 folds with `clean` transcription views, with its fusion/winner.json; 'midi' a
    corpus performance, 'fold_dir' fold 0's training folder."""
    from pianoeval.core.config import validate_config
    from pianoeval.core.io import write_json
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.folds import make_folds, write_folds
    from pianoeval.data.manifest import view_id, write_manifest
    from pianoeval.steps.compare import run_compare
    from pianoeval.steps.featurize import run_featurize
    from pianoeval.steps.train import run_train

    root = tmp_path_factory.mktemp("views_trained")
    config = validate_config(
        {
            "symbolic": {"hidden": 16, "layers": 1, "heads": 2},
            "training": {"max_epochs": 1, "batch_size": 4, "patience": 1},
            "folds": {"k": 2},
            "transcription": {"views": ["clean"]},
        }
    )
    df = generate_demo_corpus(root / "demo", n_pieces=4, n_performances=3, seconds=4.0, seed=1)
    manifest = write_manifest(df, root / "manifest.parquet")
    views = df.copy()
    views["midi_path"] = [_as_transcribed(p, root / "views" / f"{k}.mid", k) for k, p in enumerate(df["midi_path"])]
    views["segment_id"] = [view_id(s, "clean") for s in df["segment_id"]]
    views_manifest = write_manifest(views, root / "views.parquet")
    write_folds(make_folds(df, k=2, seed=1, dev_fraction=0.25), root / "folds.json")
    features = root / "curves.pt"
    run_featurize("curves", config, manifest, features, root / "cache", extra_manifests=[views_manifest])
    results = root / "results"
    metrics = []
    for fold in range(2):
        fold_dir = results / "train" / "symbolic" / "s3" / f"fold_{fold}"
        run_train("symbolic", "s3", config, fold, manifest, root / "folds.json", features, fold_dir)
        metrics.append(fold_dir / "metrics.json")
    predictions = [m.parent / "predictions.csv" for m in metrics]
    run_compare("symbolic", config, metrics, predictions, results / "compare" / "symbolic")
    write_json({"winner": "symbolic_only", "model": "s3"}, results / "fusion" / "winner.json")
    return {"midi": Path(df["midi_path"].iloc[0]), "fold_dir": metrics[0].parent, "results": results}


def _scores(result: dict) -> np.ndarray:
    """The 19 scores [19] of a run_score result."""
    return np.array([result["dimensions"][d]["score"] for d in DIMENSIONS])


def test_a_model_trained_on_transcriptions_reads_the_flag(views_trained: dict[str, Path]) -> None:
    """The views reached training (val_transcribed is scored, the network has its transcription
    branch), and the same MIDI scored as a transcription gets other scores than as ground truth."""
    from pianoeval.core.io import read_json

    metrics = read_json(views_trained["fold_dir"] / "metrics.json")
    assert metrics["val_transcribed"]["n"] > 0 and metrics["n_train_transcribed"] > 0
    results = views_trained["results"]
    as_midi = score_midi(views_trained["midi"], results)
    as_transcription = score_midi(views_trained["midi"], results, transcribed=True)
    assert as_midi["model"] == as_transcription["model"] == "s3" and as_midi["n_models"] == 2
    assert np.abs(as_midi["mean"] - as_transcription["mean"]).max() > 1e-4


@needs_fluidsynth
@pytest.mark.slow(reason=TRANSKUN_SLOW)
def test_a_recording_is_scored_as_a_transcription(
    views_trained: dict[str, Path], tmp_path: Path, tiny_midi: Callable[..., Path]
) -> None:
    """A rendered recording, through run_score: its scores are those of its transcription scored
    with the flag set, not those of the same MIDI scored as ground truth."""
    from pianoeval.audio.render import render_midi

    midi = tiny_midi("melody.mid", pitches=(60, 64, 67, 72, 69, 65), step_s=0.5)
    wav = render_midi(midi, tmp_path / "in" / "melody.wav")
    out = tmp_path / "out" / "melody.json"
    result = run_score(wav, None, views_trained["results"], out)
    assert result["input_kind"] == "audio" and result["transcription"]["n_notes"] > 0
    transcription = out.with_name("melody" + TRANSCRIPTION_SUFFIX)
    results = views_trained["results"]
    flagged = score_midi(transcription, results, transcribed=True)
    ground_truth = score_midi(transcription, results)
    np.testing.assert_allclose(_scores(result), flagged["mean"], rtol=1e-6)
    assert np.abs(_scores(result) - ground_truth["mean"]).max() > 1e-4


# -- the documented errors of a scoring run ----------------------------------------------------------


def test_a_winner_without_trained_folds_is_named(views_trained: dict[str, Path], tmp_path: Path) -> None:
    """The comparisons are there but the training folders are not: the error names the model."""
    results = tmp_path / "results"
    for part in ("compare", "fusion"):
        shutil.copytree(views_trained["results"] / part, results / part)
    with pytest.raises(InputError, match=r"no trained folds of symbolic/s3; run the pipeline first") as exc:
        run_score(views_trained["midi"], None, results, tmp_path / "out" / "score.json")
    assert exc.value.path == str(results / "train" / "symbolic" / "s3")
    assert not (tmp_path / "out").exists()


def test_nan_audio_is_refused_and_nothing_written(views_trained: dict[str, Path], tmp_path: Path) -> None:
    t = np.arange(3 * 24_000) / 24_000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    wave[1000:1010] = np.nan
    wav = tmp_path / "nan.wav"
    sf.write(str(wav), wave, 24_000, subtype="FLOAT")
    out = tmp_path / "out" / "score.json"
    with pytest.raises(InputError, match="audio contains NaN or infinite samples") as exc:
        run_score(wav, None, views_trained["results"], out)
    assert exc.value.path == str(wav)
    assert not out.parent.exists()


@pytest.mark.slow(reason=TRANSKUN_SLOW)
def test_a_recording_without_piano_notes_is_refused(views_trained: dict[str, Path], tmp_path: Path) -> None:
    """Noise at -20 dBFS is neither silent nor clipped, and TransKun hears no piano in it."""
    rng = np.random.default_rng(0)
    wav = tmp_path / "noise.wav"
    sf.write(str(wav), (0.1 * rng.standard_normal(3 * 44_100)).astype(np.float32), 44_100, subtype="FLOAT")
    out = tmp_path / "out" / "score.json"
    with pytest.raises(InputError, match="no piano notes were found in the recording") as exc:
        run_score(wav, None, views_trained["results"], out)
    assert exc.value.path == str(wav)
    assert not out.parent.exists()
