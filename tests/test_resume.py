"""Resuming training: only checkpoints of the very same run are resumed; stale ones are removed."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pianoeval.core.config import validate_config
from pianoeval.core.settings import FitSettings
from pianoeval.training.fit import _same_run


def _settings(**training: float) -> FitSettings:
    """What fit_module keys its checkpoints by: the run's settings, built from a validated config."""
    return FitSettings.from_config(validate_config({"training": {"lr": 1e-3, **training}}))


def test_same_run_resumes_only_identical_runs(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    net = nn.Linear(4, 2)
    assert not _same_run(ckpt, _settings(), net, seed=1)  # first run: nothing to resume
    (ckpt / "last.ckpt").write_bytes(b"state")
    assert _same_run(ckpt, _settings(), net, seed=1)  # a killed run restarted (settings built anew): resume
    assert (ckpt / "last.ckpt").exists()


def test_changed_config_shape_or_seed_discards_stale_checkpoints(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    net = nn.Linear(4, 2)
    base = _settings()
    _same_run(ckpt, base, net, seed=1)
    for config, other, seed in (
        (_settings(lr=2e-3), net, 1),
        (base, nn.Linear(4, 3), 1),
        (base, net, 2),
        ({"training": {"lr": 1e-3}}, net, 1),  # a plain record (pretrain_corpus keys its runs by one)
    ):
        (ckpt / "last.ckpt").write_bytes(b"stale")
        assert not _same_run(ckpt, config, other, seed=seed)
        assert not (ckpt / "last.ckpt").exists()
        _same_run(ckpt, base, net, seed=1)  # back to the base run for the next case


def test_atomic_outputs_are_readable_by_others(tmp_path: Path) -> None:
    import os
    import stat

    from pianoeval.core.io import write_json

    old = os.umask(0o022)
    try:
        path = write_json({"a": 1}, tmp_path / "out.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
