"""Corpus pretraining (rule pretrain_corpus): seeded MIDI augmentations, the corpus (overlap piece left
out), one job per model whatever the fold count, resume, and the fold's pretraining starting from it.

Small synthetic MIDI in an ASAP-like folder only (no ../shared)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_experiments import BIN, checkout
from test_leaks import GROUPS, _folds, _manifest

from pianoeval.core.config import validate_config
from pianoeval.core.settings import FeaturesSettings, FitSettings
from pianoeval.data.corpus import PERCEPIANO_OVERLAP, CorpusSettings, corpus_files, random_windows, window
from pianoeval.data.midi import Performance, write_performance
from pianoeval.symbolic.augmentation import AugmentSettings, augment, scale_tempo, scale_velocity, transpose


def perf(n: int = 40, seed: int = 0) -> Performance:
    """A random performance of `n` notes over about n / 4 seconds, with pedal presses."""
    rng = np.random.default_rng(seed)
    onsets = np.sort(rng.uniform(0, n / 4, n))
    notes = np.stack([onsets, onsets + rng.uniform(0.1, 0.8, n), rng.integers(40, 90, n), rng.integers(20, 120, n)], 1)
    return Performance(notes, np.array([[0.5, 100.0], [2.0, 0.0], [4.0, 127.0]]))


def corpus(root: Path) -> Path:
    """An ASAP-like folder: two pieces of two performances each, one of them PercePiano's overlap piece."""
    for k, folder in enumerate(["Bach/Prelude/bwv_846", PERCEPIANO_OVERLAP]):
        for player in ("A01", "B02"):
            write_performance(perf(60, seed=10 * k + len(player)), root / folder / f"{player}.mid")
        write_performance(perf(60, seed=99), root / folder / "midi_score.mid")
    return root


# -- augmentations --------------------------------------------------------------------------------------


def test_transposition_shifts_every_pitch_and_keeps_the_rest() -> None:
    p = perf()
    out = transpose(p, 5)
    assert np.array_equal(out.pitches, p.pitches + 5)
    assert np.array_equal(out.notes[:, [0, 1, 3]], p.notes[:, [0, 1, 3]])
    assert np.array_equal(out.pedal, p.pedal)


def test_tempo_scaling_divides_note_and_pedal_times() -> None:
    p = perf()
    out = scale_tempo(p, 1.25)
    assert np.allclose(out.notes[:, :2], p.notes[:, :2] / 1.25)
    assert np.allclose(out.pedal[:, 0], p.pedal[:, 0] / 1.25)
    assert np.array_equal(out.notes[:, 2:], p.notes[:, 2:])


@pytest.mark.parametrize("factor", [0.01, 0.5, 1.0, 1.3, 10.0], ids=["near-zero", "half", "one", "louder", "x10"])
def test_velocity_scaling_stays_in_midi_range(factor: float) -> None:
    out = scale_velocity(perf(), factor)
    assert out.velocities.min() >= 1 and out.velocities.max() <= 127
    assert np.array_equal(out.notes[:, :3], perf().notes[:, :3])


def test_augment_is_seeded_and_stays_on_the_keyboard() -> None:
    settings = AugmentSettings(transpose=12, tempo=0.2, velocity=0.3)
    high = perf()
    high.notes[:, 2] = np.clip(high.notes[:, 2] + 30, 0, 105)  # 3 semitones below the top key
    a, drawn_a = augment(high, settings, np.random.default_rng(7))
    b, drawn_b = augment(high, settings, np.random.default_rng(7))
    assert drawn_a == drawn_b and np.array_equal(a.notes, b.notes)
    draws = [augment(high, settings, np.random.default_rng(s))[1] for s in range(30)]
    assert len({d["transpose"] for d in draws}) > 3, "the draws do not vary with the seed"
    assert max(d["transpose"] for d in draws) <= 3, "a shift left the keyboard"
    assert all(1 / 1.2 - 1e-9 <= d["tempo"] <= 1.2 + 1e-9 and 0.7 <= d["velocity"] <= 1.3 for d in draws)


# -- the corpus -----------------------------------------------------------------------------------------


