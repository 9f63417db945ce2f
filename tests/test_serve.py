"""The winner is served: `pianoeval score` uses the models the DAG chose, from results/ or from a bundle.

Two results trees are built by the pipeline's own step functions on a tiny demo corpus (one-epoch,
16-wide models, 2 folds): `symbolic` (S3 trained and compared: a MIDI is scored by its winner) and, for
the slow tests, `fused` (also rendered with FluidSynth, embedded with log-mel, the audio probe trained,
both winners retrained on inner folds for stacking, F2 fused and the winners compared and finalised),
so that a recording is scored by the fusion winner. Bundles are exported from both and scored on a tree
with no results folder.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pianoeval.cli import main
from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.core.settings import BackboneSettings
from pianoeval.data.sources import SYNTHETIC_WARNING, source_of, training_data
from pianoeval.evaluation.bundle import MANIFEST, VERSION, read_bundle, write_bundle
from pianoeval.steps.export import run_export
from pianoeval.steps.score import output_paths, run_score, score_midi

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3"
)
FOLDS = 2


def tiny_config(**sections: dict) -> dict:
    """A validated one-epoch config with 16-wide networks and 2 folds (sections override)."""
    from pianoeval.core.config import validate_config

    config = {
        "symbolic": {"hidden": 16, "layers": 1, "heads": 2},
        "audio": {"models": ["probe"], "backbone": "logmel", "hidden": 16, "heads": 2},
        "fusion": {"hidden": 16},
        "training": {"max_epochs": 1, "batch_size": 4, "patience": 1},
        "folds": {"k": FOLDS},
        "features": {"max_seq_len": 256},
        "stacking": {"inner_folds": 2},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return validate_config(config)


def train_track(track: str, model: str, config: dict, corpus: dict, features: Path) -> list[Path]:
    """run_train on every fold, then run_compare for the track; the fold folders."""
    from pianoeval.steps.compare import run_compare
    from pianoeval.steps.train import run_train

    results = corpus["results"]
    dirs = []
    for fold in range(FOLDS):
        dirs.append(results / "train" / track / model / f"fold_{fold}")
        run_train(track, model, config, fold, corpus[f"{track}_manifest"], corpus["folds"], features, dirs[-1])
    metrics = [d / "metrics.json" for d in dirs]
    run_compare(track, config, metrics, [d / "predictions.csv" for d in dirs], results / "compare" / track)
    return dirs


def make_corpus(root: Path, n_pieces: int) -> dict:
    """A demo corpus with its manifest, folds and an empty results folder."""
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.folds import make_folds, write_folds
    from pianoeval.data.manifest import write_manifest

    df = generate_demo_corpus(root / "demo", n_pieces=n_pieces, n_performances=3, seconds=4.0, seed=1)
    manifest = root / "demo" / "manifest.parquet"
    write_manifest(df, manifest)
    write_folds(make_folds(df, k=FOLDS, seed=1, dev_fraction=0.2), root / "folds.json")
    midi = Path(df["midi_path"].iloc[0])
    return {
        "root": root,
        "symbolic_manifest": manifest,
        "folds": root / "folds.json",
        "results": root / "results",
        "midi": midi,
    }


@pytest.fixture(scope="module")
def symbolic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A results tree with the symbolic track only (S3 on 2 folds, compared) and a bundle of it."""
    from pianoeval.steps.featurize import run_featurize

    root = tmp_path_factory.mktemp("serve_symbolic")
    corpus = make_corpus(root, n_pieces=4)
    config = tiny_config()
    run_featurize("curves", config, corpus["symbolic_manifest"], root / "curves.pt", root / "cache")
    train_track("symbolic", "s3", config, corpus, root / "curves.pt")
    corpus["bundle"] = root / "export" / "pianoeval.bundle"
    run_export(corpus["results"], corpus["bundle"], corpus["symbolic_manifest"])
    return corpus


