"""Warm start for a local workflow's many short jobs: one process imports the heavy libraries once and
forks a child per `pianoeval` command.

Each job of the workflow is a fresh `pianoeval` process, and a fresh process pays the imports before it
computes anything: torch, then Lightning (which loads torchmetrics, which loads transformers), 6-10 s on
this 2-core machine, against 1-10 s of work for most demo jobs. With warm start on, Snakemake starts a
server (rules/common.smk, `onstart`) that imports those modules and listens on a Unix socket; a job's
`pianoeval` sends its arguments, working directory, environment and standard streams there, and the
server forks a child that runs the command exactly as the process would have (the same `cli.main`, the
job's files, its environment, its streams), sends back the exit status and exits. The client waits for
it, passes on SIGINT, SIGTERM and SIGHUP, and exits with the child's status; when the client is killed,
the child is killed too.

Opt-in and local only (`PIANOEVAL_WARM_START=1`, set by `make demo`): a GPU job must not fork from a
process that may have touched CUDA, and a cluster job cannot reach the socket. Whenever the server
cannot be reached, or was started from other code (the package's files changed since), the command
runs in its own process as always. Snakemake's benchmark files then still time each job's wall clock,
but their CPU and memory columns count the client, not the child.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from pianoeval.core.io import current_umask

# Set by the workflow for its jobs: the server's socket. Unset, empty or unreachable: run cold.
SOCKET_ENV = "PIANOEVAL_WARM_SOCKET"
# Set by the user (`make demo` does): the workflow starts a server for its local jobs.
ENABLE_ENV = "PIANOEVAL_WARM_START"
# What the server imports before it listens: the libraries every network job loads, and the steps.
PRELOAD = (
    "torch",
    "lightning.pytorch",
    "pianoeval.steps.featurize",
    "pianoeval.steps.pretrain",
    "pianoeval.steps.train",
    "pianoeval.steps.train_inner",
    "pianoeval.steps.fuse",
)
_LENGTH = struct.Struct("!I")
_STATUS = struct.Struct("!i")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def code_key() -> str:
    """What the server's imports were made from: the interpreter and every file of the package (path,
    size, modification time). A client whose key differs runs cold, so an edit is never served stale."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(sys.executable.encode())
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def wanted(local: bool, gpus: int) -> bool:
    """Whether a workflow run starts a server: asked for (ENABLE_ENV), its jobs on this machine, no GPU.
    A child forked from a process that may have touched CUDA cannot use CUDA, and a cluster node cannot
    reach the socket."""
    return os.environ.get(ENABLE_ENV, "") not in ("", "0") and local and gpus == 0


def socket_path(workdir: Path) -> Path:
    """A short path (Unix sockets allow about 100 bytes) unique to this working directory and run."""
    tag = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:12]
    return Path("/tmp") / f"pianoeval-warm-{tag}-{os.getpid()}.sock"


# -- the client: a job's `pianoeval` process ----------------------------------------------------------


def run_warm(argv: Sequence[str]) -> int | None:
    """Run `pianoeval argv` in a child of the warm server; its exit status, or None to run cold."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not os.path.exists(path):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        job = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "umask": current_umask()}
        request = json.dumps({**job, "key": code_key()}).encode()
        socket.send_fds(conn, [_LENGTH.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        answer = _recv_exact(conn, _STATUS.size)
    except OSError:
        conn.close()
        return None
    if answer is None or _STATUS.unpack(answer)[0] < 0:
        # No answer or a refusal (the package changed since the server started): nothing ran yet.
        conn.close()
        return None
    return _wait_for_child(conn)


def _wait_for_child(conn: socket.socket) -> int:
    """Forward our signals to the child until it sends its exit status. A child ended by a forwarded
    signal sends none: this process then ends by that signal too, as the job's own process would have."""
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        with contextlib.suppress(OSError):
            conn.sendall(bytes([signum]))

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    status = _recv_exact(conn, _STATUS.size)
    conn.close()
    if status is not None:
        return _STATUS.unpack(status)[0]
    if forwarded:
        signal.signal(forwarded[-1], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[-1])
    print("error: the warm-start child ended without an exit status (killed?)", file=sys.stderr)
    return 1


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = conn.recv(n - len(data))
        except InterruptedError:
            continue
        if not chunk:
            return None
        data += chunk
    return data


# -- the workflow's side: start and stop ----------------------------------------------------------------


def start_server(log_path: Path) -> subprocess.Popen:
    """Start a server for this process's jobs (this process: Snakemake); its jobs find it through
    SOCKET_ENV, set here in this process's environment, which local jobs inherit."""
    path = socket_path(Path.cwd())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "pianoeval.cli", "warm-serve", "--socket", str(path), "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C in the terminal is for Snakemake, which stops the server
        )
    os.environ[SOCKET_ENV] = str(path)
    return server


