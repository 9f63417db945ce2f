"""Which experiment a results folder belongs to: two experiments never share one silently.

Every rule writes under `results/` at fixed paths (`results/fusion/winner.json` is every experiment's
final target), so running a second experiment in the same working directory would overwrite the
first one's outputs file by file. The workflow records the experiment's name (`run_name`) in
`results/experiment.json` when it starts running jobs, and refuses, before any job, to run another
experiment over it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pianoeval.core.errors import ConfigError
from pianoeval.core.io import read_json, write_json

MARKER = "experiment.json"


def held_experiment(results: Path) -> str | None:
    """The experiment recorded in `results` (None when nothing is recorded)."""
    marker = Path(results) / MARKER
    if not marker.is_file():
        return None
    return str(read_json(marker).get("run_name"))


def check_experiment(results: Path, name: str) -> None:
    """ConfigError (one line) when `results` holds another experiment's outputs than `name`'s."""
    held = held_experiment(results)
    if held is not None and held != name:
        raise ConfigError(
            f"holds experiment {held!r}, not {name!r}: move results/, logs/ and benchmarks/ away "
            f"(or delete them) before running {name!r}, or run {held!r} again",
            Path(results) / MARKER,
        )


def record_experiment(results: Path, name: str, configfiles: list[str]) -> dict[str, Any]:
    """Record `name` (and the config files it came from) as the experiment of `results`."""
    marker = Path(results) / MARKER
    if held_experiment(results) == name:
        return read_json(marker)
    record = {
        "run_name": name,
        "configfiles": [str(p) for p in configfiles],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(record, marker)
    return record