def test_corpus_leaves_out_the_percepiano_overlap_piece_by_default(tmp_path: Path) -> None:
    root = corpus(tmp_path / "asap")
    files = corpus_files(CorpusSettings(str(root)))
    assert [f for f, _ in files] == ["Bach/Prelude/bwv_846"] * 2
    assert all(p.name != "midi_score.mid" for _, p in files)
    everything = corpus_files(CorpusSettings(str(root), exclude=()))
    assert {f for f, _ in everything} == {"Bach/Prelude/bwv_846", PERCEPIANO_OVERLAP}


def test_a_window_starts_at_zero_and_keeps_a_held_pedal() -> None:
    p = perf(80)
    w = window(p, 3.0, 4.0)
    inside = (p.onsets >= 3.0) & (p.onsets < 7.0)
    assert len(w.notes) == inside.sum() and w.onsets.min() >= 0 and w.notes[:, 1].max() <= 4.0
    assert w.pedal[0].tolist() == [0.0, 0.0], "the pedal's value at the window's start (up since 2 s)"
    assert [1.0, 127.0] in w.pedal.tolist()
    assert all(len(x.notes) for x in random_windows(p, 4.0, 5, np.random.default_rng(0)))


# -- the step: once per model, cached, resumable; the fold starts from it ----------------------------------


def corpus_config(root: Path, **corpus_overrides: object) -> dict:
    section = {"root": str(root), "segment_seconds": 5.0, "windows_per_file": 2, "batch_size": 2}
    return validate_config(
        {
            "symbolic": {"hidden": 8, "layers": 1, "heads": 2, "corpus": {**section, **corpus_overrides}},
            "features": {"max_seq_len": 64, "frame_rate": 10},
        }
    )


def test_corpus_pretraining_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    from pianoeval.steps.pretrain_corpus import run_pretrain_corpus

    root = corpus(tmp_path / "asap")
    out, ckpt = tmp_path / "pretrain_corpus" / "s3" / "encoder.pt", tmp_path / "cache" / "pretrain_corpus" / "s3"
    first = run_pretrain_corpus("s3", corpus_config(root, epochs=1), out, ckpt, tmp_path / "cache")
    assert first["epochs_run"] == 1 and not first["resumed"]
    assert first["n_files"] == 2 and first["n_windows"] == 4
    assert "pretrain/contrastive" in first["final"], "the objective's terms are not logged"
    # Its checkpoints are a cache where it was told, not a folder beside the declared encoder.
    assert (ckpt / "last.ckpt").is_file() and sorted(p.name for p in out.parent.iterdir()) == ["encoder.pt"]
    # A larger budget continues from the last epoch instead of starting again.
    second = run_pretrain_corpus("s3", corpus_config(root, epochs=2), out, ckpt, tmp_path / "cache")
    assert second["resumed"] and second["epochs_run"] == 2
    # Another corpus setting is another run: the stale checkpoints are not resumed.
    third = run_pretrain_corpus("s3", corpus_config(root, epochs=2, windows_per_file=1), out, ckpt, tmp_path / "cache")
    assert not third["resumed"] and third["n_windows"] == 2


def test_a_killed_corpus_run_keeps_its_finished_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """last.ckpt is written at every epoch's end, so a run killed in epoch 2 resumes after epoch 1 (with
    Lightning's save_top_k=0 it was written only when the time budget stopped the run)."""
    from pianoeval.steps.pretrain_corpus import run_pretrain_corpus
    from pianoeval.training import progress

    class Killed(Exception):
        pass

    def kill_in_second_epoch(self: object, trainer: object, pl_module: object) -> None:
        if trainer.current_epoch == 1:
            raise Killed

    root = corpus(tmp_path / "asap")
    out, ckpt = tmp_path / "pretrain_corpus" / "s3" / "encoder.pt", tmp_path / "checkpoints"
    monkeypatch.setattr(progress.EpochLog, "on_train_epoch_start", kill_in_second_epoch)
    with pytest.raises(Killed):
        run_pretrain_corpus("s3", corpus_config(root, epochs=3), out, ckpt, tmp_path / "cache")
    state = torch.load(ckpt / "last.ckpt", weights_only=False)
    assert state["epoch"] == 0 and state["global_step"] == 2  # epoch 1 (4 windows, batch 2) kept
    monkeypatch.undo()
    again = run_pretrain_corpus("s3", corpus_config(root, epochs=3), out, ckpt, tmp_path / "cache")
    assert again["resumed"] and again["epochs_run"] == 3