def _scores(result: dict) -> list[float]:
    return [result["dimensions"][d]["score"] for d in DIMENSIONS]


def _moved_away(results: Path, tmp_path: Path) -> Path:
    """Move a results folder out of the way (scoring from a bundle must not need it); returns where it went."""
    away = tmp_path / "elsewhere"
    shutil.move(str(results), away)
    return away


def test_midi_is_scored_by_the_symbolic_winner_and_the_json_says_so(symbolic: dict, tmp_path: Path) -> None:
    write_json({"winner": "none"}, symbolic["results"] / "fusion" / "winner.json")
    result = run_score(symbolic["midi"], None, symbolic["results"], tmp_path / "score.json")
    assert read_json(symbolic["results"] / "compare" / "symbolic" / "winner.json")["model"] == "s3"
    assert (result["model"], result["track"], result["n_fold_models"]) == ("s3", "symbolic", FOLDS)
    assert result["models"] == {"symbolic": {"model": "s3", "n_folds": FOLDS}}
    assert result["served_from"] == {"kind": "results", "path": str(symbolic["results"].resolve())}
    page = output_paths(tmp_path / "score.json")["html"].read_text()
    assert "s3 (symbolic winner, 2 fold models" in page


def test_a_fold_config_of_an_older_version_still_scores(symbolic: dict, tmp_path: Path) -> None:
    """Loading a fold network reads only the section its network is built from (symbolic): a fold whose
    other sections hold a key this version no longer has (an older bundle) scores as before."""
    import yaml

    write_json({"winner": "none"}, symbolic["results"] / "fusion" / "winner.json")
    before = score_midi(symbolic["midi"], symbolic["results"])
    older = tmp_path / "results"
    shutil.copytree(symbolic["results"], older)
    for path in older.glob("train/symbolic/s3/fold_*/config.yaml"):
        config = yaml.safe_load(path.read_text())
        config["training"]["a_retired_key"] = 1  # TrainingSettings would refuse it
        path.write_text(yaml.safe_dump(config))
    after = score_midi(symbolic["midi"], older)
    np.testing.assert_array_equal(after["mean"], before["mean"])


def test_demo_model_reports_say_it_learned_from_synthetic_labels(symbolic: dict, tmp_path: Path) -> None:
    """Every scoring report names its training data; the demo's synthetic labels come with a visible warning."""
    write_json({"winner": "none"}, symbolic["results"] / "fusion" / "winner.json")
    result = run_score(symbolic["midi"], None, symbolic["results"], tmp_path / "score.json")
    sources = result["training_data"]["sources"]
    assert [s["source"] for s in sources] == ["demo"] and sources[0]["n_segments"] == 12
    assert result["training_data"]["synthetic"] and result["warnings"] == [SYNTHETIC_WARNING]
    page = output_paths(tmp_path / "score.json")["html"].read_text()
    assert '<p class="warning"><strong>Warning:</strong> This model learned from the demo corpus' in page
    assert "pianoeval demo corpus (12 labelled segments" in page


def test_training_data_of_real_sources_carries_no_warning() -> None:
    ids = ["Beethoven_WoO80_var1_8bars_1_1", "asap::Bach/Fugue/bwv_846/Shi05M", "Schubert_D935_no.3_4bars_2_1"]
    assert [source_of(i) for i in ids] == ["percepiano", "asap", "percepiano"]
    data = training_data(ids)
    assert not data["synthetic"] and data["warning"] is None
    assert {s["source"]: s["n_segments"] for s in data["sources"]} == {"asap": 1, "percepiano": 2}
    assert [s["license"].split(" ")[0] for s in data["sources"]] == ["CC", "MIT"]


