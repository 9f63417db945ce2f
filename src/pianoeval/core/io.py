"""Atomic file output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pianoeval.core.errors import InputError, OutputError

# What to tell a person when an output cannot be written, by errno.
_WRITE_HINTS: dict[int, str] = {
    errno.ENOSPC: "free some space (or write elsewhere) and rerun",
    errno.EDQUOT: "free some space (or write elsewhere) and rerun",
    errno.EACCES: "make the folder writable or choose another output folder",
    errno.EPERM: "make the folder writable or choose another output folder",
    errno.EROFS: "the file system is read-only; choose another output folder",
}


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    An OSError while creating, writing or renaming (disk full, read-only folder) becomes an
    `OutputError` naming `target`; the temporary file is removed, so nothing partial is left.
    """
    target = Path(target)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent
        )
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600; give the result the mode a plain open() would (umask applies).
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, target)
    except OSError as exc:
        raise output_error(exc, target) from exc
    finally:
        if tmp_path is not None and (tmp_path.exists() or tmp_path.is_symlink()):
            tmp_path.unlink()


def current_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def output_error(exc: OSError, target: str | Path) -> OutputError:
    """An OutputError for a failed write of `target`: the OS reason and what to do about it."""
    reason = exc.strerror or str(exc)
    hint = _WRITE_HINTS.get(exc.errno or 0)
    return OutputError(f"cannot write ({reason})" + (f"; {hint}" if hint else ""), target)


def save_torch(obj: Any, target: str | Path) -> Path:
    """`torch.save` `obj` to `target` atomically; return the path.

    Through a Python file object, so a full disk raises OSError (ENOSPC), reported as an
    OutputError, rather than torch's bare RuntimeError.
    """
    import torch

    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(target)


def write_json(obj: Any, target: str | Path) -> Path:
    """Write `obj` as indented JSON to `target` atomically; return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(target)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising InputError with the file name when it is missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at line {exc.lineno})", path) from exc


def read_input_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of an input file; InputError naming it (`what`: "MIDI file", ...) if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} ({exc.strerror or exc})", path) from exc


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths for json.dumps."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
