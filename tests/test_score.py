"""`pianoeval score`: MIDI and audio (real TransKun transcription) scored by a tiny trained fold ensemble.

The trained results are built once per session by the pipeline's own functions (demo corpus →
folds → featurize → run_train on 2 folds → run_compare), with a one-epoch, 16-wide config.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pianoeval.cli import main
from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.errors import ConfigError, InputError
from pianoeval.core.io import write_json
from pianoeval.steps.score import TRANSCRIPTION_SUFFIX, output_paths, percentiles, run_score, score_midi

MODELS = ("s1", "s2", "s3")
# The phases `run_score` times (score.json `timings_s`).
TIMING_KEYS = ("checks", "transcribe", "models", "featurize", "forward", "report", "write")
KINDS = {"s1": "tokens", "s2": "graphs", "s3": "curves"}
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3"
)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per model: a results folder with 2 trained folds, the symbolic comparison and fusion/winner.json (plus
    'demo': a corpus MIDI)."""
    from pianoeval.core.config import validate_config
    from pianoeval.core.io import write_json
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.folds import make_folds, write_folds
    from pianoeval.data.manifest import write_manifest
    from pianoeval.steps.compare import run_compare
    from pianoeval.steps.featurize import run_featurize
    from pianoeval.steps.train import run_train

    root = tmp_path_factory.mktemp("trained")
    config = validate_config(
        {
            "symbolic": {"hidden": 16, "layers": 1, "heads": 2},
            # Trees as the wide part: the scorer must load them from the checkpoint (side_input.TreeEnsemble).
            "training": {"max_epochs": 1, "batch_size": 4, "patience": 1, "wide_part": "trees"},
            "folds": {"k": 2},
            "features": {"max_seq_len": 256},
        }
    )
    df = generate_demo_corpus(root / "demo", n_pieces=4, n_performances=3, seconds=4.0, seed=1)
    manifest = root / "demo" / "manifest.parquet"
    write_manifest(df, manifest)
    write_folds(make_folds(df, k=2, seed=1, dev_fraction=0.25), root / "folds.json")
    out: dict[str, Path] = {"demo": Path(df["midi_path"].iloc[0])}
    for model in MODELS:
        features = root / f"{KINDS[model]}.pt"
        run_featurize(KINDS[model], config, manifest, features, root / "cache")
        results = root / f"results_{model}"
        metrics = []
        for fold in range(2):
            fold_dir = results / "train" / "symbolic" / model / f"fold_{fold}"
            run_train("symbolic", model, config, fold, manifest, root / "folds.json", features, fold_dir)
            metrics.append(fold_dir / "metrics.json")
        predictions = [m.parent / "predictions.csv" for m in metrics]
        run_compare("symbolic", config, metrics, predictions, results / "compare" / "symbolic")
        write_json({"winner": "symbolic_only", "model": model}, results / "fusion" / "winner.json")
        out[model] = results
    return out


