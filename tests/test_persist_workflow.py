"""Resuming on a fresh instance, for real: a Snakemake run whose jobs push to a remote (a local
folder), the instance thrown away, a fresh checkout that pulls, and Snakemake finding nothing to do.

Runs the workflow on the demo config in temporary folders (a copy of the workflow, as a fresh clone
would have it), never in the repository's results/. 1.5-2.5 min on 2 shared cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, and the `pianoeval` the rules call
# Three upstream rules (demo, prepare, featurize stats), the folds and one training fold.
TARGETS = ["results/folds/folds.json", "results/train/symbolic/baseline_ridge/fold_0/metrics.json"]
NOTHING_TO_DO = "Nothing to be done (all requested files are present and up to date)."


def checkout(dest: Path) -> Path:
    """A fresh copy of the workflow (what a clone on a new instance holds): no results, no .snakemake."""
    dest.mkdir(parents=True)
    for name in ("Snakefile", "rules", "config", "workflow"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    return dest


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> str:
    """Run a command in `cwd` with the venv first on PATH; return stdout+stderr, fail the test on error."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


# No transcription views: the training fold then needs no rendering (a small DAG, as the test is about
# persistence). The override joins any --config of the call (a second --config would replace the first).
NO_VIEWS = "transcription={views: []}"


def snakemake(cwd: Path, *args: str) -> str:
    rest = list(args)
    if "--config" in rest:
        rest.insert(rest.index("--config") + 1, NO_VIEWS)
    else:
        rest += ["--config", NO_VIEWS]
    return run([str(BIN / "snakemake"), "--cores", "1", *TARGETS, *rest], cwd)


def jobs_to_run(dry_run: str) -> set[str]:
    """Rule names a dry run would execute (its `rule NAME:` blocks)."""
    return {line.split()[1].rstrip(":") for line in dry_run.splitlines() if line.startswith(("rule ", "localrule "))}


def mtimes(root: Path, sub: str = "results") -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in (root / sub).rglob("*") if p.is_file()}


@pytest.mark.slow(reason="two Snakemake workflow runs (train, push, pull into a fresh copy, dry run)")
def test_fresh_instance_restores_finished_jobs_and_skips_them(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    persist = f'persist={{remote: "{remote}"}}'

    # Instance 1 runs the jobs with persistence on; the training job pushes when it finishes,
    # the workflow once more when it ends.
    first = checkout(tmp_path / "instance1")
    log = snakemake(first, "--config", persist)
    assert "persist push: " in log  # from the train job's own push (pianoeval persist push)
    assert "persist: pushed " in log  # from the workflow's onsuccess push
    metrics = "results/train/symbolic/baseline_ridge/fold_0/metrics.json"
    assert (remote / metrics).read_text() == (first / metrics).read_text()
    assert any((remote / ".snakemake" / "metadata").iterdir())
    written = mtimes(first)
    assert metrics in written and "results/featurize/stats.pt" in written
    shutil.rmtree(first)  # the instance is gone

    # Instance 2: a fresh checkout restores everything, with the original modification times.
    second = checkout(tmp_path / "instance2")
    run([str(BIN / "pianoeval"), "persist", "pull", "--remote", str(remote)], second)
    assert mtimes(second) == written
    assert NOTHING_TO_DO in snakemake(second, "-n")
    # The restored job records still catch a changed parameter (the training section's config).
    overlay = tmp_path / "longer.yaml"
    overlay.write_text("training:\n  max_epochs: 31\n")
    changed = snakemake(second, "-n", "--configfile", "config/config.yaml", str(overlay))
    assert jobs_to_run(changed) == {"train_baseline"}
    assert "Params have changed" in changed

    # Instance 3 restores only the outputs, without Snakemake's records: the modification times
    # alone are enough to skip the finished jobs...
    third = checkout(tmp_path / "instance3")
    run([str(BIN / "pianoeval"), "persist", "pull", "--remote", str(remote), "results", "logs"], third)
    assert not (third / ".snakemake").exists()
    assert NOTHING_TO_DO in snakemake(third, "-n")
    # ...and they are what decides: an input newer than the training output reruns the training.
    os.utime(third / "results/featurize/stats.pt")
    assert jobs_to_run(snakemake(third, "-n")) == {"train_baseline"}
