"""PianoTokenizer: REMI round trip, special tokens, truncation, merging, save/load and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, pedal_intervals, write_performance
from pianoeval.symbolic.tokenizer import POSITIONS_PER_BEAT, PianoTokenizer

# One grid tick in seconds (120 qpm): onsets are kept to within half of it.
TICK_S = 60.0 / 120.0 / POSITIONS_PER_BEAT


@pytest.fixture(scope="module")
def tok() -> PianoTokenizer:
    return PianoTokenizer()


def random_performance(seed: int = 0, n: int = 40) -> Performance:
    """Random piano notes on a 1/16 s grid (away from rounding edges), with two pedal presses."""
    rng = np.random.default_rng(seed)
    onsets = rng.integers(0, 128, n) / 16.0
    durations = rng.integers(2, 24, n) / 16.0
    pitches = rng.integers(21, 109, n)
    velocities = rng.integers(1, 128, n)
    notes = np.stack([onsets, onsets + durations, pitches, velocities], axis=1)
    # Drop exact duplicates (same onset and pitch), which a piano cannot play.
    _, first = np.unique(notes[:, [0, 2]], axis=0, return_index=True)
    notes = notes[np.sort(first)]
    # A key cannot sound twice at once (MIDI would cut the first note): end a note at the next
    # onset of its pitch.
    for i, (onset, _, pitch, _) in enumerate(notes):
        later = notes[(notes[:, 2] == pitch) & (notes[:, 0] > onset), 0]
        if len(later):
            notes[i, 1] = min(notes[i, 1], later.min())
    pedal = np.array([[0.5, 127], [1.5, 0], [3.0, 100], [4.25, 10]])
    return Performance(notes, pedal)


def score_notes_seconds(score) -> np.ndarray:  # score: symusic.Score
    """[N, 4] (onset, offset, pitch, velocity) of all tracks of a symusic Score, sorted by onset, pitch."""
    sec = score.to("second")
    rows = [(n.time, n.time + n.duration, n.pitch, n.velocity) for track in sec.tracks for n in track.notes]
    arr = np.array(rows, dtype=np.float64)
    return arr[np.lexsort((arr[:, 2], arr[:, 0]))]


def test_special_tokens_are_distinct_and_in_vocab(tok: PianoTokenizer) -> None:
    ids = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id}
    assert len(ids) == 4
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.vocab["MASK_None"] == tok.mask_token_id
    assert tok.pad_token_id == 0


def test_round_trip_keeps_pitches_onsets_velocities(tok: PianoTokenizer) -> None:
    perf = random_performance()
    ids = tok.encode(perf)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert all(0 <= i < tok.vocab_size for i in ids)
    decoded = score_notes_seconds(tok.decode(ids))
    orig = perf.notes
    assert decoded.shape == orig.shape
    np.testing.assert_array_equal(decoded[:, 2], orig[:, 2])
    assert np.abs(decoded[:, 0] - orig[:, 0]).max() <= TICK_S / 2 + 1e-6
    # 32 velocity bins over 0-127: the nearest bin is at most half a bin (~2) away.
    assert np.abs(decoded[:, 3] - orig[:, 3]).max() <= 127 / 32 / 2 + 0.5
    # Durations under 0.5 s are kept to one tick; all within 10 %.
    dur_o, dur_d = orig[:, 1] - orig[:, 0], decoded[:, 1] - decoded[:, 0]
    short = dur_o < 0.5
    assert np.abs(dur_d - dur_o)[short].max() <= TICK_S + 1e-6
    assert (np.abs(dur_d - dur_o) / dur_o).max() <= 0.1


def test_round_trip_keeps_pedal(tok: PianoTokenizer) -> None:
    perf = random_performance()
    score = tok.decode(tok.encode(perf)).to("second")
    got = np.array([(p.time, p.time + p.duration) for p in score.tracks[0].pedals])
    np.testing.assert_allclose(got, [[0.5, 1.5], [3.0, 4.25]], atol=TICK_S)


def test_pedal_intervals_threshold_and_open_end() -> None:
    perf = Performance([[0.0, 5.0, 60, 80]], [[1.0, 70], [1.2, 90], [2.0, 63], [3.0, 64]])
    np.testing.assert_allclose(pedal_intervals(perf), [[1.0, 2.0], [3.0, 5.0]])


def test_path_score_and_performance_give_same_ids(tok: PianoTokenizer, tmp_path: Path) -> None:
    import symusic

    perf = random_performance(seed=1)
    path = write_performance(perf, tmp_path / "perf.mid")
    ids = tok.encode(perf)
    assert tok.encode(path) == ids
    assert tok.encode(str(path)) == ids
    assert tok.encode(symusic.Score(str(path))) == ids


def test_tracks_are_merged_into_one_piano_stream(tok: PianoTokenizer, tmp_path: Path) -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    right, left = pretty_midi.Instrument(program=0), pretty_midi.Instrument(program=40)
    right.notes.append(pretty_midi.Note(velocity=90, pitch=72, start=0.0, end=0.5))
    left.notes.append(pretty_midi.Note(velocity=60, pitch=48, start=0.25, end=1.0))
    pm.instruments.extend([right, left])
    path = tmp_path / "two_tracks.mid"
    pm.write(str(path))
    merged = Performance([[0.0, 0.5, 72, 90], [0.25, 1.0, 48, 60]])
    ids = tok.encode(path)
    assert ids == tok.encode(merged)
    assert len(tok.decode(ids).tracks) == 1
    pitches = [t for t in tok.id_to_token(ids) if t.startswith("Pitch_")]
    assert pitches == ["Pitch_72", "Pitch_48"]


def test_truncation_keeps_whole_events(tok: PianoTokenizer) -> None:
    perf = random_performance(n=80)
    full = tok.encode(perf)
    short_tok = PianoTokenizer(max_seq_len=41)
    short = short_tok.encode(perf)
    assert len(full) > 41 and len(short) <= 41
    assert short[0] == short_tok.bos_token_id and short[-1] == short_tok.eos_token_id
    assert short[:-1] == full[: len(short) - 1]
    # The cut falls before an event-opening token of the full sequence: no dangling Pitch/Velocity.
    next_token = tok.id_to_token([full[len(short) - 1]])[0]
    assert next_token.split("_")[0] in {"Bar", "Position", "Tempo", "Pitch", "Pedal"}
    n_notes = len(score_notes_seconds(short_tok.decode(short)))
    assert 0 < n_notes == sum(t.startswith("Pitch_") for t in tok.id_to_token(short))


def test_save_load_gives_identical_encodings(tok: PianoTokenizer, tmp_path: Path) -> None:
    custom = PianoTokenizer(max_seq_len=64, num_velocities=16)
    path = custom.save(tmp_path / "tok" / "tokenizer.json")
    loaded = PianoTokenizer.load(path)
    assert loaded.max_seq_len == 64 and loaded.num_velocities == 16
    assert loaded.vocab == custom.vocab and loaded.vocab != tok.vocab
    perf = random_performance(seed=2)
    assert loaded.encode(perf) == custom.encode(perf)


def test_load_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match=r"other\.json"):
        PianoTokenizer.load(path)


@pytest.mark.parametrize("content", [b"", b"MThd garbage that is not a MIDI file"], ids=["empty", "corrupt"])
def test_bad_midi_raises_input_error_with_path(tok: PianoTokenizer, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        tok.encode(path)
    assert info.value.path == str(path)


def test_notes_outside_piano_range_raise(tok: PianoTokenizer) -> None:
    with pytest.raises(InputError, match="no piano notes"):
        tok.encode(Performance([[0.0, 1.0, 10, 80]], path="low.mid"))


def test_real_percepiano_segment_fits(tok: PianoTokenizer, shared_data: Path) -> None:
    path = shared_data / "percepiano/midi/performances/Schubert_D960_mv3_8bars_10_31.mid"
    ids = tok.encode(path)
    tokens = tok.id_to_token(ids)
    assert len(ids) < tok.max_seq_len and tokens[-1] == "EOS_None"
    assert sum(t.startswith("Pitch_") for t in tokens) == 66  # every note of the file is kept
    assert tokens.count("Tempo_120.0") == 1