def test_the_corpus_is_featurized_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pianoeval.data.corpus import CorpusSettings
    from pianoeval.training import corpus as corpus_module

    root = corpus(tmp_path / "asap")
    settings, aug = CorpusSettings(str(root), seconds=5.0, windows_per_file=2), AugmentSettings()
    features = FeaturesSettings(max_seq_len=64, frame_rate=10)
    store = corpus_module.build_corpus_store("tokens", settings, aug, features, 0, cache_dir=tmp_path / "cache")
    assert len(store["items"]) == 4 and set(store["augment"]) == set(store["items"])

    def fail(job: tuple) -> list:
        raise AssertionError("the cached corpus was featurized again")

    monkeypatch.setattr(corpus_module, "_file_items", fail)
    again = corpus_module.build_corpus_store("tokens", settings, aug, features, 0, cache_dir=tmp_path / "cache")
    assert all(torch.equal(again["items"][k]["input_ids"], v["input_ids"]) for k, v in store["items"].items())


def test_a_new_featurizer_version_rebuilds_its_kind_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pianoeval.steps.featurize import _cache_key
    from pianoeval.symbolic import featurize
    from pianoeval.training.corpus import corpus_key

    settings, aug, features = CorpusSettings(str(tmp_path)), AugmentSettings(), FeaturesSettings(64, 10)
    midi = str(tmp_path / "a.mid")
    write_performance(Performance([[0.0, 0.5, 60, 80], [0.5, 1.0, 64, 70]]), midi)
    kinds = ("curves", "graphs", "stats")
    before = {k: (corpus_key(k, settings, aug, features, 0), _cache_key(k, midi, features)) for k in kinds}
    monkeypatch.setitem(featurize._KIND_VERSIONS, "curves", featurize.featurizer_version("curves") + 1)
    after = {k: (corpus_key(k, settings, aug, features, 0), _cache_key(k, midi, features)) for k in kinds}
    assert after["curves"][0] != before["curves"][0] and after["curves"][1] != before["curves"][1]
    assert after["graphs"] == before["graphs"] and after["stats"] == before["stats"]


@pytest.mark.parametrize("epochs", [0, 1], ids=["as-is", "continued-on-fold"])
def test_the_fold_pretraining_starts_from_the_corpus_encoder(tmp_path: Path, epochs: int) -> None:
    from pianoeval.steps import pretrain as step
    from pianoeval.steps.pretrain_corpus import run_pretrain_corpus
    from pianoeval.symbolic.featurize import featurize_performance, kind_meta

    root = corpus(tmp_path / "asap")
    config = corpus_config(root, epochs=1)
    config["training"]["pretrain_epochs"] = epochs
    corpus_out = tmp_path / "pretrain_corpus" / "s3" / "encoder.pt"
    run_pretrain_corpus("s3", config, corpus_out, tmp_path / "checkpoints")
    df, manifest = _manifest(tmp_path)
    _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    features = FeaturesSettings(max_seq_len=64, frame_rate=10)
    items = {sid: featurize_performance("curves", perf(20, k), features) for k, sid in enumerate(df["segment_id"])}
    store = tmp_path / "curves.pt"
    torch.save({"kind": "curves", "meta": kind_meta("curves", features), "items": items}, store)
    out = tmp_path / "encoder.pt"
    info = step.run_pretrain("s3", config, 0, manifest, tmp_path / "folds.json", store, out, corpus=corpus_out)
    assert info["corpus"]["path"] == str(corpus_out) and info["learned_from_groups"] == GROUPS[:7]
    fold_state = torch.load(out, weights_only=False)["encoder"]
    corpus_state = torch.load(corpus_out, weights_only=False)["encoder"]
    same = [torch.equal(fold_state[k], corpus_state[k]) for k in corpus_state]
    assert all(same) if epochs == 0 else not all(same), "the fold encoder is not the corpus encoder (continued)"
    # And the fold's supervised model loads it (train_network reads `encoder` into the deep part).
    from pianoeval.training.registry import build_network

    net = build_network("s3_deep", kind_meta("curves", features), FitSettings.from_config(config))
    missing, unexpected = getattr(net, "base", net).load_state_dict(fold_state, strict=False)
    assert not unexpected and not missing