def test_midi_bundle_round_trip_is_bit_identical(symbolic: dict, tmp_path: Path) -> None:
    """Export, move results/ away, score the same MIDI from the bundle: the very same numbers."""
    write_json({"winner": "none"}, symbolic["results"] / "fusion" / "winner.json")
    direct = run_score(symbolic["midi"], None, symbolic["results"], tmp_path / "direct.json")
    bundle = Path(shutil.copy(symbolic["bundle"], tmp_path / "model.bundle"))
    away = _moved_away(symbolic["results"], tmp_path)
    try:
        fresh = tmp_path / "fresh"  # a machine with no results folder
        fresh.mkdir()
        code = main(["score", str(symbolic["midi"]), "--bundle", str(bundle), "--out", str(fresh / "s.json")])
        assert code == 0
        served = read_json(fresh / "s.json")
    finally:
        shutil.move(str(away), symbolic["results"])
    for key in ("dimensions", "model", "track", "n_fold_models", "models", "training_data", "warnings", "reference"):
        assert served[key] == direct[key], key
    assert served["served_from"]["kind"] == "bundle" and served["served_from"]["path"] == str(bundle)


def test_bundle_holds_weights_settings_reference_and_card(symbolic: dict) -> None:
    record, files = read_bundle(symbolic["bundle"])
    assert record["version"] == VERSION and record["served"] == {"symbolic": {"model": "s3", "n_folds": FOLDS}}
    for fold in range(FOLDS):
        ckpt = f"train/symbolic/s3/fold_{fold}/model.ckpt"
        slim = torch.load(io.BytesIO(files[ckpt]), weights_only=True)
        # The fold folder's declared weights are the best checkpoint's, without the training state.
        full = torch.load(
            symbolic["results"] / f"train/symbolic/s3/fold_{fold}/checkpoints/best.ckpt", weights_only=False
        )
        assert set(slim) == {"state_dict", "hyper_parameters"}  # no optimiser state
        assert slim["state_dict"].keys() == full["state_dict"].keys()
        assert all(torch.equal(slim["state_dict"][k], v) for k, v in full["state_dict"].items())
        for name in ("model_spec.json", "config.yaml", "provenance.json"):
            assert f"train/symbolic/s3/fold_{fold}/{name}" in files
    served = json.loads(files["served.json"])
    assert np.array(served["reference"]).shape == (12, len(DIMENSIONS))
    assert record["settings"]["transcription"]["sample_rate"] == 44_100
    card = json.loads(files["model_card.json"])
    assert card["training_data"]["synthetic"] and card["corpus"] == {"demo": {"rows": 12, "labelled_rows": 12}}
    cell = card["benchmarks"]["symbolic"]["models"]["s3"]["pairwise_acc"]
    comparison = read_json(symbolic["results"] / "compare" / "symbolic" / "comparison.json")
    assert cell == comparison["models"]["s3"]["pairwise_acc"] and len(cell["ci95"]) == 2
    markdown = files["model_card.md"].decode()
    assert "**Warning:**" in markdown and "| pianoeval demo corpus | 12 |" in markdown
    assert f"`{card['git_revision']}`" in markdown


# -- bad bundles: one line naming the file, exit 1, nothing written ------------------------------------


def _bad_missing(bundle: Path, tmp: Path) -> Path:
    return tmp / "missing.bundle"


def _bad_garbage(bundle: Path, tmp: Path) -> Path:
    path = tmp / "garbage.bundle"
    path.write_bytes(b"this is not an archive at all" * 40)
    return path


def _bad_truncated(bundle: Path, tmp: Path) -> Path:
    path = tmp / "truncated.bundle"
    path.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    return path


def _bad_flipped(bundle: Path, tmp: Path) -> Path:
    """One byte of a checkpoint changed (the archive itself stays readable)."""
    _, files = read_bundle(bundle)
    name = next(n for n in files if n.endswith("model.ckpt"))
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0xFF
    path = tmp / "flipped.bundle"
    with tarfile.open(bundle) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            payload = bytes(data) if member.name == name else src.extractfile(member).read()
            dst.addfile(member, io.BytesIO(payload))
    return path


