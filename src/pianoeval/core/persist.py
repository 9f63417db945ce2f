"""Copy the pipeline's outputs to durable storage and back with rclone (ephemeral GPU instances).

`push` copies the working directory's `persist.include` paths (results, logs, benchmarks and
Snakemake's job records in `.snakemake/metadata` by default) to an rclone remote; `pull` restores
them on a fresh instance. rclone keeps modification times both ways, and that is what lets
Snakemake skip restored jobs: it reruns a job whose output is older than an input, and restored
files keep the order in which they were written. The restored job records let it still rerun a job
whose parameters (the content-addressed config) or shell command changed. The command sequence is
in docs/thunder.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from pianoeval.core.errors import ConfigError, RemoteError

log = logging.getLogger(__name__)

# rclone's exit status when the source folder does not exist (rclone docs, "Exit Code").
_DIRECTORY_NOT_FOUND = 3
# Pushes from one working directory take turns (parallel jobs would write the same remote files).
_LOCK = Path(".snakemake") / "pianoeval-persist.lock"


def rclone_filters(include: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """rclone `--filter` rules (first match wins) selecting the `include` paths of the working directory.

    `include`: files or folders relative to the working directory. `exclude`: rclone glob patterns
    (`results/cache/**`, `*.wav`), applied first. Hidden names are never copied (they are files
    being written: `io.atomic_path` writes `.metrics.json.x1y2.json` and renames it), except inside
    an included hidden folder such as `.snakemake/metadata`.
    """
    paths = [_relative(p) for p in include]
    if not paths:
        raise ConfigError("persist.include is empty: name at least one path to copy")
    # The preflight record checks this machine, not the experiment: a new instance runs its own.
    rules = [f"- {pattern}" for pattern in (*exclude, "/logs/preflight/**")]
    for hidden in (True, False):
        if not hidden:
            rules.append("- .*")
        rules += [rule for p in paths if p.startswith(".") == hidden for rule in (f"+ /{p}", f"+ /{p}/**")]
    rules.append("- *")
    return rules


def _relative(path: str) -> str:
    """`path` as a clean relative POSIX path; raise ConfigError if it leaves the working directory."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
        raise ConfigError(f"persist path {path!r} must be a file or folder inside the working directory")
    return str(p)


@contextlib.contextmanager
def _push_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the working directory's push lock file."""
    lock = root / _LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rclone(args: list[str], remote: str, root: Path) -> subprocess.CompletedProcess[str]:
    """Run `rclone ARGS` in `root` with INFO logging captured; raise RemoteError if rclone is missing."""
    exe = shutil.which("rclone")
    if exe is None:
        raise RemoteError("rclone is not installed: `apt-get install rclone` (scripts/bootstrap.sh does it)", remote)
    return subprocess.run([exe, *args, "--log-level", "INFO"], cwd=root, capture_output=True, text=True)


def _rclone_error(stderr: str, status: int) -> str:
    """The last ERROR line rclone printed (timestamp and level removed), else its exit status."""
    errors = [line for line in stderr.splitlines() if " ERROR : " in line or " Failed to " in line]
    if not errors:
        return f"rclone exited with status {status}"
    return re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (ERROR : )?", "", errors[-1]).strip()


def copy(
    direction: str, remote: str, include: Sequence[str], exclude: Sequence[str] = (), root: Path = Path(".")
) -> int:
    """Copy the `include` paths of `root` to `remote` (`push`) or from it into `root` (`pull`); return
    the number of files copied.

    Both keep modification times (rclone's default); `pull` never overwrites a file that is newer
    here (`--update`), so work redone on this instance survives a late pull. A local folder is a
    valid remote (`/mnt/backup/pianoeval`, or `:local:/path`), as is any configured rclone remote
    (`s3:bucket/pianoeval`).
    """
    if direction not in ("push", "pull"):
        raise ConfigError(f"unknown persist action {direction!r}: push or pull")
    if not remote:
        raise ConfigError("no remote: pass --remote or set persist.remote")
    root = Path(root)
    filters = [arg for rule in rclone_filters(include, exclude) for arg in ("--filter", rule)]
    start = time.perf_counter()
    if direction == "push":
        with _push_lock(root):
            proc = _rclone(["copy", ".", remote, *filters], remote, root)
    else:
        proc = _rclone(["copy", remote, ".", "--update", *filters], remote, root)
    if proc.returncode == _DIRECTORY_NOT_FOUND and direction == "pull":
        raise RemoteError("not found: nothing has been pushed there yet (check the remote's name and path)", remote)
    if proc.returncode != 0:
        raise RemoteError(f"{direction} failed: {_rclone_error(proc.stderr, proc.returncode)}", remote)
    n_files = proc.stderr.count(": Copied (")
    log.info(
        "persist %s: %d files %s %s (%.1f s)",
        direction,
        n_files,
        "to" if direction == "push" else "from",
        remote,
        time.perf_counter() - start,
    )
    return n_files
