"""`training.by_model`: a model's own epochs and patience (a deep-only encoder learns for tens of
epochs where a wide & deep one picks its first). The model trains with them, its jobs' resolved config
holds them, and no other model's digest moves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_ablations import CONFIG, _data, write_fold_inputs

from pianoeval.core.config import for_model, validate_config, write_resolved
from pianoeval.core.errors import ConfigError
from pianoeval.core.settings import FitSettings

TRAIN = ("features", "symbolic", "training", "seed")
LONG = {"s3_deep": {"max_epochs": 64, "patience": 16}}


def test_the_settings_merge_one_models_entry() -> None:
    config = validate_config({"training": {"max_epochs": 4, "patience": 2, "by_model": LONG}})
    settings = FitSettings.from_config(config)
    deep = settings.for_model("s3_deep").training
    assert (deep.max_epochs, deep.patience, deep.by_model) == (64, 16, {})
    assert deep.lr == settings.training.lr and deep.batch_size == settings.training.batch_size
    wide = settings.for_model("s3").training
    assert (wide.max_epochs, wide.patience) == (4, 2)
    # Merged once, merged for good: the resolved config of a job says what it ran with.
    assert settings.for_model("s3_deep").for_model("s3_deep").training == deep
    # A fusion variant's entry covers its score-conditioned twin, in the settings and the resolved config.
    fused = validate_config({"training": {"max_epochs": 4, "by_model": {"f1": {"max_epochs": 7}}}})
    assert FitSettings.from_config(fused).for_model("f1_score").training.max_epochs == 7
    assert for_model(fused, "f1_score")["training"]["max_epochs"] == 7
    merged = for_model(config, "s3_deep")["training"]
    assert merged["max_epochs"] == 64 and merged["by_model"] == {} and config["training"]["max_epochs"] == 4


def test_only_the_models_own_digest_moves(tmp_path: Path) -> None:
    plain = validate_config({"training": {"max_epochs": 4}})
    budget = validate_config({"training": {"max_epochs": 4, "by_model": LONG}})
    # Every other model keeps its resolved config (nothing of it reruns); s3_deep gets its values.
    for model in ("s3", "s1_deep", "baseline_ridge"):
        assert write_resolved(budget, tmp_path, TRAIN, model=model) == write_resolved(
            plain, tmp_path, TRAIN, model=model
        )
    deep = write_resolved(budget, tmp_path, TRAIN, model="s3_deep")
    assert deep != write_resolved(plain, tmp_path, TRAIN, model="s3_deep")
    written = yaml.safe_load(deep.read_text())["training"]
    assert (written["max_epochs"], written["patience"], written["by_model"]) == (64, 16, {})


@pytest.mark.parametrize(
    ("by_model", "message"),
    [
        ({"s4_deep": {"max_epochs": 8}}, "training.by_model"),
        ({"s3_deep": {"max_epoch": 8}}, "training.by_model.s3_deep"),
        ({"s3_deep": {"max_epochs": 0}}, "training.by_model.s3_deep.max_epochs"),
    ],
    ids=["unknown-model", "unknown-key", "zero-epochs"],
)
def test_a_typo_is_a_one_line_config_error(by_model: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"training": {"by_model": by_model}}, "exp.yaml")
    text = str(err.value)
    assert message in text and "exp.yaml" in text and "\n" not in text


def test_the_train_step_runs_each_model_with_its_budget(tmp_path: Path) -> None:
    from pianoeval.steps.train import run_train

    training = {**CONFIG["training"], "max_epochs": 1, "patience": 1, "batch_size": 8}
    training["by_model"] = {"s3_deep": {"max_epochs": 3, "patience": 3}}
    config = validate_config({**CONFIG, "training": training})
    args = (config, 0, *write_fold_inputs(_data(2), tmp_path))
    deep = run_train("symbolic", "s3_deep", *args, tmp_path / "deep")
    wide = run_train("symbolic", "s3", *args, tmp_path / "wide")
    # Patience 3 cannot stop 3 epochs early: all of them ran; the wide & deep model ran its one.
    assert deep["epochs_run"] == 3 and wide["epochs_run"] == 1
