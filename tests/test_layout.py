"""The results layout: one type names a fold folder's files and results/'s folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from pianoeval.core.errors import InputError
from pianoeval.core.layout import FoldDir, Results


def test_fold_dir_names_every_file(tmp_path: Path) -> None:
    fold = Results(tmp_path).fold("symbolic", "s3", 2)
    assert fold.path == tmp_path / "train" / "symbolic" / "s3" / "fold_2"
    assert fold.metrics.name == "metrics.json" and fold.predictions.name == "predictions.csv"
    assert fold.embeddings.name == "embeddings.pt" and fold.model_spec.name == "model_spec.json"
    assert fold.config.name == "config.yaml" and fold.provenance.name == "provenance.json"
    assert fold.last_checkpoint == fold.path / "checkpoints" / "last.ckpt"
    assert FoldDir.of(fold.metrics) == fold
    assert Results(tmp_path).fold("fusion", "f2", 0).path == tmp_path / "fuse" / "f2" / "fold_0"


def test_checkpoint_prefers_best_and_names_the_folder_without_any(tmp_path: Path) -> None:
    fold = FoldDir(tmp_path / "fold_0")
    with pytest.raises(InputError, match="no checkpoint") as info:
        fold.checkpoint()
    assert info.value.path == str(fold.path)
    fold.checkpoints.mkdir(parents=True)
    fold.last_checkpoint.write_bytes(b"x")
    assert fold.checkpoint() == fold.last_checkpoint
    fold.best_checkpoint.write_bytes(b"y")
    assert fold.checkpoint() == fold.best_checkpoint
    fold.model.write_bytes(b"z")  # the declared weights come first (best/last: older folders, bundles)
    assert fold.checkpoint() == fold.model == fold.path / "model.ckpt"


def test_rules_declare_the_fold_files_by_their_layout_names() -> None:
    """The train, train_inner and fuse rules declare every file FoldDir names (train_inner: no
    predictions or embeddings, it writes oof.pt), and the curves as logs."""
    import re

    rules = Path(__file__).resolve().parents[1] / "rules"
    text = (rules / "train.smk").read_text() + (rules / "fusion.smk").read_text()
    for rule in ("train", "train_inner", "fuse"):
        body = re.search(rf"^rule {rule}:\n(.*?)^    benchmark:|^rule {rule}:\n(.*?)^    conda:", text, re.M | re.S)
        block = next(g for g in body.groups() if g)
        declared = set(re.findall(r'fold_\{fold\}(?:/inner_\{inner\})?/([\w./]+)"', block))
        expected = set(FoldDir.FILES.values()) | {FoldDir.CURVES, FoldDir.HPARAMS}
        if rule == "train_inner":
            expected = expected - {"predictions.csv", "embeddings.pt"} | {"oof.pt"}
        assert declared == expected, (rule, declared ^ expected)


def test_folds_in_fold_order_and_a_missing_model_is_one_error(tmp_path: Path) -> None:
    results = Results(tmp_path)
    for k in (10, 2, 0):
        results.fold("audio", "probe", k).path.mkdir(parents=True)
    assert [f.path.name for f in results.folds("audio", "probe")] == ["fold_0", "fold_2", "fold_10"]
    with pytest.raises(InputError, match="no trained folds of audio/a1"):
        results.folds("audio", "a1")


def test_of_refuses_a_file_that_is_not_a_fold_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a fold folder's file"):
        FoldDir.of(tmp_path / "winner.json")
