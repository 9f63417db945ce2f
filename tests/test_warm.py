"""Warm start (core/warm.py): a job's `pianoeval` runs in a child forked from a server that imported the
libraries once, with the job's working directory, environment, streams and exit status, its signals passed
on, and a cold start whenever the server is missing or was started from other code.

The servers here preload nothing heavy (`--preload json`, or none): what is under test is the process
plumbing, not the imports; tests/test_rerun_scope.py runs a whole small demo warm, as `make demo` does."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from pianoeval.core import warm
from pianoeval.data.demo import generate_demo_corpus
from pianoeval.data.manifest import write_manifest

BIN = Path(sys.executable).parent


def wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A `pianoeval warm-serve` process: (its socket, its log)."""
    path, log = tmp_path / "warm.sock", tmp_path / "warm.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "pianoeval"), "warm-serve", "--socket", str(path), "--preload", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(path.exists)
    yield path, log
    proc.terminate()
    proc.wait(timeout=10)
    assert not path.exists(), "the server left its socket behind"


def pianoeval(cwd: Path, *args: str, socket: Path | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(warm.SOCKET_ENV, None)
    if socket is not None:
        env[warm.SOCKET_ENV] = str(socket)
    cmd = [str(BIN / "pianoeval"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_command_runs_warm_as_it_runs_cold(server: tuple[Path, Path], tmp_path: Path) -> None:
    path, log = server
    corpus = generate_demo_corpus(tmp_path / "demo", n_pieces=4, n_performances=3, seconds=2.0, seed=0)
    write_manifest(corpus, tmp_path / "manifest.parquet")
    outputs = {}
    for name, socket in (("cold", None), ("warm", path)):
        cwd = tmp_path / name
        cwd.mkdir()
        # Relative paths: the child works in the job's folder.
        done = pianoeval(cwd, "folds", "--manifest", "../manifest.parquet", "--out", "folds.json", socket=socket)
        assert done.returncode == 0, done.stderr
        outputs[name] = (cwd / "folds.json").read_bytes()
        # An expected failure: the one-line error on the job's stderr, status 1.
        failed = pianoeval(cwd, "folds", "--manifest", "missing.parquet", "--out", "x.json", socket=socket)
        assert (failed.returncode, failed.stdout) == (1, "")
        assert failed.stderr.strip() == "error: missing.parquet: manifest not found; run the prepare step first"
        # argparse's exits: a usage error (status 2), --version on the job's stdout (status 0).
        assert pianoeval(cwd, "train", socket=socket).returncode == 2
        version = pianoeval(cwd, "--version", socket=socket)
        assert (version.returncode, version.stdout.startswith("pianoeval ")) == (0, True)
    assert outputs["warm"] == outputs["cold"]
    served = log.read_text()
    assert served.count("warm start: pianoeval ") == 4, served
    assert "warm start: pianoeval folds --manifest ../manifest.parquet --out folds.json" in served


def test_a_server_started_from_other_code_is_not_used(
    server: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, log = server
    monkeypatch.setenv(warm.SOCKET_ENV, str(path))
    monkeypatch.setattr(warm, "code_key", lambda: "edited since")
    assert warm.run_warm(["--version"]) is None  # refused: the caller runs the command itself
    monkeypatch.setenv(warm.SOCKET_ENV, str(tmp_path / "no.sock"))
    assert warm.run_warm(["--version"]) is None  # no server
    assert "warm start: pianoeval" not in log.read_text()


def _sleep_and_record_pid(argv: Sequence[str]) -> int:
    Path(argv[0]).write_text(str(os.getpid()))
    time.sleep(120)
    return 0


def _exit_at_once(argv: Sequence[str]) -> int:
    return int(argv[0])


def _raise(argv: Sequence[str]) -> int:
    raise RuntimeError(f"unexpected in {argv[0]}")


def _serve(path: Path, run: Callable[[Sequence[str]], int]) -> Iterator[Path]:
    """A server in a forked process, its children running `run`."""
    proc = multiprocessing.get_context("fork").Process(target=warm.serve, args=(path, None, run, ()), daemon=True)
    proc.start()
    wait_for(path.exists)
    yield path
    proc.terminate()
    proc.join(10)


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Path]:
    """A server whose children record their pid in the file named by argv[0], then sleep."""
    yield from _serve(tmp_path / "sleep.sock", _sleep_and_record_pid)


def test_a_child_that_ends_at_once_reports_its_own_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's acceptance goes out before the fork, so a child's fast status cannot be taken for it."""
    for path in _serve(tmp_path / "fast.sock", _exit_at_once):
        monkeypatch.setenv(warm.SOCKET_ENV, str(path))
        assert [warm.run_warm([str(k % 4)]) for k in range(40)] == [k % 4 for k in range(40)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_job_killed_kills_its_child(sleeper: Path, tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM reaches the child through the client, which then ends by it too (as a cold job would);
    SIGKILL cannot be caught, and the child ends when it sees the client gone."""
    pid_file = tmp_path / "child.pid"
    code = f"import sys; from pianoeval.core import warm; sys.exit(warm.run_warm([{str(pid_file)!r}]))"
    client = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, warm.SOCKET_ENV: str(sleeper)},
    )
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    child = int(pid_file.read_text())
    assert child != client.pid and warm.alive(child)
    client.send_signal(sig)
    assert client.wait(timeout=30) == -sig
    wait_for(lambda: not warm.alive(child), timeout=10)


def test_an_uncaught_exception_prints_its_traceback_on_the_jobs_stderr_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for path in _serve(tmp_path / "raise.sock", _raise):
        monkeypatch.setenv(warm.SOCKET_ENV, str(path))
        assert warm.run_warm(["featurize"]) == 1
    assert "RuntimeError: unexpected in featurize" in capfd.readouterr().err


def test_only_a_local_cpu_run_that_asks_for_it_starts_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm.ENABLE_ENV, raising=False)
    assert not warm.wanted(local=True, gpus=0)
    for value in ("", "0"):
        monkeypatch.setenv(warm.ENABLE_ENV, value)
        assert not warm.wanted(local=True, gpus=0)
    monkeypatch.setenv(warm.ENABLE_ENV, "1")
    assert warm.wanted(local=True, gpus=0)
    assert not warm.wanted(local=True, gpus=1)  # the thunder profile reserves gpu=1
    assert not warm.wanted(local=False, gpus=0)  # a cluster executor


