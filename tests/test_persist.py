"""`pianoeval persist`: rclone copies of the working directory to a remote and back, with the
modification times Snakemake compares; a plain local folder serves as the remote. Needs the
rclone Debian package (scripts/bootstrap.sh installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pianoeval.cli import main
from pianoeval.core.errors import ConfigError, RemoteError
from pianoeval.core.persist import copy, rclone_filters

DEFAULT_INCLUDE = ["results", "logs", "benchmarks", ".snakemake/metadata"]
# Distinct old times (ns) so that a copy which does not keep them is caught.
T_INPUT, T_OUTPUT = 1_600_000_000_123_456_789, 1_600_000_100_987_654_321


def write(root: Path, rel: str, text: str, mtime_ns: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory as a pipeline leaves it: outputs, a file being written, Snakemake's folders."""
    root = tmp_path / "work"
    write(root, "results/featurize/stats.pt", "input", T_INPUT)
    write(root, "results/train/symbolic/baseline_ridge/fold_0/metrics.json", '{"r2": 0.3}', T_OUTPUT)
    write(root, "results/train/symbolic/baseline_ridge/fold_0/.metrics.json.ab12cd.json", "half written")
    write(root, "results/cache/stats/x.pt", "cache")
    write(root, "logs/train/fold_0.log", "log")
    write(root, ".snakemake/metadata/cmVzdWx0cw==", "job record")
    write(root, ".snakemake/incomplete/cmVzdWx0cw==", "running")
    write(root, ".venv/lib/site.py", "not ours")
    write(root, "Snakefile", "workflow")
    return root


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "pianoeval-persist.lock"}


def test_push_then_pull_restores_outputs_with_their_modification_times(workdir: Path, tmp_path: Path) -> None:
    remote, fresh = tmp_path / "remote", tmp_path / "fresh"
    assert copy("push", str(remote), DEFAULT_INCLUDE, root=workdir) == 5
    fresh.mkdir()
    assert copy("pull", str(remote), DEFAULT_INCLUDE, root=fresh) == 5
    expected = {
        "results/featurize/stats.pt",
        "results/train/symbolic/baseline_ridge/fold_0/metrics.json",
        "results/cache/stats/x.pt",
        "logs/train/fold_0.log",
        ".snakemake/metadata/cmVzdWx0cw==",
    }
    # Half-written files, running-job markers, the venv and the workflow itself stay behind.
    assert files(remote) == expected
    assert files(fresh) == expected
    for rel in expected:
        assert (fresh / rel).stat().st_mtime_ns == (workdir / rel).stat().st_mtime_ns, rel
        assert (fresh / rel).read_text() == (workdir / rel).read_text()
    # The order Snakemake compares (output newer than input) survives the round trip.
    out = fresh / "results/train/symbolic/baseline_ridge/fold_0/metrics.json"
    assert out.stat().st_mtime_ns > (fresh / "results/featurize/stats.pt").stat().st_mtime_ns


def test_push_is_incremental_and_pull_keeps_newer_local_work(workdir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    copy("push", str(remote), DEFAULT_INCLUDE, root=workdir)
    assert copy("push", str(remote), DEFAULT_INCLUDE, root=workdir) == 0  # nothing new
    write(workdir, "results/train/symbolic/baseline_ridge/fold_1/metrics.json", "{}")
    assert copy("push", str(remote), DEFAULT_INCLUDE, root=workdir) == 1
    # Work redone here after the push is newer than the remote copy: a pull must not undo it.
    pushed = (remote / "logs/train/fold_0.log").stat().st_mtime_ns
    redone = write(workdir, "logs/train/fold_0.log", "rerun here", pushed + 3600 * 10**9)
    copy("pull", str(remote), DEFAULT_INCLUDE, root=workdir)
    assert redone.read_text() == "rerun here"


def test_exclude_and_explicit_paths(workdir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    copy("push", str(remote), ["results"], exclude=["results/cache/**"], root=workdir)
    assert files(remote) == {
        "results/featurize/stats.pt",
        "results/train/symbolic/baseline_ridge/fold_0/metrics.json",
    }
    # A single file can be named too, and pulled alone.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    copy("pull", str(remote), ["results/featurize/stats.pt"], root=fresh)
    assert files(fresh) == {"results/featurize/stats.pt"}


@pytest.mark.parametrize("path", ["/etc", "../elsewhere", ".", ""], ids=["absolute", "parent", "dot", "empty"])
def test_paths_outside_the_working_directory_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="inside the working directory"):
        rclone_filters([path])


def test_filters_keep_hidden_temporaries_out_but_included_hidden_folders_in() -> None:
    rules = rclone_filters(["results", ".snakemake/metadata"], ["*.wav"])
    assert rules[0] == "- *.wav"  # excludes win over includes
    assert rules.index("+ /.snakemake/metadata/**") < rules.index("- .*") < rules.index("+ /results/**")
    assert rules[-1] == "- *"


def test_cli_round_trip_and_one_line_errors(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = tmp_path / "remote"
    monkeypatch.chdir(workdir)
    assert main(["persist", "push", "--remote", str(remote), "logs"]) == 0
    assert files(remote) == {"logs/train/fold_0.log"}

    # An rclone remote that is not configured: one line naming it, status 1.
    capsys.readouterr()
    assert main(["persist", "push", "--remote", "nosuchremote:bucket/x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: nosuchremote:bucket/x: push failed:")

    # Pulling from where nothing was pushed is an error, not a silent empty restore.
    assert main(["persist", "pull", "--remote", str(tmp_path / "empty")]) == 1
    assert "nothing has been pushed there yet" in capsys.readouterr().err

    # After a pipeline job (--warn-only) a failed push is a warning and exit status 0.
    assert main(["persist", "push", "--warn-only", "--remote", "nosuchremote:bucket/x"]) == 0

    # No remote at all.
    assert main(["persist", "push"]) == 1
    assert "no remote" in capsys.readouterr().err


def test_missing_rclone_is_a_clear_error(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RemoteError, match="rclone is not installed"):
        copy("push", str(tmp_path / "remote"), DEFAULT_INCLUDE, root=workdir)
