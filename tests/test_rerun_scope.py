"""After a finished demo, a changed setting reruns only the jobs that read it and what follows them:
each rule's config holds only the sections it reads (rules/common.smk), and no label is in any digest.

The demo is shrunk to a few minutes on 2 cores (every rule type but transcription), run for real in a
copy of the workflow; the changes are then dry-run against its job records."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_experiments import checkout

from pianoeval.core import warm

BIN = Path(sys.executable).parent
TARGETS = ["results/fusion/winner.json", "results/report/index.html"]
# The demo (config/config.yaml) at a smaller size, stacked explicitly as a test may.
SMALL = {
    "data": {"demo": {"n_pieces": 6, "n_performances": 4, "seconds": 3.0}},
    "folds": {"k": 2},
    # Out-of-fold stacking needs at least two segment groups in every training split.
    "stacking": {"inner_folds": 2},
    "transcription": {"views": []},
    "symbolic": {"models": ["s3"], "baselines": ["mean"], "hidden": 16, "layers": 1, "heads": 2},
    "audio": {"hidden": 16},
    "fusion": {"models": ["f2"]},
    "robustness": {"audio_per_fold": 2, "transcribe_conditions": []},
    "training": {"max_epochs": 1, "pretrain_epochs": 1, "batch_size": 4},
}


def makefile_line(name: str) -> list[str]:
    """A `make demo` setting, the Makefile's line `NAME = ...` split into words."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    found = re.search(rf"^{name} = (.+)$", makefile, re.MULTILINE)
    assert found, f"the Makefile has no {name} line"
    return found.group(1).split()


# `make demo`'s thread settings (tiny jobs on one thread each, two at a time) and its environment (warm start).
DEMO_THREADS = makefile_line("DEMO_THREADS")
DEMO_ENV = dict(word.split("=", 1) for word in makefile_line("DEMO_ENV"))


def run(work: Path, *args: str, overlay: Path) -> str:
    env = {**os.environ, **DEMO_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [
        str(BIN / "snakemake"),
        "--cores",
        "2",
        *DEMO_THREADS,
        *args,
        "--configfile",
        "config/config.yaml",
        str(overlay),
        "--",
        *TARGETS,
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def jobs(dry_run: str) -> dict[str, set[str]]:
    """{rule: {its jobs' wildcards lines}} that a dry run would execute (checkpoint jobs included:
    Snakemake prints them as `checkpoint compare:`)."""
    out: dict[str, set[str]] = {}
    rule = None
    for line in dry_run.splitlines():
        if line.startswith(("rule ", "localrule ", "checkpoint ")):
            rule = line.split()[1].rstrip(":")
            out.setdefault(rule, set())
        elif rule and line.strip().startswith("wildcards:"):
            out[rule].add(line.strip())
    return out


def changed(tmp_path: Path, name: str, section: str, key: str, value: object) -> Path:
    overlay = {**SMALL, section: {**SMALL.get(section, {}), key: value}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


@pytest.mark.slow(reason="runs a small experiment to the end with Snakemake, then dry-runs a changed fusion setting")
def test_a_fusion_setting_reruns_only_fusion_and_what_follows(tmp_path: Path) -> None:
    work = checkout(tmp_path / "repo")
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(SMALL))
    run(work, overlay=small)
    # As in `make demo`, the jobs ran in children of the warm-start server, which stopped with the run.
    assert DEMO_ENV == {warm.ENABLE_ENV: "1"}, DEMO_ENV
    served = (work / "logs" / "warm_start.log").read_text()
    assert served.count("warm start: pianoeval train ") >= 2 * SMALL["folds"]["k"], served
    sockets = re.findall(r"warm start: serving on (\S+)", served)
    assert len(sockets) == 1 and not Path(sockets[0]).exists(), served
    assert "Nothing to be done" in run(work, "-n", overlay=small)

    fusion = jobs(run(work, "-n", overlay=changed(tmp_path, "fusion", "fusion", "hidden", 32)))
    # Every fuse job, then exactly what follows them: the fusion comparison (the track comparisons it
    # sits behind are finished, so the dry run knows it), robustness, the final winner and the report.
    assert set(fusion) == {"fuse", "compare", "robustness", "fusion", "report"}, set(fusion)
    assert fusion["fuse"] == {f"wildcards: fusion=f2, fold={k}" for k in range(SMALL["folds"]["k"])}
    assert fusion["compare"] == {"wildcards: track=fusion"}

    # An audio setting that only the audio models read: their training and what follows, no embedding
    # (embed is given the audio keys its backbone reads, rules/features.smk) and no symbolic job.
    audio = jobs(run(work, "-n", overlay=changed(tmp_path, "audio", "audio", "hidden", 24)))
    assert not {"featurize", "pretrain", "render", "embed"} & set(audio), set(audio)
    assert all("track=audio" in w for w in audio["train"]), audio["train"]
    assert "track=symbolic" not in " ".join(audio.get("compare", set()))
