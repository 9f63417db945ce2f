"""Same seed and config, same numbers: pretraining and training on CPU are bit-for-bit repeatable,
and a run interrupted and resumed from `last.ckpt` ends exactly where the uninterrupted run does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.io import read_json

MODELS = ("s1", "s2", "s3")
KINDS = {"s1": "tokens", "s2": "graphs", "s3": "curves"}
SMALL = {
    "symbolic": {"hidden": 16, "layers": 1, "heads": 2},
    "training": {"max_epochs": 4, "pretrain_epochs": 1, "batch_size": 4, "patience": 4},
    "folds": {"k": 2},
    "features": {"max_seq_len": 256},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Manifest, folds and the three feature stores of a small demo corpus."""
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.folds import make_folds, write_folds
    from pianoeval.data.manifest import write_manifest
    from pianoeval.steps.featurize import run_featurize

    root = tmp_path_factory.mktemp("determinism")
    config = validate_config(SMALL)
    df = generate_demo_corpus(root / "demo", n_pieces=4, n_performances=4, seconds=3.0, seed=3)
    paths = {"manifest": write_manifest(df, root / "manifest.parquet"), "folds": root / "folds.json"}
    write_folds(make_folds(df, k=2, seed=3, dev_fraction=0.25), paths["folds"])
    for kind in KINDS.values():
        paths[kind] = root / f"{kind}.pt"
        run_featurize(kind, config, paths["manifest"], paths[kind], root / "cache")
    return paths


def _train(model: str, config: dict[str, Any], inputs: dict[str, Path], out: Path, pretrained: Path | None = None):
    """run_train on fold 0; return (metrics without the wall time, predictions.csv bytes)."""
    from pianoeval.steps.train import run_train

    run_train("symbolic", model, config, 0, inputs["manifest"], inputs["folds"], inputs[KINDS[model]], out, pretrained)
    metrics = read_json(out / "metrics.json")
    metrics.pop("wall_s")
    return metrics, (out / "predictions.csv").read_bytes()


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_and_config_give_identical_results(model: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    from pianoeval.steps.pretrain import run_pretrain

    config = validate_config(SMALL)
    encoders = []
    for run in ("a", "b"):
        out = tmp_path / run / "encoder.pt"
        run_pretrain(model, config, 0, inputs["manifest"], inputs["folds"], inputs[KINDS[model]], out)
        encoders.append(torch.load(out, weights_only=False)["encoder"])
    assert encoders[0].keys() == encoders[1].keys()
    for name, value in encoders[0].items():
        assert torch.equal(value, encoders[1][name]), name

    a = _train(model, config, inputs, tmp_path / "a" / "train", tmp_path / "a" / "encoder.pt")
    b = _train(model, config, inputs, tmp_path / "b" / "train", tmp_path / "b" / "encoder.pt")
    assert a[0] == b[0]  # every metric, exactly (floats included)
    assert a[1] == b[1]  # every prediction, to the last digit
    emb = [torch.load(tmp_path / run / "train" / "embeddings.pt", weights_only=False)["z"] for run in ("a", "b")]
    assert torch.equal(emb[0], emb[1])

    # The seed is what makes them equal: another seed gives other predictions.
    other = _train(model, validate_config({**SMALL, "seed": 7}), inputs, tmp_path / "c" / "train")
    assert other[1] != a[1]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resumed_run_ends_where_the_uninterrupted_run_does(
    ema_decay: float,
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a weight average too (training.ema_decay): its shadow and the raw weights both resume."""
    from pianoeval.training.progress import EpochLog

    config = validate_config({**SMALL, "training": {**SMALL["training"], "ema_decay": ema_decay}})
    reference = _train("s3", config, inputs, tmp_path / "reference")

    class Killed(Exception):
        """Stands in for a kill between epochs."""

    start = EpochLog.on_train_epoch_start

    def die_at_epoch_2(self: EpochLog, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == 2:
            raise Killed
        start(self, trainer, pl_module)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(EpochLog, "on_train_epoch_start", die_at_epoch_2)
    with pytest.raises(Killed):
        _train("s3", config, inputs, out)
    monkeypatch.undo()
    assert not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1

    with caplog.at_level("INFO"):
        resumed = _train("s3", config, inputs, out)
    assert any(r.getMessage().startswith("resuming from") for r in caplog.records)
    # Only epochs 3 and 4 ran again (the progress lines count them).
    epochs = [r.getMessage().split(" (")[0] for r in caplog.records if r.getMessage().startswith("train s3 epoch")]
    assert epochs == ["train s3 epoch 3/4", "train s3 epoch 4/4"]
    assert resumed == reference
    # Not only the selected (best) epoch: the weights after the last epoch are the same too.
    final = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for run in (tmp_path / "reference", out)
    ]
    for name, value in final[0].items():
        assert torch.equal(value, final[1][name]), name
    if ema_decay:
        raw = [
            torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["ema_raw"]
            for run in (tmp_path / "reference", out)
        ]
        assert raw[0].keys() == raw[1].keys() and raw[0]
        for name, value in raw[0].items():
            assert torch.equal(value, raw[1][name]), name
            assert not torch.equal(value, final[0][name]), name  # the average is not the raw weights


@pytest.mark.parametrize("budget", [{"patience": 4}, {"max_epochs": 12, "patience": 1}], ids=["max_epochs", "stopped"])
def test_a_finished_run_whose_outputs_were_lost_is_not_trained_again(
    budget: dict[str, int],
    inputs: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training ended (all epochs, or early stopping) but the outputs are gone, e.g. killed while
    predicting: the rerun reuses the cached chosen epoch and trains no epoch more (Lightning would),
    without building the loaders and trainer it does not need."""
    from pianoeval.training import fit

    config = validate_config({**SMALL, "training": {**SMALL["training"], **budget}})
    out = tmp_path / "run"
    reference = _train("s3", config, inputs, out)
    epochs = reference[0]["epochs_run"]
    # The case each parameter is for (deterministic under the seed).
    assert epochs == 4 if "max_epochs" not in budget else epochs < budget["max_epochs"]
    for name in ("metrics.json", "predictions.csv", "model.ckpt"):
        (out / name).unlink()

    def no_trainer(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished run built its loaders and trainer again")

    monkeypatch.setattr(fit, "_fold_loaders", no_trainer)
    monkeypatch.setattr(fit, "_trainer", no_trainer)
    with caplog.at_level("INFO"):
        again = _train("s3", config, inputs, out)
    messages = [r.getMessage() for r in caplog.records]
    assert any("had finished" in m for m in messages)
    assert not any(m.startswith("train s3 epoch") for m in messages)
    assert again == reference  # the same epoch chosen, the same epochs_run, every prediction


def test_the_chosen_checkpoint_is_read_once(inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The chosen epoch's checkpoint is loaded once: into the module, and slimmed from that read into
    model.ckpt (an A1 checkpoint holds MuQ), and model.ckpt holds CPU tensors whatever trained it."""
    config = validate_config({**SMALL, "training": {**SMALL["training"], "max_epochs": 2}})
    reads: list[str] = []
    real = torch.load

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(Path(path).name if isinstance(path, (str, Path)) else "<buffer>")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    _train("s3", config, inputs, tmp_path / "run")
    assert reads.count("best.ckpt") == 1, reads
    state = real(tmp_path / "run" / "model.ckpt", weights_only=False)["state_dict"]
    assert state and all(v.device.type == "cpu" for v in state.values())
