"""The robustness checks where the pipeline reads them: `passed` of an audio model's report is what
the audio comparison vetoes on, and the final model's robustness (`run_robustness`, transcribed
conditions and the fusion re-scoring included) reaches results/fusion/winner.json (`run_fusion`, the
finalize rule).

One tiny results folder is built by the pipeline's own functions: a demo corpus rendered with
FluidSynth (TransKun must hear notes in it) → s3 on curves and the probe on log-mel frames, each with
its inner folds → the three comparisons → an f2 fusion.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.io import read_json
from pianoeval.core.settings import BackboneSettings

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
pytestmark = [
    pytest.mark.skipif(
        shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3"
    ),
    pytest.mark.slow(
        reason="trains s3, the probe, their inner folds and a fusion, then transcribes 2 recordings with TransKun"
    ),
]
SNR = [20.0]
# What each step reads of the config: one fold, few epochs, one transcribed condition on 2 recordings.
CONFIG = {
    "seed": 1,
    "symbolic": {"hidden": 16, "layers": 1, "heads": 2},
    "audio": {"models": ["probe"], "backbone": "logmel", "hidden": 16},
    "fusion": {"hidden": 16},
    "training": {"max_epochs": 2, "batch_size": 4, "patience": 5},
    "stacking": {"inner_folds": 2},
    "compare": {"resamples": 1000},
    "robustness": {"snr_db": SNR, "audio_per_fold": 0, "transcribe_conditions": ["clean"], "transcribe_per_fold": 2},
}


def _embed_logmel(df: Any, out: Path) -> Path:
    """The embed rule's store for the log-mel backbone: frames of every recording."""
    from pianoeval.audio.embed import CACHE_FRAME_RATE, embed_wave
    from pianoeval.audio.io import load_audio
    from pianoeval.training.registry import build_frozen_backbone

    config = validate_config(CONFIG)
    backbone = build_frozen_backbone("logmel", BackboneSettings.from_config(config))
    sr = int(config["render"]["sample_rate"])
    items = {
        sid: {"audio_emb": embed_wave(backbone, load_audio(p, sample_rate=sr), sr)}
        for sid, p in zip(df["segment_id"], df["audio_path"], strict=True)
    }
    dim = int(next(iter(items.values()))["audio_emb"].shape[1])
    meta = {"backbone": "logmel", "dim": dim, "frame_rate": CACHE_FRAME_RATE, "sample_rate": backbone.sample_rate}
    torch.save({"kind": "audio", "meta": meta, "items": items}, out)
    return out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, one_fold: Callable[..., dict]) -> dict[str, Path]:
    """results/ up to the fusion comparison, plus the manifest and folds."""
    from pianoeval.audio.render import render_midi
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.manifest import MANIFEST_COLUMNS, write_manifest
    from pianoeval.steps.compare import run_compare
    from pianoeval.steps.featurize import run_featurize
    from pianoeval.steps.fuse import WinnerInputs, run_fuse
    from pianoeval.steps.train import run_train
    from pianoeval.steps.train_inner import run_train_inner

    root = tmp_path_factory.mktemp("robustness_pipeline")
    config = validate_config(CONFIG)
    df = generate_demo_corpus(root / "demo", n_pieces=4, n_performances=4, seconds=3.0, seed=3)
    df["audio_path"] = [
        str(render_midi(p, root / "wav" / f"{k:02d}.wav", sample_rate=int(config["render"]["sample_rate"])))
        for k, p in enumerate(df["midi_path"])
    ]
    manifest = write_manifest(df[list(MANIFEST_COLUMNS)], root / "manifest.parquet")
    folds = root / "folds.json"
    one_fold(df, folds, n_train=2, n_dev=1)
    features = {"symbolic": root / "curves.pt", "audio": _embed_logmel(df, root / "logmel.pt")}
    run_featurize("curves", config, manifest, features["symbolic"], root / "cache")
    results = root / "results"
    inputs = {}
    for track, model in (("symbolic", "s3"), ("audio", "probe")):
        fold_dir = results / "train" / track / model / "fold_0"
        run_train(track, model, config, 0, manifest, folds, features[track], fold_dir)
        oof = []
        for inner in range(2):
            inner_dir = results / "train_inner" / track / model / "fold_0" / f"inner_{inner}"
            run_train_inner(track, model, config, 0, inner, manifest, folds, features[track], inner_dir)
            oof.append(inner_dir / "oof.pt")
        compare = results / "compare" / track
        run_compare(track, config, [fold_dir / "metrics.json"], [fold_dir / "predictions.csv"], compare)
        inputs[track] = WinnerInputs(compare / "winner.json", fold_dir / "embeddings.pt", oof)
    fuse_dir = results / "fuse" / "f2" / "fold_0"
    run_fuse("f2", config, 0, manifest, folds, inputs["symbolic"], inputs["audio"], fuse_dir)
    references = [results / "train" / t / m / "fold_0" for t, m in (("symbolic", "s3"), ("audio", "probe"))]
    run_compare(
        "fusion",
        config,
        [fuse_dir / "metrics.json"],
        [fuse_dir / "predictions.csv", *(r / "predictions.csv" for r in references)],
        results / "compare" / "fusion",
        references=[r / "metrics.json" for r in references],
    )
    return {"root": root, "results": results, "manifest": manifest, "folds": folds}


