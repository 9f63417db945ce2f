"""pianoeval persist: copy results to durable storage (push) or restore them (pull), with rclone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pianoeval.core.errors import RemoteError
from pianoeval.core.persist import copy

log = logging.getLogger(__name__)


def run_persist(
    direction: str,
    config: dict[str, Any],
    remote: str | None = None,
    paths: Sequence[str] = (),
    exclude: Sequence[str] | None = None,
    warn_only: bool = False,
    root: Path = Path("."),
) -> int:
    """`pianoeval persist push|pull`: arguments override the config's `persist` section; with
    `warn_only` a failed copy is logged as a warning and 0 returned (after a pipeline job, a failed
    upload must not fail the job and so discard its outputs: the next push copies them)."""
    from pianoeval.core.settings import PersistSettings

    section = PersistSettings.from_config(config)
    try:
        return copy(
            direction,
            remote or section.remote,
            list(paths) or section.include,
            section.exclude if exclude is None else exclude,
            root,
        )
    except RemoteError as exc:
        if not warn_only:
            raise
        log.warning("persist %s failed, outputs are kept here and the next push retries: %s", direction, exc)
        return 0