def _bad_version(bundle: Path, tmp: Path) -> Path:
    record, files = read_bundle(bundle)
    path = tmp / "future.bundle"
    manifest = {k: v for k, v in record.items() if k not in ("format", "version", "files")}
    write_bundle(files, manifest, path)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members[MANIFEST] = json.dumps({**json.loads(members[MANIFEST]), "version": VERSION + 1}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _bad_member_missing(bundle: Path, tmp: Path) -> Path:
    path = tmp / "partial.bundle"
    with tarfile.open(bundle) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            if not member.name.endswith("fold_1/config.yaml"):
                dst.addfile(member, src.extractfile(member))
    return path


def _bad_not_a_bundle(bundle: Path, tmp: Path) -> Path:
    path = tmp / "other.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return path


BAD_BUNDLES = {
    "missing": (_bad_missing, "bundle not found"),
    "garbage": (_bad_garbage, "not a readable bundle"),
    "truncated": (_bad_truncated, "(not a readable bundle|corrupt bundle)"),
    "flipped_byte": (_bad_flipped, r"corrupt bundle: train/symbolic/s3/fold_0/model\.ckpt does not match"),
    "wrong_version": (_bad_version, f"bundle format version {VERSION + 1}, but this pianoeval reads version {VERSION}"),
    "member_missing": (_bad_member_missing, r"corrupt bundle: train/symbolic/s3/fold_1/config\.yaml is missing"),
    "not_a_bundle": (_bad_not_a_bundle, "not a pianoeval bundle"),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES), ids=list(BAD_BUNDLES))
