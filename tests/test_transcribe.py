"""Transcription with TransKun: a FluidSynth rendering of known notes comes back with note F1 >= 0.8."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import mir_eval
import numpy as np
import pytest

from pianoeval.audio.transcribe import _to_performance, transcribe, transcribe_timed
from pianoeval.data.midi import Performance, write_performance
from pianoeval.errors import InputError

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def test_notes_and_sustain_pedal_conversion() -> None:
    notes = [
        SimpleNamespace(start=0.5, end=1.0, pitch=60, velocity=80),
        SimpleNamespace(start=0.1, end=2.0, pitch=-64, velocity=100),
        SimpleNamespace(start=0.2, end=0.4, pitch=-67, velocity=90),  # soft pedal: no place in Performance
        SimpleNamespace(start=0.0, end=0.3, pitch=72, velocity=50),
    ]
    perf = _to_performance(notes, "x.wav")
    np.testing.assert_array_equal(perf.notes, [[0.0, 0.3, 72, 50], [0.5, 1.0, 60, 80]])
    np.testing.assert_array_equal(perf.pedal, [[0.1, 100.0], [2.0, 0.0]])
    assert perf.path == "x.wav"


def test_bad_inputs_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        transcribe(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(InputError, match="not a readable audio file"):
        transcribe(tmp_path / "junk.wav")
    with pytest.raises(InputError, match="sample_rate is required"):
        transcribe(np.zeros(100, dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        transcribe(np.full(100, np.nan, dtype=np.float32), sample_rate=44100)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3")
def test_transcribes_rendered_notes(tmp_path: Path) -> None:
    pitches = [60, 64, 67, 72, 65]
    reference = np.array([[0.3 + 0.6 * i, 0.3 + 0.6 * i + 0.4, p, 90] for i, p in enumerate(pitches)], dtype=float)
    midi = write_performance(Performance(reference), tmp_path / "in.mid")
    wav = tmp_path / "out.wav"
    subprocess.run(
        ["fluidsynth", "-ni", "-F", str(wav), "-r", "44100", str(SOUNDFONT), str(midi)],
        check=True,
        capture_output=True,
    )
    perf, stats = transcribe_timed(wav, progress=False)
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        reference[:, :2],
        mir_eval.util.midi_to_hz(reference[:, 2]),
        perf.notes[:, :2],
        mir_eval.util.midi_to_hz(perf.notes[:, 2]),
        onset_tolerance=0.05,
        offset_ratio=None,
    )
    assert f1 >= 0.8, perf.notes
    assert stats["wall_s"] > 0 and stats["audio_s"] >= reference[-1, 1]
