"""REMI tokens for piano performances (S1): miditok REMI on a fixed 120 qpm grid in absolute time.

Why a fixed grid: a recorded performance has a nominal tempo (117 qpm in PercePiano, 120 in most
others) and bar lines that mean nothing, while a score rendition has a real tempo map. To make tokens
comparable across files and identical for a file and its `Performance`, every input is converted to
seconds and re-gridded at 120 qpm (one beat = 0.5 s). With 32 positions per beat an onset is kept to
1/64 s (15.6 ms), finer than typical chord asynchrony; a "bar" is 2 s of time. Tempo tokens are on,
but after re-gridding there is only one, `Tempo_120.0`, at the start: expressive timing lives in the
Position tokens. A PercePiano segment takes about 4 tokens per note (median 440 tokens, 71 of 1,202
files exceed 1,024 before truncation, mostly 16-bar segments).
Sequence: BOS, REMI tokens (Bar, Position, Tempo, Pedal + Duration, Pitch + Velocity + Duration), EOS;
cut to `max_seq_len` at an event boundary. The pedal is binary here (CC64 >= 64, see
`pedal_intervals`); half pedalling is kept in the continuous curves (features.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.constants import SUSTAIN_CC
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path
from pianoeval.data.midi import Performance, load_performance, pedal_intervals

# Tempo of the re-gridded score: one beat = 0.5 s, so ticks and seconds are proportional.
GRID_QPM: float = 120.0
# Positions (and ticks) per beat: 1/64 s onset resolution at GRID_QPM.
POSITIONS_PER_BEAT: int = 32
# Duration bins in beats -> resolution: 15.6 ms steps up to 0.5 s (staccato vs legato), 31 ms up to
# 2 s, 125 ms up to 6 s, 0.5 s up to 16 s (long pedals and held bass notes).
BEAT_RES: dict[tuple[int, int], int] = {(0, 1): 32, (1, 4): 16, (4, 12): 4, (12, 32): 1}
# Tempo bins 40, 45, ..., 240 qpm: GRID_QPM is a bin, so decoding gives back exact seconds.
TEMPO_RANGE: tuple[int, int] = (40, 240)
NUM_TEMPOS: int = 41
# Piano keys A0..C8.
PITCH_RANGE: tuple[int, int] = (21, 109)
SPECIAL_TOKENS: tuple[str, ...] = ("PAD", "BOS", "EOS", "MASK")
# Token types that open an event (a note is Pitch, Velocity, Duration; a pedal is Pedal, Duration):
# a sequence cut just before one of them holds only whole events.
_EVENT_STARTS: tuple[str, ...] = ("Bar", "Position", "Tempo", "Pitch", "Pedal")
_FORMAT = "pianoeval-piano-tokenizer-v1"


def performance_from_score(score: Any, path: str | None = None) -> Performance:
    """Merge the non-drum tracks of a `symusic.Score` (any time unit) into a Performance in seconds."""
    sec = score if type(score).__name__ == "ScoreSecond" else score.to("second")
    notes: list[np.ndarray] = []
    pedal: list[np.ndarray] = []
    for track in sec.tracks:
        if track.is_drum:
            continue
        n = track.notes.numpy()
        if len(n["time"]):
            start = n["time"].astype(np.float64)
            notes.append(np.stack([start, start + n["duration"], n["pitch"], n["velocity"]], axis=1))
        c = track.controls.numpy()
        sustain = c["number"] == SUSTAIN_CC
        if sustain.any():
            pedal.append(np.stack([c["time"][sustain], c["value"][sustain]], axis=1).astype(np.float64))
    note_arr = np.concatenate(notes) if notes else np.zeros((0, 4))
    pedal_arr = np.concatenate(pedal) if pedal else np.zeros((0, 2))
    return Performance(note_arr, pedal_arr, path)


class PianoTokenizer:
    """Piano REMI tokenizer: a MIDI path, `symusic.Score` or Performance -> one flat id sequence."""

    def __init__(self, max_seq_len: int = 1024, num_velocities: int = 32) -> None:
        import miditok

        if max_seq_len < 3:
            raise ValueError(f"max_seq_len must leave room for BOS, EOS and a token, got {max_seq_len}")
        self.max_seq_len = int(max_seq_len)
        self.num_velocities = int(num_velocities)
        config = miditok.TokenizerConfig(
            pitch_range=PITCH_RANGE,
            beat_res=BEAT_RES,
            num_velocities=self.num_velocities,
            special_tokens=list(SPECIAL_TOKENS),
            use_velocities=True,
            use_sustain_pedals=True,
            sustain_pedal_duration=True,
            use_tempos=True,
            tempo_range=TEMPO_RANGE,
            num_tempos=NUM_TEMPOS,
            # Bars of the re-gridded score are 2 s of time, not musical bars: no time signatures.
            use_time_signatures=False,
            use_programs=False,
            use_chords=False,
            use_rests=False,
        )
        self._tok = miditok.REMI(config)
        if self._tok.time_division != POSITIONS_PER_BEAT:
            raise RuntimeError(f"miditok time division {self._tok.time_division} != {POSITIONS_PER_BEAT}")

    # -- vocabulary ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids (special tokens included)."""
        return len(self._tok)

    @property
    def vocab(self) -> dict[str, int]:
        """Token string -> id."""
        return dict(self._tok.vocab)

    @property
    def pad_token_id(self) -> int:
        """Id of PAD (0): padding in batches."""
        return int(self._tok["PAD_None"])

    @property
    def bos_token_id(self) -> int:
        """Id of BOS, the first token of every sequence."""
        return int(self._tok["BOS_None"])

    @property
    def eos_token_id(self) -> int:
        """Id of EOS, the last token of every sequence."""
        return int(self._tok["EOS_None"])

    @property
    def mask_token_id(self) -> int:
        """Id of MASK, for masked-token pretraining."""
        return int(self._tok["MASK_None"])

    def id_to_token(self, ids: list[int]) -> list[str]:
        """Token strings of ids [L]."""
        return [self._tok[int(i)] for i in ids]

    # -- encoding -----------------------------------------------------------------------------------
    def to_grid_score(self, perf: Performance) -> Any:
        """The one-track `symusic.Score` (ticks, POSITIONS_PER_BEAT tpq, GRID_QPM) that gets tokenized."""
        from symusic import Note, Pedal, Score, Tempo, Track

        ticks_per_s = POSITIONS_PER_BEAT * GRID_QPM / 60.0
        score = Score(POSITIONS_PER_BEAT)
        score.tempos.append(Tempo(0, GRID_QPM))
        track = Track("Piano", 0, False)
        notes = perf.notes
        onset = np.round(notes[:, 0] * ticks_per_s).astype(np.int32)
        offset = np.round(notes[:, 1] * ticks_per_s).astype(np.int32)
        track.notes = Note.from_numpy(
            onset,
            np.maximum(offset - onset, 1).astype(np.int32),
            np.clip(notes[:, 2], 0, 127).astype(np.int8),
            np.clip(np.round(notes[:, 3]), 1, 127).astype(np.int8),
        )
        pedals = pedal_intervals(perf)
        if len(pedals):
            start = np.round(pedals[:, 0] * ticks_per_s).astype(np.int32)
            end = np.round(pedals[:, 1] * ticks_per_s).astype(np.int32)
            track.pedals = Pedal.from_numpy(start, np.maximum(end - start, 1).astype(np.int32))
        score.tracks.append(track)
        return score

    def _performance(self, source: str | Path | Any) -> Performance:
        if isinstance(source, Performance):
            return source
        if isinstance(source, (str, Path)):
            return load_performance(source)
        if hasattr(source, "tracks") and hasattr(source, "ticks_per_quarter"):
            return performance_from_score(source)
        raise TypeError(f"cannot tokenize a {type(source).__name__}: give a MIDI path, symusic.Score or Performance")

    def encode(self, source: str | Path | Any) -> list[int]:
        """MIDI path / symusic.Score / Performance -> ids [L <= max_seq_len]: BOS, REMI tokens, EOS."""
        perf = self._performance(source)
        keep = (perf.notes[:, 2] >= PITCH_RANGE[0]) & (perf.notes[:, 2] < PITCH_RANGE[1])
        if not keep.any():
            raise InputError("no piano notes (pitch 21-108) to tokenize", perf.path)
        seqs = self._tok.encode(self.to_grid_score(perf))
        ids = [int(i) for i in seqs[0].ids]
        budget = self.max_seq_len - 2
        if len(ids) > budget:
            ids = ids[: self._cut_point(ids, budget)]
        return [self.bos_token_id, *ids, self.eos_token_id]

    def _cut_point(self, ids: list[int], budget: int) -> int:
        """Largest cut <= budget where ids[cut] opens an event, so no note is split."""
        for cut in range(budget, 0, -1):
            if self.id_to_token([ids[cut]])[0].split("_", 1)[0] in _EVENT_STARTS:
                return cut
        return budget

    def decode(self, ids: list[int] | np.ndarray) -> Any:
        """ids [L] -> `symusic.Score` (ticks at POSITIONS_PER_BEAT tpq, 120 qpm, one piano track)."""
        special = {self.pad_token_id, self.bos_token_id, self.eos_token_id, self.mask_token_id}
        body = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) not in special]
        return self._tok.decode([body])

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the tokenizer settings and vocabulary as JSON (atomically); return the path."""
        payload = {
            "format": _FORMAT,
            "max_seq_len": self.max_seq_len,
            "num_velocities": self.num_velocities,
            "miditok": self._tok.to_dict(),
            "vocab": self.vocab,
        }
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(payload, indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PianoTokenizer:
        """Rebuild a saved tokenizer; InputError if the file is not one or its vocabulary differs."""
        from pianoeval.core.io import read_json

        payload = read_json(path)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise InputError(f"not a saved PianoTokenizer (expected format {_FORMAT!r})", path)
        tok = cls(max_seq_len=int(payload["max_seq_len"]), num_velocities=int(payload["num_velocities"]))
        if tok.vocab != payload["vocab"]:
            # A different miditok version or tokenizer code would silently change token meanings.
            raise InputError("saved vocabulary differs from the one this code builds", path)
        return tok
