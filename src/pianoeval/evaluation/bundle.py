"""The model bundle: one file holding everything `pianoeval score` needs, without a results folder.

A bundle is a tar archive laid out as a small results tree (the served models' fold folders with their
weights, spec and config; the winners' files) plus `served.json` (`evaluation/served.py`), the model
card, and `bundle.json` first: the format name and version and every other member's size and SHA-256.
Opening one checks all of that before anything is scored, so a truncated download, a flipped byte or
a bundle from another format version fails on one line naming the bundle.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path

FORMAT = "pianoeval-bundle"
# Bump when a reader of the previous version would misread a new bundle.
VERSION = 1
MANIFEST = "bundle.json"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def write_bundle(files: Mapping[str, bytes], manifest: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write `files` ({member name: bytes}) as a bundle at `out` (atomically), `bundle.json` first:
    `manifest` plus the format, version and each member's size and SHA-256. Returns that manifest."""
    import json

    record = {
        "format": FORMAT,
        "version": VERSION,
        **manifest,
        "files": {name: {"bytes": len(data), "sha256": sha256(data)} for name, data in sorted(files.items())},
    }
    members = {MANIFEST: json.dumps(record, indent=2, sort_keys=False).encode(), **dict(sorted(files.items()))}
    with atomic_path(out, suffix=".tar") as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: same models, same bytes
            tar.addfile(info, io.BytesIO(data))
    return record


def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict[str, Any]:
    """bundle.json of an open archive, its format and version checked."""
    import json

    try:
        handle = tar.extractfile(MANIFEST)
        record = json.loads(handle.read()) if handle else None
    except KeyError:
        record = None
    except (ValueError, tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"corrupt bundle: unreadable {MANIFEST} ({exc})", path) from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(
            f"not a pianoeval bundle (no {MANIFEST} of format {FORMAT!r}); make one with pianoeval export",
            path,
        )
    if record.get("version") != VERSION:
        raise InputError(
            f"bundle format version {record.get('version')!r}, but this pianoeval reads version {VERSION}; "
            "export the bundle again with this version",
            path,
        )
    return record


def read_bundle(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(bundle.json, {member: bytes}) of a bundle, every member checked against its recorded size and hash."""
    if not path.is_file():
        raise InputError("bundle not found", path)
    try:
        with tarfile.open(path, "r:") as tar:
            record = _read_manifest(tar, path)
            files: dict[str, bytes] = {}
            for name, want in record["files"].items():
                try:
                    handle = tar.extractfile(name)
                except KeyError:
                    handle = None
                if handle is None:
                    raise InputError(f"corrupt bundle: {name} is missing", path)
                data = handle.read()
                if len(data) != want["bytes"] or sha256(data) != want["sha256"]:
                    raise InputError(f"corrupt bundle: {name} does not match its recorded checksum", path)
                files[name] = data
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"not a readable bundle ({exc}); export it again", path) from exc
    return record, files


@contextmanager
def unpacked_bundle(path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, bundle.json) of a checked bundle unpacked into a temporary folder, removed afterwards."""
    record, files = read_bundle(path)
    with tempfile.TemporaryDirectory(prefix="pianoeval_bundle_") as tmp:
        root = Path(tmp)
        for name, data in files.items():
            target = (root / name).resolve()
            if root.resolve() not in target.parents:  # no absolute or `..` member escapes the folder
                raise InputError(f"corrupt bundle: member {name!r} points outside the bundle", path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        yield root, record
