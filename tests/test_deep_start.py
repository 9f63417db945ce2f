"""`symbolic.deep_start`: a wide & deep encoder's deep part starts from the fold's deep-only model (the
same rows, its own budget), stacking's inner models from the inner deep-only ones; the leak guard counts
the start model's labels, so an outer deep model cannot start an inner fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_ablations import CONFIG, META, _data, write_fold_inputs

from pianoeval.core.config import validate_config
from pianoeval.core.errors import InputError
from pianoeval.core.settings import FitSettings

TRAINING = {**CONFIG["training"], "max_epochs": 1, "patience": 1, "batch_size": 8}


def _config(hidden: int = 16) -> dict:
    return validate_config({**CONFIG, "symbolic": {**CONFIG["symbolic"], "hidden": hidden}, "training": TRAINING})


@pytest.fixture(scope="module")
def deep_fold(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[Path, Path, Path]]:
    """A trained s3_deep fold folder and the fold's inputs (manifest, folds, curves)."""
    from pianoeval.steps.train import run_train

    folder = tmp_path_factory.mktemp("deep_start")
    inputs = write_fold_inputs(_data(3), folder)
    run_train("symbolic", "s3_deep", _config(), 0, *inputs, folder / "s3_deep")
    return folder / "s3_deep", inputs


def test_the_deep_part_starts_as_the_deep_only_model(deep_fold: tuple[Path, tuple]) -> None:
    from pianoeval.training.registry import build_network
    from pianoeval.training.start_weights import ENCODER_PREFIX, load_start, read_start

    deep, _ = deep_fold
    net = build_network("s3", META, FitSettings.from_config(_config()))
    assert load_start(net, deep / "model.ckpt") == (0, 0)
    trained = torch.load(deep / "model.ckpt", weights_only=False)["state_dict"]
    base = net.base.state_dict()
    assert base and all(torch.equal(v, trained[ENCODER_PREFIX + k]) for k, v in base.items())
    start = read_start(deep / "model.ckpt")
    groups = yaml.safe_load((deep / "metrics.json").read_text())["learned_from_groups"]
    assert start.strict and start.learned_from == start.labels_from == groups


def test_the_wide_and_deep_fold_records_what_its_start_learned(deep_fold: tuple[Path, tuple], tmp_path: Path) -> None:
    from pianoeval.steps.train import run_train

    deep, inputs = deep_fold
    metrics = run_train("symbolic", "s3", _config(), 0, *inputs, tmp_path / "s3", pretrained=deep / "model.ckpt")
    deep_groups = yaml.safe_load((deep / "metrics.json").read_text())["learned_from_groups"]
    assert set(deep_groups) <= set(metrics["learned_from_groups"]) and metrics["n_parameters"] > 0


