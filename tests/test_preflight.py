"""The preflight: what it checks follows the config, one line per problem, and a real
`snakemake --profile thunder results/fusion/winner.json` here stops there and starts nothing else.

Here the hub is unreachable (HF_HUB_OFFLINE=1 keeps the test from downloading on a machine that can
reach it) and there is no GPU: the thunder run must stop on exactly those two lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pianoeval.cli import main
from pianoeval.core.config import load_config, validate_config, write_resolved
from pianoeval.steps.preflight import needs, planned_checks, run_preflight

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = REPO / "config" / "experiments"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]


def bare_remote(tmp_path: Path) -> str:
    """A local git repository standing in for a dataset's GitHub URL."""
    work = tmp_path / "dataset"
    work.mkdir()
    (work / "README").write_text("data")
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-q", "-m", "d"], check=True)
    return str(work)


def test_what_a_run_needs_follows_its_config() -> None:
    assert needs(validate_config({}), gpus=0, remote=None) == []  # the demo on a CPU: no preflight
    assert needs(validate_config({}), gpus=1, remote="store:b") == ["GPU", "persist remote"]
    assert needs(load_config(EXPERIMENTS / "percepiano_cpu.yaml"), 0, None) == ["datasets"]
    assert needs(load_config(EXPERIMENTS / "percepiano_muq.yaml"), 1, None) == [
        "released MuQ weights",
        "datasets",
        "GPU",
    ]
    checks = [what for what, _ in planned_checks(load_config(EXPERIMENTS / "percepiano_muq.yaml"), 1, "r:x")]
    assert checks == [
        "MuQ weights OpenMuQ/MuQ-large-msd-iter",
        "TransKun",
        "percepiano at ../shared/data/percepiano",
        "asap at ../shared/data/asap",
        "asap at ../shared/data/asap_full",
        "CUDA with 1 GPU(s)",
        "persist remote r:x",
    ]


def test_every_problem_is_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # resources/ of this folder: nothing fetched there
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    config = validate_config(
        {
            "data": {
                "source": "percepiano",
                "percepiano_root": str(tmp_path / "no_percepiano"),
                "asap_root": str(tmp_path / "no_asap"),
                "fetch_sources": {
                    "percepiano": {"url": bare_remote(tmp_path)},
                    "asap": {"url": str(tmp_path / "x.git")},
                },
            },
            "audio": {"models": ["a1"], "backbone": "muq", "muq_name_or_path": str(tmp_path / "no_muq")},
            "transcription": {"views": []},
            "robustness": {"transcribe_conditions": []},
        }
    )
    path = write_resolved(
        config,
        tmp_path / "config",
        ("data", "render", "audio", "transcription", "robustness", "unlabelled_audio", "seed"),
    )
    out = tmp_path / "preflight" / "ok.json"
    remote = str(read_only / "remote") if os.geteuid() != 0 else str(tmp_path / "a_file")
    (tmp_path / "a_file").write_text("not a folder")
    code = main(["preflight", "--config", str(path), "--gpus", "1", "--remote", remote, "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    problems = [line for line in lines if line.startswith("preflight: ")]
    assert code == 1 and not out.exists()
    assert (
        problems[0].startswith(f"preflight: MuQ weights {tmp_path}/no_muq: ")
        and "MuQ weights folder not found" in problems[0]
    )
    assert (
        problems[1].startswith(f"preflight: asap at {tmp_path}/no_asap: asap: ") and "cannot be fetched" in problems[1]
    )
    expected_cuda = [] if torch.cuda.is_available() else ["preflight: CUDA with 1 GPU(s): the run reserves 1 GPU(s)"]
    assert [p[: len(e)] for p, e in zip(problems[2:], expected_cuda, strict=False)] == expected_cuda
    assert problems[-1].startswith(f"preflight: persist remote {remote}: ") and "not writable" in problems[-1]
    assert len(problems) == 3 + len(expected_cuda)  # percepiano's local remote answers: no line for it
    assert lines[-1] == f"error: preflight: {len(problems)} problem(s) above; no other job was started"


def test_a_run_that_has_everything_passes_and_writes_its_report(tmp_path: Path) -> None:
    config = validate_config(
        {"data": {"source": "percepiano", "percepiano_root": str(REPO.parent / "shared/data/percepiano")}}
    )
    report = run_preflight(config, tmp_path / "ok.json", gpus=0, remote=str(tmp_path / "remote"))
    assert report["problems"] == [] and (tmp_path / "ok.json").is_file()
    assert set(report["checks"]) == {
        "TransKun",  # the default robustness check transcribes
        f"percepiano at {REPO.parent}/shared/data/percepiano",
        f"persist remote {tmp_path}/remote",
    }


@pytest.mark.slow(reason="runs Snakemake with the thunder profile in a scratch copy until the preflight stops it")
def test_the_thunder_run_stops_at_preflight_here_and_starts_nothing_else(tmp_path: Path) -> None:
    from test_experiments import checkout

    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run(["bash", str(REPO / "scripts" / "link_profiles.sh")], env=env, check=True, capture_output=True)
    work = checkout(tmp_path / "repo")
    run = subprocess.run(
        ["snakemake", "--profile", "thunder", "results/fusion/winner.json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0
    problems = [line for line in out.splitlines() if line.startswith("preflight: ")]
    assert problems[0].startswith("preflight: MuQ weights OpenMuQ/MuQ-large-msd-iter: cannot load MuQ weights")
    assert "no network" in problems[0]
    if not torch.cuda.is_available():
        assert problems[1].startswith("preflight: CUDA with 1 GPU(s): the run reserves 1 GPU(s) (resources gpu=1)")
    assert len(problems) == (1 if torch.cuda.is_available() else 2), problems  # data and TransKun are fine here
    assert "error: preflight: " in out
    # Nothing started: the preflight runs before the first job (onstart), so no rule's log or output.
    assert not (work / "logs").exists() or not any((work / "logs").rglob("*.log"))
    assert sorted(p.name for p in (work / "results").iterdir()) == ["config", "experiment.json"]
    started = [line for line in out.splitlines() if line.startswith(("rule ", "localrule "))]
    assert started == [], started