def test_a_mismatched_corpus_encoder_is_refused_with_its_path(tmp_path: Path) -> None:
    from pianoeval.core.errors import InputError
    from pianoeval.steps.pretrain import load_corpus_encoder
    from pianoeval.symbolic.networks import MultiScaleCurveEncoder

    path = tmp_path / "encoder.pt"
    torch.save({"encoder": MultiScaleCurveEncoder(4, hidden=8, layers=1, heads=2).state_dict()}, path)
    with pytest.raises(InputError, match=r"encoder\.pt"):
        load_corpus_encoder(MultiScaleCurveEncoder(4, hidden=16, layers=1, heads=2), path)


def test_fine_tuning_scales_and_freezes_the_deep_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from pianoeval.symbolic.networks import MultiScaleCurveEncoder
    from pianoeval.training.module import PerformanceModule

    module = PerformanceModule(
        MultiScaleCurveEncoder(4, hidden=8, layers=1, heads=2), lr=1e-3, encoder_lr_scale=0.1, encoder_frozen_epochs=1
    )
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))
    module.on_train_epoch_start()  # epoch 0 < 1 frozen epoch
    assert not any(p.requires_grad for p in module.encoder.parameters())
    assert all(p.requires_grad for p in module.heads.parameters())
    monkeypatch.setattr(PerformanceModule, "current_epoch", property(lambda self: 1))
    module.on_train_epoch_start()  # the frozen epoch is over
    assert all(p.requires_grad for p in module.encoder.parameters())


@pytest.mark.parametrize("model", ["s3_deep", "s3"], ids=["deep-only", "wide-and-deep"])
def test_the_encoder_settings_reach_the_encoder_of_deep_only_and_wide_and_deep_networks(model: str) -> None:
    """`encoder_lr_scale` and `encoder_frozen_epochs`, set in the config: a deep-only network's whole
    encoder (all of it is what the corpus weights load into) moves at the scaled rate and is frozen
    first; a wide & deep network's deep part (`.base`) does, its wide part stays with the heads."""
    from pianoeval.training.registry import build_module, build_network

    training = {"lr": 1e-3, "encoder_lr_scale": 0.1, "encoder_frozen_epochs": 2}
    config = validate_config({"training": training, "symbolic": {"hidden": 8, "layers": 2, "heads": 2}})
    settings = FitSettings.from_config(config)
    net = build_network(model, {"n_features": 4, "n_stats": 5}, settings)
    module = build_module(model, net, settings, label_mean=None)
    encoder = net.base if model == "s3" else net
    rest, deep = module.configure_optimizers()["optimizer"].param_groups
    assert {id(p) for p in deep["params"]} == {id(p) for p in encoder.parameters()}
    assert (rest["lr"], deep["lr"]) == pytest.approx((1e-3, 1e-4))
    assert {id(p) for p in module.heads.parameters()} <= {id(p) for p in rest["params"]}
    module.on_train_epoch_start()  # epoch 0 of 2 frozen
    assert not any(p.requires_grad for p in encoder.parameters())
    assert all(p.requires_grad for p in module.heads.parameters())
    if model == "s3":
        assert any(p.requires_grad for n, p in net.named_parameters() if not n.startswith("base."))


# -- the DAG ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4], ids=["2-folds", "4-folds"])
def test_a_dry_run_has_one_corpus_job_per_model_whatever_the_folds(tmp_path: Path, k: int) -> None:
    work = checkout(tmp_path / "repo")
    overlay = tmp_path / "overlay.yaml"
    symbolic = {"models": ["s1", "s1_deep", "s3"], "baselines": ["mean"], "corpus": {"root": str(tmp_path)}}
    overlay.write_text(yaml.safe_dump({"folds": {"k": k}, "symbolic": symbolic, "transcription": {"views": []}}))
    targets = [f"results/train/symbolic/{m}/fold_{f}/metrics.json" for m in ("s1", "s1_deep", "s3") for f in range(k)]
    cmd = [str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", "config/config.yaml", str(overlay), "--"]
    run = subprocess.run([*cmd, *targets], cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = {}
    for line in run.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["pretrain_corpus"] == 2, "one corpus pretraining per encoder (s1 serves s1_deep too)"
    assert counts["pretrain"] == 2 * k