def test_the_start_file_is_read_once(
    deep_fold: tuple[Path, tuple], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leak guard and the fit share one read of the start model: what it checked is what is loaded."""
    from pianoeval.steps.train import run_train
    from pianoeval.training import start_weights

    deep, inputs = deep_fold
    reads: list[Path] = []
    real = start_weights.read_start
    monkeypatch.setattr(start_weights, "read_start", lambda path: reads.append(Path(path)) or real(path))
    run_train("symbolic", "s3", _config(), 0, *inputs, tmp_path / "s3", pretrained=deep / "model.ckpt")
    assert reads == [deep / "model.ckpt"]


def test_a_start_of_another_width_is_one_line(deep_fold: tuple[Path, tuple]) -> None:
    from pianoeval.training.registry import build_network
    from pianoeval.training.start_weights import load_start

    deep, _ = deep_fold
    net = build_network("s3", META, FitSettings.from_config(_config(hidden=24)))
    with pytest.raises(InputError, match="start weights do not fit this model") as err:
        load_start(net, deep / "model.ckpt")
    assert err.value.path == str(deep / "model.ckpt") and "\n" not in str(err.value)


def test_an_outer_deep_model_cannot_start_an_inner_fit(deep_fold: tuple[Path, tuple], tmp_path: Path) -> None:
    """The outer deep-only model learned the labels of every inner part: the inner guard refuses it."""
    from pianoeval.data.leaks import ArtifactLeakError
    from pianoeval.steps.train_inner import run_train_inner

    deep, inputs = deep_fold
    config = validate_config({**_config(), "stacking": {"inner_folds": 2}})
    with pytest.raises(ArtifactLeakError, match="inner held-out"):
        run_train_inner("symbolic", "s3", config, 0, 0, *inputs, tmp_path / "inner", pretrained=deep / "model.ckpt")
    assert not (tmp_path / "inner").exists()


def test_an_inner_deep_model_starts_the_inner_fit(deep_fold: tuple[Path, tuple], tmp_path: Path) -> None:
    """What the workflow runs for a stacked wide & deep winner: the inner deep-only model, then the inner
    wide & deep model from it; the guard passes and records the inner rows only."""
    from pianoeval.steps.train_inner import run_train_inner

    _, inputs = deep_fold
    config = validate_config({**_config(), "stacking": {"inner_folds": 2}})
    run_train_inner("symbolic", "s3_deep", config, 0, 1, *inputs, tmp_path / "deep")
    wide = run_train_inner(
        "symbolic", "s3", config, 0, 1, *inputs, tmp_path / "wide", pretrained=tmp_path / "deep" / "model.ckpt"
    )
    deep = yaml.safe_load((tmp_path / "deep" / "metrics.json").read_text())
    assert wide["labels_from_groups"] == deep["labels_from_groups"]
    assert not set(wide["labels_from_groups"]) & set(wide["held_out_groups"])
    assert (tmp_path / "wide" / "oof.pt").exists()


def test_turning_it_on_reruns_only_the_wide_and_deep_models(tmp_path: Path) -> None:
    from pianoeval.core.config import write_resolved

    sections = ("features", "symbolic", "training", "seed")
    off = validate_config({"symbolic": {"models": ["s3", "s3_deep"]}})
    on = validate_config({"symbolic": {"models": ["s3", "s3_deep"], "deep_start": True}})
    for model in ("s3_deep", "baseline_blend"):
        assert write_resolved(on, tmp_path, sections, model=model) == write_resolved(
            off, tmp_path, sections, model=model
        )
    assert write_resolved(on, tmp_path, sections, model="s3") != write_resolved(off, tmp_path, sections, model="s3")


def _dry_run(work: Path, overlay: dict, *targets: str) -> tuple[int, str]:
    from test_experiments import snakemake

    (work / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    run = snakemake(
        work, "-n", "-p", "--cores", "1", "--configfile", "config/config.yaml", "overlay.yaml", "--", *targets
    )
    return run.returncode, run.stdout + run.stderr


def test_the_workflow_trains_the_deep_only_model_first(tmp_path: Path) -> None:
    from test_experiments import checkout

    work = checkout(tmp_path / "repo")
    overlay = {"symbolic": {"models": ["s3", "s3_deep"], "deep_start": True}}
    code, out = _dry_run(
        work,
        overlay,
        "results/train/symbolic/s3/fold_0/metrics.json",
        "results/train_inner/symbolic/s3/fold_0/inner_1/oof.pt",
    )
    assert code == 0, out[-3000:]
    commands = [line for line in out.splitlines() if line.startswith("Shell command: ")]
    s3 = next(c for c in commands if "pianoeval train symbolic s3 " in c)
    assert "--pretrained results/train/symbolic/s3_deep/fold_0/model.ckpt" in s3
    inner = next(c for c in commands if "pianoeval train-inner symbolic s3 " in c)
    assert "--pretrained results/train_inner/symbolic/s3_deep/fold_0/inner_1/model.ckpt" in inner
    assert any("pianoeval train-inner symbolic s3_deep " in c and "--inner 1" in c for c in commands)
    # Without its deep-only model in symbolic.models: one line, before any job.
    code, out = _dry_run(work, {"symbolic": {"models": ["s3"], "deep_start": True}}, "results/folds/folds.json")
    assert code != 0 and "symbolic.deep_start: s3 start from s3_deep, which symbolic.models lacks" in out


def test_start_weights_are_read_onto_the_cpu(deep_fold: tuple[Path, tuple], monkeypatch: pytest.MonkeyPatch) -> None:
    """A start file written on a GPU must not land on a GPU (or fail on a CPU-only machine) before the
    network copies it: the read maps it onto the CPU."""
    from pianoeval.training import start_weights

    deep, _ = deep_fold
    seen: list[object] = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("map_location")) or real(*a, **k))
    start = start_weights.read_start(deep / "model.ckpt")
    assert seen == ["cpu"] and all(v.device.type == "cpu" for v in start.state.values())
