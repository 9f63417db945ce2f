"""The folds rule: leak-checked cross-validation folds of the manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pianoeval.core.errors import InputError

log = logging.getLogger(__name__)


def run_folds(config: dict[str, Any], manifest: Path, out: Path) -> dict[str, Any]:
    """Make folds for the configured protocol, check them for leaks, and write them."""
    from pianoeval.core.settings import FoldsSettings
    from pianoeval.data.folds import check_folds, make_folds, write_folds
    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    cfg = FoldsSettings.from_config(config)
    try:
        folds = make_folds(df, k=cfg.k, protocol=cfg.protocol, seed=config["seed"], dev_fraction=cfg.dev_fraction)
    except InputError as exc:  # too few labelled groups: a fact about this manifest, so name it
        raise InputError(exc.message, exc.path or manifest) from exc
    check_folds(folds, df)
    write_folds(folds, out)
    for fold in folds["folds"]:
        log.info(
            "fold %d: train %d, dev %d, val %d",
            fold["fold"],
            len(fold["train"]),
            len(fold["dev"]),
            len(fold["val"]),
        )
    return folds
