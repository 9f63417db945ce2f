"""Seeded MIDI augmentations for self-supervised pretraining: transposition, tempo and velocity scaling.

Each acts on a `Performance` (notes [N, 4] = onset_s, offset_s, pitch, velocity; pedal [M, 2]) and
returns a new one; the random draws come from a `numpy.random.Generator` the caller seeds, so a
corpus built twice with the same seed is the same corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pianoeval.core.errors import ConfigError
from pianoeval.data.midi import Performance

# The 88 keys: a transposition never moves a note off the piano.
PIANO_LOW, PIANO_HIGH = 21, 108


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random augmentations (0 / 1.0 / 1.0 switch one off)."""

    transpose: int = 3  # semitones, drawn uniformly in [-transpose, transpose] (clipped to the keyboard)
    tempo: float = 0.1  # times divided by a factor drawn log-uniformly in [1 / (1 + tempo), 1 + tempo]
    velocity: float = 0.15  # velocities multiplied by a factor drawn uniformly in [1 - v, 1 + v]

    def __post_init__(self) -> None:
        if self.transpose < 0 or not 0 <= self.tempo < 1 or not 0 <= self.velocity < 1:
            raise ConfigError(f"augmentation ranges need transpose >= 0 and 0 <= tempo, velocity < 1, got {self}")

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> AugmentSettings:
        """From the config's `symbolic.corpus.augment` section."""
        return cls(int(section["transpose"]), float(section["tempo"]), float(section["velocity"]))


def transpose(perf: Performance, semitones: int) -> Performance:
    """Every pitch shifted by `semitones`, clipped to the piano's range (times and velocities kept)."""
    notes = perf.notes.copy()
    notes[:, 2] = np.clip(notes[:, 2] + int(semitones), PIANO_LOW, PIANO_HIGH)
    return Performance(notes, perf.pedal.copy(), perf.path)


def scale_tempo(perf: Performance, factor: float) -> Performance:
    """Played `factor` times as fast: every note and pedal time divided by `factor` (> 0)."""
    if factor <= 0:
        raise ValueError(f"tempo factor must be positive, got {factor}")
    notes, pedal = perf.notes.copy(), perf.pedal.copy()
    notes[:, :2] /= factor
    pedal[:, 0] /= factor
    return Performance(notes, pedal, perf.path)


def scale_velocity(perf: Performance, factor: float) -> Performance:
    """Velocities multiplied by `factor`, rounded and kept in 1..127 (MIDI's note-on range)."""
    notes = perf.notes.copy()
    notes[:, 3] = np.clip(np.round(notes[:, 3] * factor), 1, 127)
    return Performance(notes, perf.pedal.copy(), perf.path)


def augment(perf: Performance, settings: AugmentSettings, rng: np.random.Generator) -> tuple[Performance, dict]:
    """One random draw of the three augmentations; (augmented performance, the drawn parameters)."""
    low, high = int(perf.pitches.min()), int(perf.pitches.max())
    # Only shifts that keep every note on the keyboard, so the chord shapes survive.
    down, up = min(settings.transpose, low - PIANO_LOW), min(settings.transpose, PIANO_HIGH - high)
    shift = int(rng.integers(-max(down, 0), max(up, 0) + 1))
    span = np.log1p(settings.tempo) if settings.tempo else 0.0
    tempo = float(np.exp(rng.uniform(-span, span))) if span else 1.0
    velocity = float(rng.uniform(1 - settings.velocity, 1 + settings.velocity)) if settings.velocity else 1.0
    out = scale_velocity(scale_tempo(transpose(perf, shift), tempo), velocity)
    return out, {"transpose": shift, "tempo": tempo, "velocity": velocity}
