"""The unlabelled pretraining corpus: performance MIDIs of an ASAP-layout folder cut into short windows.

ASAP (`composer/.../piece/<performer>.mid`, one `midi_score.mid` per piece) holds whole performances of
up to 15 minutes; PercePiano's labelled segments last seconds. The corpus is therefore a few random
windows of `seconds` per performance, each a short excerpt like the ones the models are judged on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance

log = logging.getLogger(__name__)

# ASAP's folder of Schubert D935 no. 3, the one piece it shares with PercePiano (Schubert_D935_no.3).
PERCEPIANO_OVERLAP = "Schubert/Impromptu_op142/3"


@dataclass(frozen=True)
class CorpusSettings:
    """Which performances the corpus reads and how it cuts them (config `symbolic.corpus`)."""

    root: str
    exclude: tuple[str, ...] = (PERCEPIANO_OVERLAP,)
    seconds: float = 15.0
    windows_per_file: int = 4
    max_files: int = 0  # 0 = every performance

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> CorpusSettings:
        """From the config's `symbolic.corpus` section."""
        return cls(
            str(section["root"]),
            tuple(section["exclude"]),
            float(section["segment_seconds"]),
            int(section["windows_per_file"]),
            int(section["max_files"]),
        )


def is_excluded(folder: str, exclude: tuple[str, ...]) -> bool:
    """True when the piece folder (relative to the corpus root) is, or lies under, an excluded folder."""
    folder = folder.strip("/")
    return any(folder == e.strip("/") or folder.startswith(e.strip("/") + "/") for e in exclude)


def corpus_files(settings: CorpusSettings) -> list[tuple[str, Path]]:
    """(piece folder, performance MIDI) pairs of the corpus, sorted, excluded pieces left out; at most
    `max_files`, spread evenly over the sorted list (so every composer stays in a small corpus)."""
    from pianoeval.data.asap import _list_performances

    root = Path(settings.root)
    if not root.is_dir():
        raise InputError("pretraining corpus folder not found (symbolic.corpus.root)", root)
    files = sorted((f, p) for f, p in _list_performances(root) if not is_excluded(f, settings.exclude))
    if not files:
        raise InputError("no performance MIDI in the pretraining corpus (piece/<performer>.mid)", root)
    if settings.max_files and len(files) > settings.max_files:
        picks = np.linspace(0, len(files) - 1, settings.max_files).round().astype(int)
        files = [files[i] for i in sorted(set(picks.tolist()))]
    return files


def window(perf: Performance, start: float, seconds: float) -> Performance:
    """The notes with onsets in [start, start + seconds), shifted to start at 0 and cut at the window's
    end; the pedal events inside, plus the pedal's value at `start` (so a held pedal stays held)."""
    end = start + seconds
    keep = (perf.notes[:, 0] >= start) & (perf.notes[:, 0] < end)
    notes = perf.notes[keep].copy()
    notes[:, 1] = np.minimum(notes[:, 1], end)
    notes[:, :2] -= start
    pedal = perf.pedal
    before = pedal[pedal[:, 0] < start]
    inside = pedal[(pedal[:, 0] >= start) & (pedal[:, 0] < end)].copy()
    inside[:, 0] -= start
    if len(before):
        inside = np.vstack([[[0.0, before[-1, 1]]], inside])
    return Performance(notes, inside, perf.path)


def random_windows(perf: Performance, seconds: float, n: int, rng: np.random.Generator) -> list[Performance]:
    """`n` windows of `seconds` at random starts (one whole-performance window if it is shorter),
    each holding at least one note."""
    first, last = float(perf.onsets.min()), float(perf.onsets.max())
    if last - first <= seconds:
        return [window(perf, first, seconds)]
    starts = rng.uniform(first, last - seconds / 2, size=n)
    return [w for w in (window(perf, float(s), seconds) for s in starts) if len(w.notes)]
