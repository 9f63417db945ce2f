"""Read and write piano MIDI as plain note and pedal arrays, with errors that name the file."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pianoeval.core.constants import PEDAL_DOWN_THRESHOLD, SUSTAIN_CC
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path

# A MIDI longer than this (seconds) is refused: no piano segment we judge is an hour long,
# and such a file is almost always a corrupt tempo map.
MAX_DURATION_S: float = 3600.0
# A MIDI file larger than this is refused before parsing: an hour of dense two-hand playing is
# well under 2 MB, while parsing a generated file of millions of notes takes minutes and gigabytes.
MAX_FILE_BYTES: int = 16 * 2**20


@dataclass
class Performance:
    """A piano performance: notes [N, 4] (onset_s, offset_s, pitch, velocity) and pedal [M, 2] (time_s, value)."""

    notes: np.ndarray
    pedal: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    path: str | None = None

    def __post_init__(self) -> None:
        self.notes = np.asarray(self.notes, dtype=np.float64).reshape(-1, 4)
        self.pedal = np.asarray(self.pedal, dtype=np.float64).reshape(-1, 2)
        if len(self.notes):
            order = np.lexsort((self.notes[:, 2], self.notes[:, 0]))
            self.notes = self.notes[order]
        if len(self.pedal):
            self.pedal = self.pedal[np.argsort(self.pedal[:, 0], kind="stable")]

    @property
    def duration(self) -> float:
        """Seconds from 0 to the last note offset (or pedal event)."""
        ends = [0.0]
        if len(self.notes):
            ends.append(float(self.notes[:, 1].max()))
        if len(self.pedal):
            ends.append(float(self.pedal[:, 0].max()))
        return max(ends)

    @property
    def onsets(self) -> np.ndarray:
        """Note onsets in seconds [N]."""
        return self.notes[:, 0]

    @property
    def pitches(self) -> np.ndarray:
        """MIDI pitches [N] as int."""
        return self.notes[:, 2].astype(np.int64)

    @property
    def velocities(self) -> np.ndarray:
        """MIDI velocities [N] as int."""
        return self.notes[:, 3].astype(np.int64)


def load_performance(path: str | Path) -> Performance:
    """Read a MIDI file into a Performance (all non-drum tracks merged); InputError if unusable."""
    import pretty_midi

    path = Path(path)
    if not path.is_file():
        raise InputError("MIDI file not found", path)
    size = path.stat().st_size
    if size == 0:
        raise InputError("MIDI file is empty (0 bytes)", path)
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"MIDI file is {size / 2**20:.0f} MB, more than the {MAX_FILE_BYTES / 2**20:.0f} MB limit"
            " (no piano performance is this large; is it generated or corrupt?)",
            path,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # pretty_midi/mido raise many types for corrupt files
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise InputError(f"not a readable MIDI file ({detail})", path) from exc
    notes: list[tuple[float, float, int, int]] = []
    pedal: list[tuple[float, int]] = []
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        notes.extend((n.start, max(n.end, n.start), n.pitch, n.velocity) for n in inst.notes)
        pedal.extend((c.time, c.value) for c in inst.control_changes if c.number == SUSTAIN_CC)
    if not notes:
        raise InputError("MIDI file has no notes (only metadata or pedal events)", path)
    perf = Performance(np.array(notes, dtype=np.float64), np.array(pedal, dtype=np.float64), str(path))
    if not np.isfinite(perf.notes).all():
        raise InputError("MIDI file has non-finite note times", path)
    if perf.duration > MAX_DURATION_S:
        raise InputError(f"MIDI lasts {perf.duration:.0f} s, more than the {MAX_DURATION_S:.0f} s limit", path)
    return perf


def to_pretty_midi(perf: Performance):  # -> pretty_midi.PrettyMIDI
    """Build a single-piano PrettyMIDI object (program 0, CC64 pedal) from a Performance."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    for onset, offset, pitch, velocity in perf.notes:
        end = max(float(offset), float(onset) + 0.01)
        piano.notes.append(
            pretty_midi.Note(
                velocity=int(np.clip(round(velocity), 1, 127)),
                pitch=int(pitch),
                start=float(onset),
                end=end,
            )
        )
    for time, value in perf.pedal:
        piano.control_changes.append(
            pretty_midi.ControlChange(number=SUSTAIN_CC, value=int(np.clip(round(value), 0, 127)), time=float(time))
        )
    pm.instruments.append(piano)
    return pm


def write_performance(perf: Performance, path: str | Path) -> Path:
    """Write a Performance as a single-piano MIDI file atomically; return the path."""
    with atomic_path(path, suffix=".mid") as tmp:
        to_pretty_midi(perf).write(str(tmp))
    return Path(path)


def pedal_down_mask(perf: Performance, times: np.ndarray, threshold: int = 64) -> np.ndarray:
    """Return a bool array [len(times)]: is the sustain pedal down at each time (last CC64 value >= threshold)."""
    times = np.asarray(times, dtype=np.float64)
    if len(perf.pedal) == 0:
        return np.zeros(times.shape, dtype=bool)
    idx = np.searchsorted(perf.pedal[:, 0], times, side="right") - 1
    values = np.where(idx >= 0, perf.pedal[np.clip(idx, 0, None), 1], 0.0)
    return values >= threshold


def pedal_intervals(perf: Performance, threshold: int = PEDAL_DOWN_THRESHOLD) -> np.ndarray:
    """Sustain-pedal-down intervals [K, 2] (start_s, end_s) from CC64 values >= threshold."""
    if len(perf.pedal) == 0:
        return np.zeros((0, 2))
    times, down = perf.pedal[:, 0], perf.pedal[:, 1] >= threshold
    # Transitions of the down state, starting from "up" before the first event.
    change = np.flatnonzero(np.diff(np.r_[False, down].astype(np.int8)))
    starts = times[change[down[change]]]
    ends = times[change[~down[change]]]
    if len(ends) < len(starts):  # still down at the end: release at the end of the performance
        ends = np.r_[ends, max(perf.duration, starts[-1])]
    return np.stack([starts, ends], axis=1)
