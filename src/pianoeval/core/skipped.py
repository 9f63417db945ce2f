"""Keep going past bad files: per-file steps (render, transcribe, featurize, embed) skip what they cannot read.

Each skipped file is logged as a warning and listed, with the reason, in the step's skipped-files
report: a declared output of its rule, given to the step as `--skipped`
(`results/featurize/<kind>.skipped.json`, `results/render/skipped.json`, ...). Downstream steps drop
those rows. The step still fails, with nothing written, when every file fails or when more than
`max_skipped_fraction` (config) of them do: then something is wrong with the setup, not a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pianoeval.core.errors import InputError, PianoevalError

log = logging.getLogger(__name__)

# How many skipped files an error message quotes.
_QUOTED = 3


def skip_entry(key: str, path: str | Path | None, exc: BaseException) -> dict[str, str]:
    """One row of a skipped-files report: `{"key", "path", "reason"}`.

    Expected bad input (a PianoevalError) gives its message; anything else its type and message,
    and its traceback goes to the log, since it is more likely a bug than a bad file.
    """
    if isinstance(exc, PianoevalError):
        reason = exc.message
        path = exc.path or path  # the file at fault (a performance's score MIDI, say)
    else:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("unexpected error on %s", path or key, exc_info=exc)
    return {"key": key, "path": "" if path is None else str(path), "reason": reason}


def warn_skipped(entry: dict[str, str]) -> None:
    """Log one skipped file as a warning (one line: the file and the reason)."""
    log.warning("skipped %s: %s", entry["path"] or entry["key"], entry["reason"])


def check_skipped(
    step: str, skipped: list[dict[str, str]], total: int, max_fraction: float, source: str | Path
) -> None:
    """Raise InputError naming `source` if every one of `total` files, or more than `max_fraction`, was skipped."""
    if not skipped:
        return
    share = len(skipped) / max(total, 1)
    quoted = "; ".join(f"{s['path'] or s['key']}: {s['reason']}" for s in skipped[:_QUOTED])
    more = f"; ... ({len(skipped)} in all, each in the log)" if len(skipped) > _QUOTED else ""
    if len(skipped) >= total:
        which = "the only file" if total == 1 else f"all {total} files"
        raise InputError(f"{step}: {which} failed ({quoted}{more})", source)
    if share > max_fraction:
        raise InputError(
            f"{step}: {len(skipped)} of {total} files failed ({100 * share:.0f}%, more than"
            f" max_skipped_fraction {max_fraction:g}): {quoted}{more}",
            source,
        )


def skipped_report(step: str, n_done: int, skipped: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    """The JSON payload of a skipped-files report."""
    return {"step": step, "n_done": n_done, "n_skipped": len(skipped), **extra, "skipped": skipped}


def collect_done(
    results: Iterable[tuple[str, str | None, dict[str, str] | None, bool]], total: int, desc: str, mininterval: float
) -> tuple[dict[str, str], list[dict[str, str]], int]:
    """Gather a per-file step's results (key, output path or None, skipped entry or None, made now) with a
    progress bar, warning of each skipped file: ({key: path}, skipped entries, how many were made now)."""
    from tqdm import tqdm

    paths: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    n_new = 0
    for key, path, entry, fresh in tqdm(results, total=total, desc=desc, mininterval=mininterval):
        n_new += fresh
        if path:
            paths[key] = path
        else:
            skipped.append(entry)
            warn_skipped(entry)
    return paths, skipped, n_new