def _files(folder: Path) -> list[str]:
    """Every file name in a folder, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _check_outputs(result: dict, out: Path) -> None:
    """The JSON on disk equals the result, has 19 sane dimensions, and the HTML embeds the PNG and the table."""
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert list(result["dimensions"]) == list(DIMENSIONS)
    for d in result["dimensions"].values():
        assert 0.0 < d["score"] < 1.0 and d["uncertainty"] >= 0.0 and 0.0 <= d["percentile"] <= 100.0
    # Two folds trained with different seeds disagree somewhere: the uncertainty is real.
    assert max(d["uncertainty"] for d in result["dimensions"].values()) > 0.0
    paths = output_paths(out)
    page = paths["html"].read_text()
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == png
    assert page.count("<tr><td>") == len(DIMENSIONS)
    for name in DIMENSIONS:
        assert name.replace("_", " ").replace("&", "&amp;") in page
    assert "http" not in page  # self-contained: no external resources


@pytest.mark.parametrize("model", MODELS, ids=[f"model={m}" for m in MODELS])
def test_score_midi(trained: dict[str, Path], tmp_path: Path, model: str) -> None:
    out = tmp_path / "out" / "score.json"
    result = run_score(trained["demo"], None, trained[model], out)
    _check_outputs(result, out)
    assert result["model"] == model and result["n_fold_models"] == 2 and result["input_kind"] == "midi"
    assert result["transcription"] is None
    assert _files(out.parent) == ["score.html", "score.json", "score.png"]
    # Percentiles are those of the scores within the training labels (predictions.csv of fold 0).
    import pandas as pd

    labels = pd.read_csv(trained[model] / "train" / "symbolic" / model / "fold_0" / "predictions.csv")
    labels = labels[[f"label_{d}" for d in DIMENSIONS]].to_numpy()
    scores = np.array([result["dimensions"][d]["score"] for d in DIMENSIONS])
    np.testing.assert_allclose([result["dimensions"][d]["percentile"] for d in DIMENSIONS], percentiles(scores, labels))


@pytest.mark.parametrize("model", MODELS, ids=[f"model={m}" for m in MODELS])
def test_scoring_network_equals_the_trained_module(trained: dict[str, Path], model: str) -> None:
    """The Lightning-free scorer of every fold gives the LightningModule's scores."""
    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.core.settings import FeaturesSettings
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.evaluation.inference import load_scoring_network
    from pianoeval.networks.scorer import ScoreNetwork
    from pianoeval.symbolic.featurize import featurize_file
    from pianoeval.training.checkpoints import load_trained_module

    fold_dirs = sorted((trained[model] / "train" / "symbolic" / model).glob("fold_*"))
    assert len(fold_dirs) == 2
    for fold_dir in fold_dirs:
        config = validate_config(yaml.safe_load((fold_dir / "config.yaml").read_text()))
        batch = multi_task_collate_fn(
            [featurize_file(KINDS[model], str(trained["demo"]), FeaturesSettings.from_config(config))]
        )
        net = load_scoring_network(fold_dir, config)
        assert isinstance(net, ScoreNetwork) and not net.training
        assert net.encoder.trees.n_trees == 300  # the fold's trees came with the checkpoint
        with torch.inference_mode():
            expected, got = load_trained_module(fold_dir)(batch), net(batch)
        assert got.shape == (1, len(DIMENSIONS))
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("model", ["s2", "s3"])
def test_midi_scoring_imports_neither_lightning_nor_pandas(
    trained: dict[str, Path], tmp_path: Path, model: str
) -> None:
    """Scoring a MIDI in a fresh process leaves the slow imports out (they were most of its time); S2's
    graph layers are plain torch (symbolic/gat.py), so not even torch_geometric is imported, and the chart is
    drawn with Pillow (evaluation/chart.py), not matplotlib."""
    code = (
        "import sys; from pathlib import Path; from pianoeval.steps.score import run_score; "
        f"r = run_score(Path({str(trained['demo'])!r}), None, Path({str(trained[model])!r}), "
        f"Path({str(tmp_path / 'score.json')!r})); "
        "slow = ('lightning', 'pandas', 'torch_geometric', 'miditok', 'matplotlib'); "
        "print(sorted(m for m in slow if m in sys.modules)); "
        "print(sorted(r['timings_s']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-2:] == ["[]", str(sorted(TIMING_KEYS))]


def test_checkpoint_of_another_network_is_an_input_error(trained: dict[str, Path], tmp_path: Path) -> None:
    """A checkpoint that no longer fits the network code fails in one line naming the fold, not a traceback."""
    results = Path(shutil.copytree(trained["s3"], tmp_path / "results"))
    fold = results / "train" / "symbolic" / "s3" / "fold_1"
    for ckpt in fold.glob("**/*.ckpt"):  # model.ckpt, and Lightning's checkpoints beside it
        state = torch.load(ckpt, weights_only=True)
        state["state_dict"].pop(next(k for k in state["state_dict"] if "heads." in k))
        torch.save(state, ckpt)
    with pytest.raises(InputError, match="checkpoint does not fit this version's s3 network") as exc:
        run_score(trained["demo"], None, results, tmp_path / "out" / "score.json")
    assert exc.value.path == str(fold)
    assert _files(tmp_path / "out") == []


def test_percentiles() -> None:
    reference = np.array([[0.1, 0.5], [0.2, 0.5], [0.3, 0.5], [0.4, 0.5]])
    np.testing.assert_allclose(percentiles(np.array([0.25, 0.5]), reference), [50.0, 50.0])
    np.testing.assert_allclose(percentiles(np.array([0.05, 0.9]), reference), [0.0, 100.0])


@needs_fluidsynth
def test_score_audio_end_to_end(trained: dict[str, Path], tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    """A 4 s FluidSynth rendering is transcribed by the real TransKun model and scored like its MIDI."""
    import mir_eval

    from pianoeval.audio.render import render_midi
    from pianoeval.data.midi import load_performance

    pitches = (60, 64, 67, 72, 69, 65)
    reference = load_performance(tiny_midi("melody.mid", pitches=pitches, step_s=0.5))
    wav = render_midi(reference.path, tmp_path / "in" / "melody.wav")
    assert 3.0 < sf.info(str(wav)).duration < 5.0
    out = tmp_path / "out" / "melody.json"
    result = run_score(wav, None, trained["s3"], out)
    _check_outputs(result, out)
    assert result["input_kind"] == "audio"
    midi = out.with_name("melody" + TRANSCRIPTION_SUFFIX)
    assert result["transcription"]["midi"] == str(midi)
    assert _files(out.parent) == sorted(["melody.html", "melody.json", "melody.png", midi.name])
    # The transcription is the rendered melody ...
    notes = load_performance(midi).notes
    assert result["transcription"]["n_notes"] == len(notes)
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        reference.notes[:, :2],
        mir_eval.util.midi_to_hz(reference.notes[:, 2]),
        notes[:, :2],
        mir_eval.util.midi_to_hz(notes[:, 2]),
        onset_tolerance=0.05,
        offset_ratio=None,
    )
    assert f1 >= 0.8, notes
    # ... and the audio's scores are exactly those of that MIDI.
    direct = score_midi(midi, trained["s3"])
    np.testing.assert_allclose([result["dimensions"][d]["score"] for d in DIMENSIONS], direct["mean"], rtol=1e-6)
    np.testing.assert_allclose([result["dimensions"][d]["uncertainty"] for d in DIMENSIONS], direct["std"], atol=1e-7)
    assert "TransKun" in output_paths(out)["html"].read_text()


def _tone(seconds: float, rate: int = 24_000, amplitude: float = 0.3) -> np.ndarray:
    """A 440 Hz sine [S]."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _bad_missing(folder: Path) -> Path:
    return folder / "missing.wav"


def _bad_suffix(folder: Path) -> Path:
    path = folder / "notes.txt"
    path.write_text("C D E")
    return path


def _bad_unreadable(folder: Path) -> Path:
    path = folder / "junk.wav"
    path.write_bytes(b"RIFF not really a wave file")
    return path


def _bad_silent(folder: Path) -> Path:
    path = folder / "silent.wav"
    sf.write(str(path), np.zeros(24_000 * 4, dtype=np.float32), 24_000)
    return path


def _bad_clipped(folder: Path) -> Path:
    path = folder / "clipped.wav"
    sf.write(str(path), np.sign(_tone(4.0)), 24_000, subtype="FLOAT")
    return path


def _bad_short(folder: Path) -> Path:
    path = folder / "short.flac"
    sf.write(str(path), _tone(1.0), 24_000)
    return path


def _bad_long(folder: Path) -> Path:
    path = folder / "long.wav"
    sf.write(str(path), _tone(601.0, rate=8_000), 8_000, subtype="PCM_16")
    return path


def _bad_short_midi(folder: Path) -> Path:
    from pianoeval.data.midi import Performance, write_performance

    return write_performance(Performance(np.array([[0.0, 0.5, 60, 80]])), folder / "short.mid")


BAD_INPUTS = {
    "missing": (_bad_missing, "file not found"),
    "unknown_suffix": (_bad_suffix, "unsupported file type '.txt'"),
    "unreadable": (_bad_unreadable, "not a readable audio file"),
    "silent": (_bad_silent, "audio is silent"),
    "clipped": (_bad_clipped, "audio is clipped"),
    "too_short": (_bad_short, r"audio lasts 1\.0 s; scoring needs at least 2 s"),
    "too_long": (_bad_long, r"audio lasts 601\.0 s, more than the 600 s limit"),
    "too_short_midi": (_bad_short_midi, r"performance lasts 0\.5 s; scoring needs at least 2 s"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_refused_and_nothing_written(trained: dict[str, Path], tmp_path: Path, case: str) -> None:
    make, message = BAD_INPUTS[case]
    (tmp_path / "in").mkdir()
    path = make(tmp_path / "in")
    out = tmp_path / "out" / "score.json"
    with pytest.raises(InputError, match=message) as exc:
        run_score(path, None, trained["s3"], out)
    assert exc.value.path == str(path)
    assert _files(out.parent) == []


def test_missing_model_fails_before_transcribing(tmp_path: Path) -> None:
    """Each missing piece of the results folder is named before any transcription: the final winner,
    the symbolic comparison's winner, the winner's trained folds."""
    wav = tmp_path / "tone.wav"
    sf.write(str(wav), _tone(3.0), 24_000)
    results = tmp_path / "results"
    model = results / "fusion" / "winner.json"
    with pytest.raises(InputError, match="final winner not found; run the pipeline, or pass --results") as exc:
        run_score(wav, None, results, tmp_path / "out" / "score.json")
    assert exc.value.path == str(model)
    model.parent.mkdir(parents=True)
    model.write_text("{}")  # a fusion winner file but no symbolic comparison beside it
    with pytest.raises(InputError, match="file not found") as exc:
        run_score(wav, None, results, tmp_path / "out" / "score.json")
    assert exc.value.path.endswith("compare/symbolic/winner.json")
    write_json({"model": "s3"}, tmp_path / "results" / "compare" / "symbolic" / "winner.json")
    # A symbolic winner but no trained folds behind it.
    with pytest.raises(InputError, match="no trained folds of symbolic/s3") as exc:
        run_score(wav, None, results, tmp_path / "out" / "score.json")
    assert exc.value.path == str(tmp_path / "results" / "train" / "symbolic" / "s3")
    assert _files(tmp_path / "out") == []


def test_outputs_never_overwrite_the_input(trained: dict[str, Path], tmp_path: Path) -> None:
    midi = shutil.copy(trained["demo"], tmp_path / "take.mid")
    before = Path(midi).read_bytes()
    with pytest.raises(InputError, match="would overwrite an input"):
        run_score(Path(midi), None, trained["s3"], tmp_path / "take.mid")
    assert Path(midi).read_bytes() == before and _files(tmp_path) == ["take.mid"]


def test_cli_prints_one_line(trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "take.wav"
    code = main(["score", str(missing), "--results", str(trained["s3"]), "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"error: {missing}: file not found"]
    assert not (tmp_path / "s.json").exists()
    # The results folder is named, never found by walking up from a file: the old option says so.
    model = str(trained["s3"] / "fusion" / "winner.json")
    assert main(["score", str(trained["demo"]), "--model", model, "--out", str(tmp_path / "s.json")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --model is gone: pass --results, the results folder (default: results)"
    ]
    assert not (tmp_path / "s.json").exists()


def test_score_midi_with_its_score_uses_the_score_statistics(trained: dict[str, Path], tmp_path: Path) -> None:
    """--score aligns the performance to the score: the score statistics change the prediction."""
    import pandas as pd

    manifest = pd.read_parquet(trained["demo"].parents[1] / "manifest.parquet")
    row = manifest[manifest["midi_path"] == str(trained["demo"])].iloc[0]
    score = Path(row["score_midi_path"])
    results = trained["s3"]
    plain = score_midi(trained["demo"], results)
    scored = score_midi(trained["demo"], results, score=score)
    assert not plain["score_aligned"] and scored["score_aligned"]
    assert np.abs(plain["mean"] - scored["mean"]).max() > 1e-4
    out = tmp_path / "score.json"
    result = run_score(trained["demo"], score, trained["s3"], out)
    assert result["score_aligned"] and result["score_midi"] == str(score)
    np.testing.assert_allclose([result["dimensions"][d]["score"] for d in DIMENSIONS], scored["mean"], atol=1e-6)
    assert "score statistics used" in output_paths(out)["html"].read_text()
    # A "score" of other music cannot be aligned: scored as unscored, and the JSON says so.
    other = manifest[manifest["score_midi_path"] != str(score)]["score_midi_path"].iloc[0]
    unaligned = score_midi(trained["demo"], results, score=Path(other))
    assert not unaligned["score_aligned"]
    np.testing.assert_allclose(unaligned["mean"], plain["mean"], atol=1e-6)


def test_an_s3_trained_on_fewer_curves_still_scores(trained: dict[str, Path], tmp_path: Path) -> None:
    """A fold trained before the score-aligned curves (12 curves in its model_spec and its weights) scores
    with this version, which computes 17: it gets its own curves by name. Built here from a trained fold by
    cutting its first convolutions to the 12 performance curves, which without a score (its 5 score curves
    are 0) gives the very same scores."""
    import shutil

    from pianoeval.core.io import read_json, write_json
    from pianoeval.steps.score import symbolic_outputs
    from pianoeval.symbolic.features import PERFORMANCE_CURVE_NAMES

    fold = sorted((trained["s3"] / "train" / "symbolic" / "s3").glob("fold_*"))[0]
    old = tmp_path / "s3" / "fold_0"
    shutil.copytree(fold, old)
    spec = read_json(old / "model_spec.json")
    spec["meta"] |= {"feature_names": list(PERFORMANCE_CURVE_NAMES), "n_features": len(PERFORMANCE_CURVE_NAMES)}
    spec["meta"].pop("score_channels")
    write_json(spec, old / "model_spec.json")
    ckpt = torch.load(old / "model.ckpt", map_location="cpu", weights_only=False)
    convs = [k for k in ckpt["state_dict"] if ".branches." in k and k.endswith(".weight")]
    assert convs
    for k in convs:
        ckpt["state_dict"][k] = ckpt["state_dict"][k][:, : len(PERFORMANCE_CURVE_NAMES)].clone()
    torch.save(ckpt, old / "model.ckpt")
    new = symbolic_outputs(trained["demo"], [fold])
    got = symbolic_outputs(trained["demo"], [old])
    torch.testing.assert_close(got["scores"], new["scores"], rtol=1e-5, atol=1e-6)
    # A model that needs a curve this version does not compute is refused with its folder named.
    spec["meta"]["feature_names"][0] = "velocity_quiet"
    write_json(spec, old / "model_spec.json")
    with pytest.raises(ConfigError, match=r"fold_0 was trained on curves .*velocity_quiet"):
        symbolic_outputs(trained["demo"], [old])
