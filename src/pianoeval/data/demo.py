"""The embedded demo corpus: generated piano pieces, performances with recorded deviations, and labels.

Each piece is a short seeded composition (melody over an accompaniment texture, a key, a meter and a
tempo). Each performance renders the score with deviation parameters drawn per performance (timing
jitter, tempo, ritardando, rubato, loudness, dynamic range, melody balance, articulation, pedalling,
wrong notes), and its 19 labels are a fixed logistic function of those parameters plus small noise.
docs/demo_corpus.md documents the generator and prints the label-weight table (`weights_markdown()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pianoeval.core.constants import DEFAULT_SEED, DIMENSIONS, LABEL_MAX, LABEL_MIN
from pianoeval.core.io import atomic_path
from pianoeval.data.manifest import make_rows
from pianoeval.data.midi import Performance, write_performance

# Deviation parameters drawn per performance: name -> (low, high) of a uniform range.
# A performance's parameter is low + (z + 1) / 2 * (high - low) for a standardised z in [-1, 1].
DEVIATION_RANGES: dict[str, tuple[float, float]] = {
    "jitter_ms": (0.0, 60.0),  # std of onset noise; PercePiano's unsteadiest players sit near 50 ms
    "tempo_factor": (0.75, 1.3),  # global tempo relative to the score tempo (>1 faster)
    "ritardando": (0.0, 0.4),  # fractional slowing reached at the end, quadratic in position
    "rubato": (0.0, 0.2),  # depth of phrase-shaped tempo modulation (push mid-phrase, hold at ends)
    "velocity_mean": (40.0, 100.0),  # mean MIDI velocity
    "velocity_range": (0.2, 2.0),  # scaling of the written phrase dynamics (flattened <-> exaggerated)
    "balance": (-8.0, 16.0),  # melody minus accompaniment velocity
    "articulation": (0.35, 1.25),  # sounding / written duration (staccato <-> legato, overlapping)
    "pedal_amount": (0.0, 1.0),  # fraction of each harmony's duration with the sustain pedal down
    "pedal_blur": (0.0, 1.0),  # probability of holding the pedal across a harmony change
    "wrong_note_rate": (0.0, 0.06),  # probability that a note is played a semitone or tone off
}
DEVIATIONS: tuple[str, ...] = tuple(DEVIATION_RANGES)

# Label function: label_j = 1/7 + 6/7 * sigmoid(sum_k LABEL_WEIGHTS[j][k] * z_k) + N(0, LABEL_NOISE_STD),
# clipped to [1/7, 1], with z_k the standardised deviation in [-1, 1]. Weights are in logit units per
# unit of z; signs follow what a listener hears (e.g. more jitter -> less stable, less convincing).
LABEL_WEIGHTS: dict[str, dict[str, float]] = {
    "Timing_Stable_Unstable": {"jitter_ms": 2.0, "ritardando": 0.6, "rubato": 0.8},
    "Articulation_Short_Long": {"articulation": 2.2, "pedal_amount": 0.4},
    "Articulation_Soft_cushioned_Hard_solid": {"velocity_mean": 1.2, "articulation": -1.0, "jitter_ms": 0.3},
    "Pedal_Sparse/dry_Saturated/wet": {"pedal_amount": 2.2, "pedal_blur": 0.5},
    "Pedal_Clean_Blurred": {"pedal_blur": 2.0, "pedal_amount": 0.8},
    "Timbre_Even_Colorful": {"velocity_range": 1.5, "rubato": 0.5, "balance": 0.4},
    "Timbre_Shallow_Rich": {"pedal_amount": 1.0, "balance": 1.0, "velocity_range": 0.6, "articulation": 0.5},
    "Timbre_Bright_Dark": {"velocity_mean": -1.2, "pedal_amount": 0.8, "articulation": 0.4},
    "Timbre_Soft_Loud": {"velocity_mean": 2.4},
    "Dynamic_Sophisticated/mellow_Raw/crude": {
        "velocity_mean": 1.0,
        "jitter_ms": 0.8,
        "wrong_note_rate": 0.8,
        "velocity_range": 0.4,
    },
    "Dynamic_Little_dynamic_range_Large_dynamic_range": {"velocity_range": 2.4},
    "Music_Making_Fast_paced_Slow_paced": {"tempo_factor": -2.2, "ritardando": 0.6},
    "Music_Making_Flat_Spacious": {"rubato": 1.5, "ritardando": 0.8, "tempo_factor": -0.5},
    "Music_Making_Disproportioned_Balanced": {"balance": 1.2, "wrong_note_rate": -1.0, "jitter_ms": -0.8},
    "Music_Making_Pure_Dramatic/expressive": {"velocity_range": 1.2, "rubato": 1.0, "ritardando": 0.5},
    "Emotion_&_Mood_Optimistic/pleasant_Dark": {"tempo_factor": -1.0, "velocity_mean": -0.6, "pedal_amount": 0.5},
    "Emotion_&_Mood_Low_Energy_High_Energy": {"tempo_factor": 1.4, "velocity_mean": 1.2, "articulation": -0.4},
    "Emotion_&_Mood_Honest_Imaginative": {"rubato": 1.4, "velocity_range": 0.8, "ritardando": 0.4},
    "Interpretation_Unsatisfactory/doubtful_Convincing": {
        "jitter_ms": -1.4,
        "wrong_note_rate": -1.6,
        "velocity_range": 0.8,
        "balance": 0.4,
    },
}
# Std of the seeded noise added to every label (on the [1/7, 1] scale): raters are not perfectly consistent.
LABEL_NOISE_STD: float = 0.02
# A performer's style: the centre of their z draws, uniform in [-STYLE_SPREAD, STYLE_SPREAD] per
# parameter; each performance adds uniform noise of +-PERFORMANCE_SPREAD around it (then clipped).
STYLE_SPREAD: float = 0.6
PERFORMANCE_SPREAD: float = 0.6

# Scales (semitones above the tonic): major, and harmonic minor so that V has a leading tone.
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}
# Accompaniment textures ordered by density (notes per beat); piece i uses texture i mod 4 so a
# corpus of four or more pieces spans all of them.
TEXTURES: tuple[str, ...] = ("chorale", "block", "alberti", "arpeggio")
# Written dynamics: the phrase arch spans +-_DYN_SPAN velocity around the mean; the melody is
# written _SCORE_MELODY_ACCENT above the accompaniment.
_DYN_SPAN = 18.0
_SCORE_MELODY_ACCENT = 8.0
_SCORE_VELOCITY = 64.0
# Onsets within one chord spread by this fraction of the timing jitter (hands are not exactly together).
_CHORD_SPREAD = 0.3
# Shortest sounding note (s): shorter notes do not speak on a piano.
_MIN_NOTE_S = 0.04


@dataclass
class ScoreNote:
    """One written note: position and length in beats, pitch, role (melody or accompaniment)."""

    beat: float
    length: float
    pitch: int
    melody: bool


@dataclass
class Piece:
    """A generated piece: notes, harmony boundaries (beats), meter, tempo and generation facts."""

    piece_id: str
    notes: list[ScoreNote]
    harmony_starts: np.ndarray  # [H+1] beats where each harmony begins, plus the end
    beats_per_bar: int
    n_bars: int
    bpm: float
    key: str
    texture: str
    melody_subdivision: int
    difficulty: float

    @property
    def n_beats(self) -> float:
        """Written length in beats."""
        return float(self.n_bars * self.beats_per_bar)

    @property
    def phrase_beats(self) -> float:
        """Phrase length in beats: two phrases when the piece has six or more bars, else one."""
        return self.n_beats / 2 if self.n_bars >= 6 else self.n_beats

    def dynamics(self, beat: np.ndarray) -> np.ndarray:
        """Written phrase dynamics in [-1, 1] at `beat` [N]: an arch peaking mid-phrase."""
        frac = np.clip(np.asarray(beat, dtype=np.float64) % self.phrase_beats / self.phrase_beats, 0, 1)
        return 2.0 * np.sin(np.pi * frac) - 1.0


def generate_demo_corpus(
    out_dir: str | Path,
    n_pieces: int = 6,
    n_performances: int = 10,
    seconds: float = 8.0,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Write score and performance MIDI under `out_dir`; return manifest rows plus `dev_*` columns."""
    if n_pieces < 1 or n_performances < 1 or seconds <= 0:
        raise ValueError("n_pieces, n_performances and seconds must be positive")
    out_dir = Path(out_dir).resolve()
    rows: list[dict] = []
    deviations: list[dict[str, float]] = []
    styles = [performer_style(seed, p) for p in range(n_performances)]
    for i in range(n_pieces):
        piece = generate_piece(i, seconds, seed)
        score_path = write_performance(score_performance(piece), out_dir / "score" / f"{piece.piece_id}.mid")
        for p in range(n_performances):
            performer = f"P{p:02d}"
            segment_id = f"demo::{piece.piece_id}/{performer}"
            rng = np.random.default_rng([seed, i, p, 1])
            dev = draw_deviations(styles[p], rng)
            perf = perform(piece, dev, rng)
            midi_path = write_performance(perf, out_dir / "performance" / f"{piece.piece_id}_{performer}.mid")
            rows.append(
                {
                    "segment_id": segment_id,
                    "piece_id": piece.piece_id,
                    "segment_group": piece.piece_id,
                    "performer": performer,
                    "tier": "T1",
                    "source": "demo",
                    "midi_path": str(midi_path),
                    "score_midi_path": str(score_path),
                    "difficulty": piece.difficulty,
                }
            )
            deviations.append(dev)
    dev_df = pd.DataFrame(deviations, columns=list(DEVIATIONS))
    labels = demo_labels(dev_df, np.random.default_rng([seed, 2]))
    for row, vec in zip(rows, labels, strict=True):
        row["labels"] = vec.tolist()
    df = make_rows(rows)
    for name in DEVIATIONS:
        df[f"dev_{name}"] = dev_df[name].to_numpy()
    table = df[["segment_id", "piece_id", "performer", *(f"dev_{n}" for n in DEVIATIONS)]]
    with atomic_path(out_dir / "deviations.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return df


def standardise(dev: pd.DataFrame) -> np.ndarray:
    """Deviation table (columns DEVIATIONS, raw units) to standardised z [N, K] in [-1, 1]."""
    lo = np.array([DEVIATION_RANGES[n][0] for n in DEVIATIONS])
    hi = np.array([DEVIATION_RANGES[n][1] for n in DEVIATIONS])
    raw = dev[list(DEVIATIONS)].to_numpy(dtype=np.float64)
    return 2.0 * (raw - lo) / (hi - lo) - 1.0


def weight_matrix() -> np.ndarray:
    """LABEL_WEIGHTS as an array [19, K] in DIMENSIONS x DEVIATIONS order."""
    w = np.zeros((len(DIMENSIONS), len(DEVIATIONS)))
    for j, dim in enumerate(DIMENSIONS):
        for name, value in LABEL_WEIGHTS[dim].items():
            w[j, DEVIATIONS.index(name)] = value
    return w


def demo_labels(dev: pd.DataFrame, rng: np.random.Generator | None = None) -> np.ndarray:
    """The 19 labels [N, 19] in [1/7, 1] for a deviation table; noise-free when `rng` is None."""
    logits = standardise(dev) @ weight_matrix().T
    labels = LABEL_MIN + (LABEL_MAX - LABEL_MIN) / (1.0 + np.exp(-logits))
    if rng is not None:
        labels = labels + rng.normal(0.0, LABEL_NOISE_STD, size=labels.shape)
    return np.clip(labels, LABEL_MIN, LABEL_MAX).astype(np.float32)


def weights_markdown() -> str:
    """The label-weight table as Markdown (one row per dimension), as printed in docs/demo_corpus.md."""
    lines = ["| dimension | " + " | ".join(DEVIATIONS) + " |", "|---" * (len(DEVIATIONS) + 1) + "|"]
    for dim, row in zip(DIMENSIONS, weight_matrix(), strict=True):
        cells = ["" if v == 0 else f"{v:+.1f}" for v in row]
        lines.append(f"| `{dim}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def performer_style(seed: int, performer: int) -> np.ndarray:
    """A performer's centre in standardised deviation space [K], shared across pieces."""
    rng = np.random.default_rng([seed, 10_000 + performer])
    return rng.uniform(-STYLE_SPREAD, STYLE_SPREAD, size=len(DEVIATIONS))


def draw_deviations(style: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """One performance's deviation parameters (raw units) around a performer `style` [K]."""
    z = np.clip(style + rng.uniform(-PERFORMANCE_SPREAD, PERFORMANCE_SPREAD, size=len(DEVIATIONS)), -1, 1)
    out = {}
    for name, zk in zip(DEVIATIONS, z, strict=True):
        lo, hi = DEVIATION_RANGES[name]
        out[name] = float(lo + (zk + 1.0) / 2.0 * (hi - lo))
    return out


def generate_piece(index: int, seconds: float = 8.0, seed: int = DEFAULT_SEED) -> Piece:
    """Compose piece number `index` (seeded): melody over an accompaniment, 4-8 bars, about `seconds` long."""
    rng = np.random.default_rng([seed, index, 0])
    mode = str(rng.choice(["major", "minor"]))
    tonic = int(rng.integers(0, 12))
    beats_per_bar = int(rng.choice([3, 4]))
    texture = TEXTURES[index % len(TEXTURES)]
    # Denser accompaniments get busier melodies on average, so difficulty spreads widely.
    subdivision = int(rng.choice([1, 2, 2, 4] if texture in ("alberti", "arpeggio") else [1, 1, 2, 2]))
    # Choose bars to fit `seconds` at a plausible tempo, then set the tempo to fit exactly.
    bpm = float(rng.uniform(66, 150))
    n_bars = int(np.clip(round(seconds * bpm / 60 / beats_per_bar), 4, 8))
    bpm = n_bars * beats_per_bar * 60.0 / seconds
    scale = _SCALES[mode]
    # Harmonic rhythm: one chord per bar, two per bar (4/4 only) in the two busier textures.
    per_bar = 2 if beats_per_bar == 4 and texture in ("alberti", "arpeggio") else 1
    n_harm = n_bars * per_bar
    degrees = [0, *rng.choice([1, 2, 3, 4, 5], size=n_harm - 3).tolist(), 4, 0]
    harm_len = beats_per_bar / per_bar
    starts = np.arange(n_harm + 1) * harm_len
    notes: list[ScoreNote] = []
    for h, degree in enumerate(degrees):
        chord = [tonic + scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in (0, 2, 4)]
        notes.extend(_accompaniment(chord, float(starts[h]), harm_len, texture, beats_per_bar))
    notes.extend(_melody(rng, tonic, scale, degrees, harm_len, subdivision, n_bars * beats_per_bar))
    notes.sort(key=lambda n: (n.beat, n.pitch))
    notes_per_s = len(notes) / seconds
    # Difficulty on a Henle-like 1-9 scale: note rate, texture and melodic subdivision; range 1-9.
    complexity = (
        0.5 * min(notes_per_s / 14.0, 1.0)
        + 0.3 * TEXTURES.index(texture) / 3
        + 0.2 * (subdivision - 1) / 3
        + 0.1 * (bpm - 90) / 70
    )
    key = f"{['C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B'][tonic]} {mode}"
    return Piece(
        piece_id=f"piece{index:02d}",
        notes=notes,
        harmony_starts=starts,
        beats_per_bar=beats_per_bar,
        n_bars=n_bars,
        bpm=bpm,
        key=key,
        texture=texture,
        melody_subdivision=subdivision,
        difficulty=float(np.clip(1.0 + 8.0 * complexity, 1.0, 9.0)),
    )


def _accompaniment(chord: Sequence[int], start: float, length: float, texture: str, bpb: int) -> list[ScoreNote]:
    """Left-hand notes for one harmony: chord pitch classes voiced around C3 with a bass below."""
    root = 48 + (chord[0] % 12)
    if root > 54:
        root -= 12
    third, fifth = root + (chord[1] - chord[0]), root + (chord[2] - chord[0])
    bass = root - 12
    out: list[ScoreNote] = []
    if texture == "chorale":
        out += [ScoreNote(start, length, p, False) for p in (bass, root, third, fifth)]
    elif texture == "block":
        out.append(ScoreNote(start, 1.0, bass, False))
        for b in range(1, int(length)):
            out += [ScoreNote(start + b, 1.0, p, False) for p in (root, third, fifth)]
    elif texture == "alberti":
        pattern = (root, fifth, third, fifth)
        out += [ScoreNote(start + 0.5 * i, 0.5, pattern[i % 4], False) for i in range(int(2 * length))]
        out.append(ScoreNote(start, length, bass, False))
    else:  # arpeggio: sixteenths rising over two octaves and falling back
        cycle = [bass, root, third, fifth, root + 12, fifth, third, root]
        out += [ScoreNote(start + 0.25 * i, 0.25, cycle[i % len(cycle)], False) for i in range(int(4 * length))]
    return out


def _melody(
    rng: np.random.Generator,
    tonic: int,
    scale: Sequence[int],
    degrees: Sequence[int],
    harm_len: float,
    subdivision: int,
    n_beats: int,
) -> list[ScoreNote]:
    """Right-hand melody around C5: a scale-step random walk landing on chord tones at harmony starts."""
    step = 1.0 / subdivision
    position = 7 * 5  # scale index in "degrees from C0": octave 5
    out: list[ScoreNote] = []
    t = 0.0
    last_start = n_beats - 2.0  # the final tonic is held for two beats
    while t < last_start - 1e-9:
        h = int(t // harm_len)
        chord = [(degrees[h] + s) % 7 for s in (0, 2, 4)]
        if abs(t - h * harm_len) < 1e-9:
            # On a harmony change: move to the nearest chord tone.
            cands = [position + d for d in range(-3, 4) if (position + d) % 7 in chord]
            position = min(cands, key=lambda c: (abs(c - position), c))
        else:
            position += int(rng.choice([-2, -1, -1, 1, 1, 2]))
        position = int(np.clip(position, 7 * 4 + 4, 7 * 6 + 2))
        # Occasionally hold a note for two steps: rhythm varies without leaving the grid.
        length = step * (2 if rng.random() < 0.2 and t + 2 * step <= last_start else 1)
        out.append(ScoreNote(t, length, _pitch(tonic, scale, position), True))
        t += length
    final = 7 * 5 if abs(position - 35) <= abs(position - 42) else 7 * 6
    out.append(ScoreNote(last_start, 2.0, _pitch(tonic, scale, final), True))
    return out


def _pitch(tonic: int, scale: Sequence[int], position: int) -> int:
    """MIDI pitch of scale index `position` (7 per octave) in the key whose tonic pitch class is `tonic`."""
    octave, degree = divmod(position, 7)
    return 12 * (octave + 1) + tonic % 12 + scale[degree] - (12 if tonic % 12 >= 6 else 0)


def score_performance(piece: Piece) -> Performance:
    """The deadpan score: written timing at the score tempo, written dynamics, no pedal."""
    beat_s = 60.0 / piece.bpm
    beats = np.array([n.beat for n in piece.notes])
    lengths = np.array([n.length for n in piece.notes])
    melody = np.array([n.melody for n in piece.notes])
    vel = _SCORE_VELOCITY + 0.5 * _DYN_SPAN * piece.dynamics(beats) + np.where(melody, _SCORE_MELODY_ACCENT, 0.0)
    notes = np.stack(
        [beats * beat_s, (beats + lengths) * beat_s, [n.pitch for n in piece.notes], np.round(vel)], axis=1
    )
    return Performance(notes)


def perform(piece: Piece, dev: dict[str, float], rng: np.random.Generator) -> Performance:
    """Render `piece` with deviation parameters `dev` (raw units) into a performance with pedal."""
    time_of = _time_map(piece, dev)
    beats = np.array([n.beat for n in piece.notes])
    ends = beats + np.array([n.length for n in piece.notes])
    pitches = np.array([n.pitch for n in piece.notes], dtype=np.float64)
    melody = np.array([n.melody for n in piece.notes])
    jitter = dev["jitter_ms"] / 1000.0
    # Notes written together share most of their timing error; a little is per note.
    uniq, group = np.unique(beats, return_inverse=True)
    onsets = (
        time_of(beats) + rng.normal(0, jitter, len(uniq))[group] + rng.normal(0, _CHORD_SPREAD * jitter, len(beats))
    )
    onsets = np.maximum(onsets, 0.0)
    durations = np.maximum((time_of(ends) - time_of(beats)) * dev["articulation"], _MIN_NOTE_S)
    velocity = (
        dev["velocity_mean"]
        + dev["velocity_range"] * _DYN_SPAN * piece.dynamics(beats)
        + np.where(melody, dev["balance"] / 2, -dev["balance"] / 2)
        + rng.normal(0, 3.0, len(beats))
    )
    wrong = rng.random(len(beats)) < dev["wrong_note_rate"]
    pitches[wrong] += rng.choice([-2, -1, 1, 2], size=int(wrong.sum()))
    notes = np.stack([onsets, onsets + durations, pitches, np.clip(np.round(velocity), 1, 127)], axis=1)
    return Performance(notes, _pedal(piece, dev, rng, time_of))


def _time_map(piece: Piece, dev: dict[str, float]):  # -> Callable[[np.ndarray], np.ndarray]
    """Seconds at each score beat: tempo factor x quadratic ritardando x phrase rubato, integrated."""
    grid = np.linspace(0.0, piece.n_beats + 4.0, int(48 * (piece.n_beats + 4)) + 1)
    pos = np.clip(grid / piece.n_beats, 0.0, 1.0)
    frac = grid % piece.phrase_beats / piece.phrase_beats
    rate = (
        piece.bpm
        / 60.0
        * dev["tempo_factor"]
        * (1.0 - dev["ritardando"] * pos**2)
        * (1.0 + dev["rubato"] * (np.sin(np.pi * frac) - 0.5))
    )
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(grid) / (0.5 * (rate[1:] + rate[:-1])))])
    return lambda beats: np.interp(beats, grid, seconds)


def _pedal(piece: Piece, dev: dict[str, float], rng: np.random.Generator, time_of) -> np.ndarray:
    """Sustain-pedal events [M, 2]: down just after each harmony starts, up after `pedal_amount` of it;
    with probability `pedal_blur` the pedal is kept down across the next harmony change."""
    events: list[tuple[float, float]] = []
    starts = piece.harmony_starts
    down_until = -1.0  # beat until which the pedal is already held from a blurred change
    for h in range(len(starts) - 1):
        start, end = float(starts[h]), float(starts[h + 1])
        held = dev["pedal_amount"] * (end - start)
        if held < 0.25:
            continue
        down = start + 0.1  # legato pedalling: press after the new harmony sounds
        up = min(down + held, end - 0.05)
        if h < len(starts) - 2 and rng.random() < dev["pedal_blur"]:
            up = end + 0.5  # blurred: the old harmony rings into the new one
        if down > down_until:
            events.append((float(time_of(np.array([down]))[0]), 127.0))
        events.append((float(time_of(np.array([up]))[0]), 0.0))
        down_until = up
    # Drop a release that a later press overtakes (merged blurred spans).
    cleaned: list[tuple[float, float]] = []
    for t, v in sorted(events):
        if cleaned and v == 0.0 and cleaned[-1][1] == 0.0:
            cleaned[-1] = (t, v)
        else:
            cleaned.append((t, v))
    return np.array(cleaned, dtype=np.float64).reshape(-1, 2)
