"""Provenance written beside every training output: config, seed, package version, git revision."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from pianoeval import __version__
from pianoeval.core.io import atomic_path, write_json
from pianoeval.core.layout import FoldDir

# Set by the workflow (rules/common.smk) to the experiment's run_name for every job it starts.
EXPERIMENT_ENV = "PIANOEVAL_EXPERIMENT"


def git_revision(repo: str | Path | None = None) -> str | None:
    """The git commit of the source tree (with '-dirty' if modified), or None outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def write_provenance(out_dir: str | Path, config: dict[str, Any], seed: int, **extra: Any) -> None:
    """Write the fold folder `out_dir`'s `config.yaml` (resolved config) and `provenance.json` (core.layout.FoldDir);
    the experiment's name (`run_name`, kept out of the rules' config digests) comes from the workflow's environment."""
    import torch

    from pianoeval.core.config import plain_config

    folder = FoldDir(out_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder.config) as tmp:
        tmp.write_text(yaml.safe_dump(plain_config(config), sort_keys=False))
    write_json(
        {
            "experiment": os.environ.get(EXPERIMENT_ENV),
            "pianoeval_version": __version__,
            "git_revision": git_revision(),
            "seed": seed,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "host": platform.node(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        },
        folder.provenance,
    )
