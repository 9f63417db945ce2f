"""Kill the workflow mid-training (SIGKILL to its process group, as an OOM killer or a lost
machine would) and rerun it: Snakemake marks the job incomplete, and the rerun resumes Lightning
from the last checkpoint instead of starting the training again."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pianoeval.core.io import read_json

pytestmark = pytest.mark.slow(reason="runs Snakemake in a subprocess, kills a training job and reruns it")

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TARGET = "results/train/symbolic/s3/fold_0/metrics.json"
MAX_EPOCHS = 100  # a few seconds of training: time to kill it after its first checkpoint
# The demo, shrunk to the jobs the target needs: no audio, no pretraining, one small model.
OVERLAY = {
    "data": {"demo": {"n_pieces": 3, "n_performances": 4, "seconds": 3.0}},
    "folds": {"k": 3},
    "render": {"enabled": False},
    "symbolic": {"models": ["s3"], "baselines": ["mean"], "hidden": 16, "layers": 1, "heads": 2, "pretrain": False},
    "training": {"max_epochs": MAX_EPOCHS, "patience": MAX_EPOCHS, "batch_size": 4},
}


def _snakemake(work: Path, overlay: Path, *args: str) -> list[str]:
    """The command line: targets and flags first, since --configfile takes every argument after it."""
    return [
        str(VENV_BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "1", *args,
        "--configfile", str(REPO / "config" / "config.yaml"), str(overlay),
    ]  # fmt: skip


def test_killed_training_is_incomplete_and_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    work = tmp_path / "work"
    fold = work / "results" / "train" / "symbolic" / "s3" / "fold_0"
    # Lightning's resumable checkpoints: a cache beside the fold folder (the rule's --checkpoint-dir).
    cache = work / "results" / "cache" / "train" / "symbolic" / "s3" / "fold_0"
    last = cache / "last.ckpt"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    first_log = tmp_path / "first.log"

    with open(first_log, "w") as out:
        proc = subprocess.Popen(
            _snakemake(work, overlay, TARGET), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 900
        # Lightning writes checkpoints atomically: once last.ckpt exists it is whole.
        while not last.exists():
            assert proc.poll() is None, "the run ended before training checkpointed:\n" + first_log.read_text()
            assert time.monotonic() < deadline, "no checkpoint after 15 minutes"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job, which share the process group
        proc.wait()

    killed_after = int(torch.load(last, weights_only=False)["epoch"])
    assert killed_after < MAX_EPOCHS - 1
    assert not (fold / "metrics.json").exists()
    marker = work / ".snakemake" / "incomplete" / base64.b64encode(TARGET.encode()).decode()
    assert marker.exists(), "Snakemake did not record the killed job as incomplete"

    # The kill left Snakemake's lock behind; a person runs --unlock, then reruns.
    subprocess.run(_snakemake(work, overlay, "--unlock"), env=env, check=True, capture_output=True, timeout=300)
    rerun = subprocess.run(
        _snakemake(work, overlay, TARGET, "--rerun-incomplete"), env=env, capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not marker.exists()

    metrics = read_json(fold / "metrics.json")
    assert metrics["epochs_run"] == MAX_EPOCHS
    log = (work / "logs" / "train" / "symbolic" / "s3" / "fold_0.log").read_text()
    assert "resuming from results/cache/train/symbolic/s3/fold_0/last.ckpt" in log
    assert "Restored all states from the checkpoint" in log
    # The progress lines show where training picked up: the epoch after the checkpoint, not epoch 1.
    epochs = [int(line.split(" epoch ")[1].split("/")[0]) for line in log.splitlines() if "train s3 epoch " in line]
    assert epochs == list(range(killed_after + 2, MAX_EPOCHS + 1))

    # And it ends exactly where an uninterrupted run ends: rerun the same job from scratch and compare
    # every metric (but the wall time) and every prediction, bit for bit.
    # The final weights too: the best checkpoint may predate the kill, the last one never does.
    resumed = {
        "metrics": metrics,
        "predictions": (fold / "predictions.csv").read_bytes(),
        "weights": torch.load(last, weights_only=False)["state_dict"],
    }
    shutil.rmtree(fold)
    shutil.rmtree(cache)
    fresh = subprocess.run(_snakemake(work, overlay, TARGET), env=env, capture_output=True, text=True, timeout=900)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    uninterrupted = read_json(fold / "metrics.json")
    assert "resuming from" not in (work / "logs" / "train" / "symbolic" / "s3" / "fold_0.log").read_text()
    for run in (resumed["metrics"], uninterrupted):
        run.pop("wall_s")
    assert resumed["metrics"] == uninterrupted
    assert resumed["predictions"] == (fold / "predictions.csv").read_bytes()
    weights = torch.load(last, weights_only=False)["state_dict"]
    assert weights.keys() == resumed["weights"].keys()
    assert all(torch.equal(weights[k], resumed["weights"][k]) for k in weights)