EXITING = """
import atexit, sys
from pianoeval.cli import entry
import pianoeval.cli as cli

def main(argv):
    atexit.register(lambda: print("exit handler ran", file=sys.stderr))
    print("output", end="")  # still buffered when the process leaves
    if argv == ["raise"]:
        raise ValueError("boom")
    if argv == ["usage"]:
        raise SystemExit(2)
    if argv == ["message"]:
        raise SystemExit("error: a message")
    return int(argv[0])

cli.main = main
entry()
"""


@pytest.mark.parametrize(("argv", "status"), [(["0"], 0), (["3"], 3), (["raise"], 1), (["usage"], 2), (["message"], 1)])
def test_the_console_script_leaves_with_mains_status_flushed_and_exit_handlers_run(
    argv: list[str], status: int
) -> None:
    """`pianoeval` (cli.entry) skips the interpreter's teardown, and nothing else of a normal exit: the
    status (an uncaught exception's traceback and 1, SystemExit's code or message), buffered output, exit
    handlers."""
    proc = subprocess.run([sys.executable, "-c", EXITING, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == status
    assert proc.stdout == "output"
    assert "exit handler ran" in proc.stderr
    assert ("ValueError: boom" in proc.stderr) == (argv == ["raise"])
    assert ("error: a message" in proc.stderr) == (argv == ["message"])


def test_the_console_script_imports_with_the_collector_off_and_turns_it_on(tmp_path: Path) -> None:
    """`entry` starts with the cyclic garbage collector off: every command but score turns it on (what the CLI
    imported frozen) before it runs;
    score turns it on once its imports are done, with what they loaded frozen (never collected or traversed).
    Outside `entry` (a test calling main) nothing changes."""
    missing = tmp_path / "take.wav"
    code = """
import gc, sys
from pianoeval import cli
seen = []
real = cli.warm.gc_after_imports
def spy():
    real()
    seen.append((gc.isenabled(), gc.get_freeze_count() > 0, "torch" in sys.modules))
cli.warm.gc_after_imports = spy
if sys.argv[1] == "entry":
    sys.argv = ["pianoeval", *sys.argv[2:]]
    import atexit
    atexit.register(lambda: print(seen, gc.isenabled(), flush=True))
    cli.entry()
print(cli.main(sys.argv[2:]), seen, gc.isenabled(), gc.get_freeze_count() > 0)
"""

    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        return out.stdout.strip()

    score = ["score", str(missing), "--results", str(tmp_path), "--out", str(tmp_path / "s.json")]
    # score: on after torch and the scoring code were imported (then the missing file is refused).
    assert run("entry", *score) == "[(True, True, True)] True"
    # Another command: on before it runs (and imports torch).
    assert run("entry", "report", "--results", str(tmp_path), "--out", str(tmp_path / "r.html")) == (
        "[(True, True, False)] True"
    )
    # main alone (as tests call it): the collector was on and stays on, nothing frozen.
    assert run("main", *score) == "1 [(True, False, True)] True False"