def stop_server(server: subprocess.Popen | None) -> None:
    os.environ.pop(SOCKET_ENV, None)
    if server is not None and server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


# -- the server ---------------------------------------------------------------------------------------


def serve(
    path: Path,
    parent: int | None,
    run: Callable[[Sequence[str]], int],
    preload: Sequence[str] = PRELOAD,
    idle_timeout: float = 3600,
) -> None:
    """Import `preload`, listen on `path`, fork a child that calls `run(argv)` per request; stop when
    `parent` (the Snakemake process) is gone, after `idle_timeout` seconds without a request, or on SIGTERM."""
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # an optional extra not installed: its jobs import it themselves
            print(f"warm start: {module} not preloaded ({exc})", file=sys.stderr)
    key = code_key()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    listener.bind(str(tmp))
    listener.listen(16)
    os.replace(tmp, path)  # clients see the socket only once it accepts
    listener.settimeout(2.0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"warm start: serving on {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_timeout and (parent is None or alive(parent)):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            _handle(conn, key, run, listener)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, another user's
        return True
    return True


def _handle(conn: socket.socket, key: str, run: Callable[[Sequence[str]], int], listener: socket.socket) -> None:
    conn.settimeout(10.0)
    fds: list[int] = []
    try:
        head, fds, _flags, _addr = socket.recv_fds(conn, _LENGTH.size, 3)
        if len(head) < _LENGTH.size:
            head += _recv_exact(conn, _LENGTH.size - len(head)) or b""
        body = _recv_exact(conn, _LENGTH.unpack(head)[0])
        request = json.loads(body or b"{}")
        if request.get("key") != key or len(fds) != 3:
            conn.sendall(_STATUS.pack(-1))
            return
        print(f"warm start: pianoeval {' '.join(request['argv'])}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Accepted, before the fork: the child's exit status, sent later on the same socket, must not race
        # this answer to the client (if the fork fails, the socket closes and the client reports it).
        conn.sendall(_STATUS.pack(0))
        if os.fork() == 0:
            listener.close()
            _child(conn, fds, request, run)  # never returns
    except (OSError, ValueError, struct.error) as exc:
        print(f"warm start: a request failed ({exc})", file=sys.stderr, flush=True)
    finally:
        conn.close()
        for fd in fds:
            os.close(fd)


def _child(conn: socket.socket, fds: list[int], request: dict, run: Callable[[Sequence[str]], int]) -> None:
    """In the forked child: become the job's process, run its command, report, exit."""
    status = 1
    try:
        os.setpgrp()  # the server's process group is not the job's
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        _set_threads()
        sys.argv = ["pianoeval", *request["argv"]]
        conn.settimeout(None)
        threading.Thread(target=_relay_signals, args=(conn,), daemon=True).start()
        status = status_of(run, request["argv"])
    except BaseException:  # what a fresh process would print for an uncaught exception
        traceback.print_exc()
    finally:
        flush_streams()
        with contextlib.suppress(OSError):
            conn.sendall(_STATUS.pack(status))
        os._exit(status)


def status_of(run: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """`run(argv)`'s exit status, as a fresh process running it would end: SystemExit's code (argparse's
    --help and usage errors; a message is printed, status 1), 1 with the traceback printed for an uncaught
    exception; then the exit handlers
    (logging's flush, tempfile's and multiprocessing's clean-up) run, as at a normal exit."""
    try:
        status = run(argv)
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)  # as the interpreter prints SystemExit("message")
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    return status


def gc_after_imports() -> None:
    """Turn Python's cyclic garbage collector back on after `entry` started a command with it off, once the
    command's imports are done: what they loaded is frozen first (`gc.freeze`: module-level objects that live
    as long as the process, never collected, now never traversed either). Importing torch and the scoring
    code with the collector on ran 4-5 full collections over their ~1 M objects, 0.1-0.2 s of a 2 s
    `pianoeval score`. Nothing if the collector is on already (a command run by `main` in a test, a
    warm-start child)."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def flush_streams() -> None:
    """Flush stdout and stderr, ignoring a closed or broken stream (before os._exit)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _set_threads() -> None:
    """The job's OMP_NUM_THREADS (Snakemake sets it to the job's threads), which the OpenMP runtime read
    from the server's environment when it was loaded; without it the server's default, as a fresh
    process with the server's environment would have."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        import torch

        torch.set_num_threads(int(value))


def _relay_signals(conn: socket.socket) -> None:
    """The client's forwarded signals, raised in this process. The client gone without one (SIGKILL, as
    from an out-of-memory killer or a killed process group): end the same way, at once."""
    while True:
        try:
            data = conn.recv(1)
        except OSError:
            data = b""
        os.kill(os.getpid(), data[0] if data else signal.SIGKILL)
        if not data:
            return