def test_audio_veto_reads_the_passed_flag_its_report_writes(pipeline: dict[str, Path], tmp_path: Path) -> None:
    """`passed` is the worst drop within the veto, and a failed report vetoes the model in the audio
    comparison (the only candidate: it still wins, flagged `all_vetoed`)."""
    from pianoeval.steps.audio_robustness import run_audio_robustness
    from pianoeval.steps.compare import run_compare

    results, fold_dir = pipeline["results"], pipeline["results"] / "train" / "audio" / "probe" / "fold_0"
    args = (pipeline["manifest"], pipeline["folds"], results)
    lenient = run_audio_robustness("probe", validate_config(CONFIG), *args, tmp_path / "lenient.json")
    worst = lenient["worst_drop_pct"]
    assert worst > 0.0 and worst == max(c["score_drop_pct"] for c in lenient["conditions"].values())
    strict_config = validate_config({**CONFIG, "robustness": {**CONFIG["robustness"], "veto_drop_pct": worst / 2}})
    strict = run_audio_robustness("probe", strict_config, *args, tmp_path / "strict.json")
    edge_config = validate_config({**CONFIG, "robustness": {**CONFIG["robustness"], "veto_drop_pct": worst}})
    edge = run_audio_robustness("probe", edge_config, *args, tmp_path / "edge.json")
    assert lenient["veto_drop_pct"] == 15.0 and lenient["passed"] == (worst <= 15.0)
    assert not strict["passed"] and read_json(tmp_path / "strict.json")["passed"] is False
    assert edge["passed"]  # a drop equal to the veto passes ("more than" fails)
    # The comparison reads that flag.
    metrics, predictions = [fold_dir / "metrics.json"], [fold_dir / "predictions.csv"]
    config = validate_config(CONFIG)
    vetoed = run_compare("audio", config, metrics, predictions, tmp_path / "a", robustness=[tmp_path / "strict.json"])
    assert vetoed["vetoed"] == ["probe"] and vetoed["decided_by"] == "all_vetoed"
    kept = run_compare("audio", config, metrics, predictions, tmp_path / "b", robustness=[tmp_path / "edge.json"])
    assert kept["vetoed"] == [] and kept["decided_by"] == "only_candidate"


def test_robustness_report_and_the_final_winner(pipeline: dict[str, Path], tmp_path: Path) -> None:
    """run_robustness scores the fusion winner under every condition and through TransKun's
    transcription of the clean recordings; its `passed` and worst drop reach results/fusion/winner.json."""
    from pianoeval.evaluation.robustness import conditions
    from pianoeval.steps.fusion import run_fusion
    from pianoeval.steps.robustness import run_robustness

    results = pipeline["results"]
    fusion_winner = results / "compare" / "fusion" / "winner.json"
    out = tmp_path / "robustness"
    report = run_robustness(
        validate_config(CONFIG), pipeline["manifest"], pipeline["folds"], fusion_winner, out, results=results
    )
    assert read_json(out / "report.json") == json.loads(json.dumps(report))
    assert (out / "score_drop.png").read_bytes()[:4] == b"\x89PNG" and "clean_transcribed" in (
        out / "report.md"
    ).read_text()
    assert (report["fusion_model"], report["audio_model"]) == ("f2", "probe")
    # The clean scores are the fusion's own validation predictions: the re-scoring path is the trained one.
    fusion_metrics = read_json(results / "fuse" / "f2" / "fold_0" / "metrics.json")
    assert report["n_segments"] == fusion_metrics["n_val"]
    assert report["clean"]["fusion"]["pairwise_acc"] == pytest.approx(fusion_metrics["pairwise_acc"], abs=1e-6)
    assert report["clean"]["fusion"]["r2"] == pytest.approx(fusion_metrics["r2"], abs=1e-5)
    assert set(report["conditions"]) == {n for n, _ in conditions(SNR)} | {"clean_transcribed"}
    tx = report["conditions"]["clean_transcribed"]
    assert tx["n_segments"] == 2 and tx["note_f1_onset_mean"] > 0.5
    assert {"fusion", "symbolic"} <= set(tx)
    drops = [c["fusion"]["score_drop_pct"] for c in report["conditions"].values()]
    assert report["worst_drop_pct"] == max(drops)
    assert report["passed"] == (report["worst_drop_pct"] <= report["veto_drop_pct"])
    for entry in report["conditions"].values():
        assert entry["fusion"]["passed"] == (entry["fusion"]["score_drop_pct"] <= report["veto_drop_pct"])

    # A veto below the worst drop (which may be 0 on this tiny fold) fails the model, and finalize
    # carries each report's verdict.
    strict_config = validate_config({**CONFIG, "robustness": {**CONFIG["robustness"], "veto_drop_pct": -1.0}})
    strict = run_robustness(
        strict_config, pipeline["manifest"], pipeline["folds"], fusion_winner, tmp_path / "strict", results=results
    )
    assert not strict["passed"] and strict["worst_drop_pct"] == pytest.approx(report["worst_drop_pct"])
    compare = results / "compare"
    for rob in (out, tmp_path / "strict"):
        verdict = read_json(rob / "report.json")
        final = run_fusion(
            compare / "fusion" / "comparison.json",
            compare / "symbolic" / "comparison.json",
            compare / "audio" / "comparison.json",
            rob / "report.json",
            rob / "winner.json",
        )
        assert read_json(rob / "winner.json") == json.loads(json.dumps(final))
        assert final["robustness"] == {k: verdict[k] for k in ("passed", "worst_drop_pct", "veto_drop_pct")}
    assert final["robustness"]["passed"] is False
    assert final["winner"] == "f2" and final["single_track_winners"]["symbolic"]["model"] == "s3"
    assert final["single_track_winners"]["audio"]["model"] == "probe"
    assert final["gain_over_best_single_track"]["best_single_track"] in ("symbolic/s3", "audio/probe")
    assert np.isfinite(final["gain_over_best_single_track"]["pairwise_acc"]["mean"])