def test_bad_bundle_is_one_line_and_exit_1(
    symbolic: dict, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    make, message = BAD_BUNDLES[case]
    bad = make(symbolic["bundle"], tmp_path)
    out = tmp_path / "out" / "score.json"
    code = main(["score", str(symbolic["midi"]), "--bundle", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: {bad}: ") and re.search(message, err[0]), err[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_export_without_a_trained_pipeline_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found") as exc:
        run_export(tmp_path / "results", tmp_path / "x.bundle")
    assert exc.value.path.endswith("compare/symbolic/winner.json") and not (tmp_path / "x.bundle").exists()


# -- the fusion winner scores audio (slow: render, embed, stacking, fuse) -------------------------------


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A results tree as the DAG leaves it for the demo: both track winners, their inner folds, F2 fused on
    2 folds, the three comparisons and results/fusion/winner.json; and a bundle of it."""
    from pianoeval.steps.compare import run_compare
    from pianoeval.steps.embed import run_embed
    from pianoeval.steps.featurize import run_featurize
    from pianoeval.steps.fuse import WinnerInputs, run_fuse
    from pianoeval.steps.fusion import run_fusion
    from pianoeval.steps.render import run_render
    from pianoeval.steps.train_inner import run_train_inner

    root = tmp_path_factory.mktemp("serve_fused")
    corpus = make_corpus(root, n_pieces=6)
    config = tiny_config()
    results = corpus["results"]
    corpus["audio_manifest"] = root / "render" / "manifest.parquet"
    run_render(config, corpus["symbolic_manifest"], root / "render" / "audio", corpus["audio_manifest"])
    run_embed("logmel", config, corpus["audio_manifest"], root / "logmel.pt", root / "cache_embed")
    run_featurize("curves", config, corpus["symbolic_manifest"], root / "curves.pt", root / "cache")
    features = {"symbolic": root / "curves.pt", "audio": root / "logmel.pt"}
    winners = {}
    for track, model in (("symbolic", "s3"), ("audio", "probe")):
        train_track(track, model, config, corpus, features[track])
        for fold in range(FOLDS):
            for inner in range(2):
                out = results / "train_inner" / track / model / f"fold_{fold}" / f"inner_{inner}"
                manifest = corpus[f"{track}_manifest"]
                run_train_inner(track, model, config, fold, inner, manifest, corpus["folds"], features[track], out)
        winners[track] = model
    dirs = []
    for fold in range(FOLDS):
        inputs = {
            t: WinnerInputs(
                results / "compare" / t / "winner.json",
                results / "train" / t / m / f"fold_{fold}" / "embeddings.pt",
                sorted((results / "train_inner" / t / m / f"fold_{fold}").glob("inner_*/oof.pt")),
            )
            for t, m in winners.items()
        }
        dirs.append(results / "fuse" / "f2" / f"fold_{fold}")
        run_fuse(
            "f2",
            config,
            fold,
            corpus["symbolic_manifest"],
            corpus["folds"],
            inputs["symbolic"],
            inputs["audio"],
            dirs[-1],
        )
    references = [
        results / "train" / t / m / f"fold_{k}" / "metrics.json" for t, m in winners.items() for k in range(FOLDS)
    ]
    predictions = [d / "predictions.csv" for d in dirs] + [r.parent / "predictions.csv" for r in references]
    run_compare(
        "fusion",
        config,
        [d / "metrics.json" for d in dirs],
        predictions,
        results / "compare" / "fusion",
        references=references,
    )
    # The robustness rule's report (its own tests cover it): only its verdict goes into winner.json.
    robustness = write_json({"passed": True, "worst_drop_pct": 0.0, "veto_drop_pct": 30.0}, root / "robustness.json")
    run_fusion(
        *(results / "compare" / t / "comparison.json" for t in ("fusion", "symbolic", "audio")),
        robustness,
        results / "fusion" / "winner.json",
    )
    corpus["bundle"] = root / "export" / "pianoeval.bundle"
    # The export rule's command.
    argv = ["export", "--results", str(results), "--manifest", str(corpus["symbolic_manifest"])]
    assert main([*argv, "--out", str(corpus["bundle"])]) == 0
    return corpus


@pytest.fixture(scope="module")
def recording(fused: dict) -> Path:
    """A 4 s FluidSynth rendering of a corpus performance (not one the models were trained on as audio:
    the render rule's files are the corpus's, this one is rendered again to another path)."""
    from pianoeval.audio.render import render_midi

    return render_midi(fused["midi"], fused["root"] / "input" / "take.wav")


@needs_fluidsynth
@pytest.mark.slow(reason="renders, embeds and trains both tracks, their inner folds and the fusion; transcribes")
def test_audio_is_scored_by_the_fusion_winner_and_the_json_names_it(
    fused: dict, recording: Path, tmp_path: Path
) -> None:
    from pianoeval.evaluation.served import load_served
    from pianoeval.steps.score import symbolic_outputs

    winner = read_json(fused["results"] / "fusion" / "winner.json")
    assert winner["winner"] == "f2"
    out = tmp_path / "take.json"
    result = run_score(recording, None, fused["results"], out)
    assert (result["model"], result["track"], result["n_fold_models"]) == ("f2", "fusion", FOLDS)
    assert result["models"] == {
        "symbolic": {"model": "s3", "n_folds": FOLDS},
        "audio": {"model": "probe", "n_folds": FOLDS},
        "fusion": {"model": "f2", "n_folds": FOLDS},
    }
    assert {"audio", "fusion", "transcribe"} <= set(result["timings_s"])
    page = output_paths(out)["html"].read_text()
    assert "f2 (fusion winner, 2 fold models: audio winner probe on the recording + symbolic winner s3" in page
    # The fused scores are not the symbolic winner's on the transcription (what was served before).
    midi = Path(result["transcription"]["midi"])
    alone = score_midi(midi, fused["results"], check_length=False, transcribed=True)
    assert np.abs(np.array(_scores(result)) - alone["mean"]).max() > 1e-4
    # ... they are the mean of the fusion fold models fed both tracks, recomputed here by hand.
    from pianoeval.steps.score import audio_track_outputs, fusion_outputs

    served = load_served(fused["results"])
    folds = served.fused_folds()
    sym = symbolic_outputs(midi, [f[0] for f in folds], transcribed=True)
    aud = audio_track_outputs(recording, [f[1] for f in folds])
    np.testing.assert_allclose(
        _scores(result), fusion_outputs([f[2] for f in folds], sym, aud, None).mean(axis=0), atol=1e-6
    )
    # A MIDI alone is still the symbolic winner's.
    assert run_score(fused["midi"], None, fused["results"], tmp_path / "m.json")["track"] == "symbolic"


@needs_fluidsynth
@pytest.mark.slow(
    reason="needs the fused results tree (renders, trains both tracks, stacking, fusion); transcribes twice"
)
def test_audio_and_midi_bundle_round_trip_is_bit_identical(fused: dict, recording: Path, tmp_path: Path) -> None:
    direct = {
        kind: run_score(path, None, fused["results"], tmp_path / f"{kind}.json")
        for kind, path in (("audio", recording), ("midi", fused["midi"]))
    }
    record, files = read_bundle(fused["bundle"])
    assert set(record["served"]) == {"symbolic", "audio", "fusion"}
    assert sum(n.endswith("model.ckpt") for n in files) == 3 * FOLDS
    card = json.loads(files["model_card.json"])
    assert set(card["benchmarks"]) == {"symbolic", "audio", "fusion", "fusion_gain_over_best_single_track"}
    away = _moved_away(fused["results"], tmp_path)
    try:
        served = {
            kind: run_score(path, None, None, tmp_path / "fresh" / f"{kind}.json", bundle=fused["bundle"])
            for kind, path in (("audio", recording), ("midi", fused["midi"]))
        }
    finally:
        shutil.move(str(away), fused["results"])
    for kind in ("audio", "midi"):
        assert _scores(served[kind]) == _scores(direct[kind])  # exactly, not approximately
        assert served[kind]["dimensions"] == direct[kind]["dimensions"]
        assert served[kind]["models"] == direct[kind]["models"] and served[kind]["track"] == direct[kind]["track"]
    assert served["audio"]["track"] == "fusion"


def test_audio_without_its_fusion_folds_fails_before_transcribing(symbolic: dict, tmp_path: Path) -> None:
    """A fusion winner whose fold folders are missing is refused at once (not silently served by another model)."""
    import soundfile as sf

    results = Path(shutil.copytree(symbolic["results"], tmp_path / "results"))
    shutil.copytree(results / "compare" / "symbolic", results / "compare" / "audio")
    write_json({"winner": "f3"}, results / "fusion" / "winner.json")
    wav = tmp_path / "tone.wav"
    t = np.arange(3 * 24_000) / 24_000
    sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 24_000)
    with pytest.raises(InputError, match="no trained folds of audio/s3"):
        run_score(wav, None, results, tmp_path / "out" / "s.json")
    assert not (tmp_path / "out").exists()


def test_score_cli_takes_a_bundle(symbolic: dict, tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    midi = tiny_midi("take.mid", pitches=(60, 62, 64, 65, 67, 69))
    out = tmp_path / "s.json"
    assert main(["score", str(midi), "--bundle", str(symbolic["bundle"]), "--out", str(out)]) == 0
    result = read_json(out)
    assert result["served_from"]["kind"] == "bundle" and result["model"] == "s3"
    assert result["served_from"]["git_revision"] == read_bundle(symbolic["bundle"])[0]["git_revision"]


@needs_fluidsynth
@pytest.mark.slow(reason="needs the fused results tree (renders, trains both tracks, stacking, fusion)")
def test_probe_and_fusion_load_without_lightning_and_equal_their_modules(fused: dict, recording: Path) -> None:
    """The audio probe's and the fusion's fold models, loaded as plain networks, give their modules' outputs."""
    from pianoeval.audio.io import load_audio
    from pianoeval.evaluation.inference import load_scoring_network
    from pianoeval.evaluation.robustness import audio_outputs
    from pianoeval.evaluation.served import load_served
    from pianoeval.networks.scorer import ScoreNetwork
    from pianoeval.steps.score import FoldNetworks, audio_track_outputs
    from pianoeval.training.checkpoints import load_trained_module
    from pianoeval.training.registry import build_frozen_backbone

    served = load_served(fused["results"])
    aud = audio_track_outputs(recording, served.folds("audio"))
    fold_config = FoldNetworks().config
    for k, (_, audio_dir, fusion_dir) in enumerate(served.fused_folds()):
        net = load_scoring_network(audio_dir, fold_config(audio_dir))
        assert isinstance(net, ScoreNetwork) and not net.training
        config = fold_config(audio_dir)
        wave = load_audio(recording, sample_rate=config["render"]["sample_rate"])
        backbone = build_frozen_backbone("logmel", BackboneSettings.from_config(config))
        z, s = audio_outputs(load_trained_module(audio_dir), backbone, [wave], config["render"]["sample_rate"], 1e9)
        torch.testing.assert_close(aud["z"][k], z[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(aud["scores"][k], s[0], rtol=1e-6, atol=1e-7)
        batch = {
            "z_audio": aud["z"][k : k + 1],
            "scores_audio": aud["scores"][k : k + 1],
            "z_symbolic": torch.randn(1, read_json(fusion_dir / "model_spec.json")["symbolic_dim"]),
            "scores_symbolic": torch.rand(1, len(DIMENSIONS)) * 0.8 + 0.1,
        }
        plain, module = load_scoring_network(fusion_dir, fold_config(fusion_dir)), load_trained_module(fusion_dir)
        assert isinstance(plain, ScoreNetwork) and type(module.net) is ScoreNetwork  # the same class
        with torch.inference_mode():
            expected = module(dict(batch))
            got = plain(dict(batch))
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@needs_fluidsynth
@pytest.mark.slow(reason="needs the fused results tree (renders, trains both tracks, stacking, fusion)")
def test_fused_scoring_imports_no_lightning(fused: dict, recording: Path) -> None:
    """The audio and fusion fold models run in a fresh process without importing Lightning (5-12 s on 2 cores)."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; "
        "from pianoeval.evaluation.served import load_served; "
        "from pianoeval.steps.score import audio_track_outputs, fusion_outputs, symbolic_outputs; "
        f"s = load_served(Path({str(fused['results'])!r})); "
        f"a = audio_track_outputs(Path({str(recording)!r}), s.folds('audio')); "
        f"y = symbolic_outputs(Path({str(fused['midi'])!r}), s.folds('symbolic'), transcribed=True); "
        "print(fusion_outputs(s.folds('fusion'), y, a, None).shape, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == f"({FOLDS}, {len(DIMENSIONS)}) False"


def test_reference_holds_each_labelled_segment_once(tmp_path: Path) -> None:
    """Transcription views (`<id>@clean`) and val_transcribed rows repeat a segment's labels: left out."""
    from pianoeval.data.manifest import VIEWS, view_id
    from pianoeval.evaluation.served import reference_labels

    header = ["segment_id", "split", "group", *(f"label_{d}" for d in DIMENSIONS)]
    rows = [("demo::p0/P1", "train", 0.2), ("demo::p1/P1", "val", 0.6), ("demo::p2/P1", "dev", 0.4)]
    rows += [(view_id("demo::p0/P1", v), "train", 0.2) for v in VIEWS] + [("demo::p1/P1@clean", "val_transcribed", 0.6)]
    lines = [",".join(header)] + [",".join([sid, split, "0", *[str(y)] * len(DIMENSIONS)]) for sid, split, y in rows]
    path = tmp_path / "predictions.csv"
    path.write_text("\n".join(lines) + "\n")
    labels, ids = reference_labels(path)
    assert ids == ["demo::p0/P1", "demo::p1/P1", "demo::p2/P1"]
    np.testing.assert_array_equal(labels[:, 0], [0.2, 0.6, 0.4])
    assert training_data(ids)["sources"][0]["n_segments"] == 3
