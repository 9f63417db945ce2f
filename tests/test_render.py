"""Tests for MIDI -> WAV rendering with FluidSynth and SoundFont discovery."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianoeval.audio.render import PEAK_LEVEL, TAIL_S, finalize_render, find_soundfont, render_midi
from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, write_performance

needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")


def _has_soundfont() -> bool:
    try:
        find_soundfont()
    except InputError:
        return False
    return True


needs_soundfont = pytest.mark.skipif(not _has_soundfont(), reason="no General MIDI SoundFont installed")


@needs_fluidsynth
@needs_soundfont
def test_render_tiny_midi(tmp_path: Path) -> None:
    # Three notes starting at 0.5 s, last offset at 1.7 s.
    notes = np.array([[0.5, 0.9, 60, 90], [0.9, 1.3, 64, 90], [1.3, 1.7, 67, 90]], dtype=float)
    midi = write_performance(Performance(notes), tmp_path / "tiny.mid")
    wav = render_midi(midi, tmp_path / "out" / "tiny.wav", sample_rate=24_000)
    info = sf.info(wav)
    assert info.samplerate == 24_000 and info.channels == 1
    wave, _ = sf.read(wav, dtype="float32")
    # Length: the MIDI lasts 1.7 s; the release plus at most TAIL_S of quiet follows, nothing more.
    assert 1.7 < wave.size / 24_000 <= 1.7 + 1.5 + TAIL_S
    assert np.abs(wave).max() == pytest.approx(PEAK_LEVEL, abs=1e-3)
    # Energy onset: first 10 ms frame above -40 dB of the peak lies within 50 ms of the first note.
    frames = wave[: wave.size // 240 * 240].reshape(-1, 240)
    rms = np.sqrt((frames**2).mean(axis=1))
    onset_s = np.argmax(rms > rms.max() * 0.01) * 240 / 24_000
    assert onset_s == pytest.approx(0.5, abs=0.05)
    assert [p.name for p in wav.parent.iterdir()] == ["tiny.wav"]


@needs_fluidsynth
@needs_soundfont
def test_render_other_rate_and_deterministic(tiny_midi: Callable[..., Path], tmp_path: Path) -> None:
    midi = tiny_midi()
    a = render_midi(midi, tmp_path / "a.wav", sample_rate=16_000)
    b = render_midi(midi, tmp_path / "b.wav", sample_rate=16_000)
    assert sf.info(a).samplerate == 16_000
    np.testing.assert_array_equal(sf.read(a)[0], sf.read(b)[0])


def test_render_refuses_bad_midi_before_synth(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    with pytest.raises(InputError, match="MIDI") as info:
        render_midi(bad, tmp_path / "bad.wav")
    assert info.value.path == str(bad)
    assert not (tmp_path / "bad.wav").exists()


def test_render_without_fluidsynth(
    tiny_midi: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sf2 = tmp_path / "fake.sf2"
    sf2.write_bytes(b"x")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="apt-get install fluidsynth"):
        render_midi(tiny_midi(), tmp_path / "x.wav", soundfont=sf2)


def test_find_soundfont_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit.sf2", tmp_path / "env.sf2"
    explicit.write_bytes(b"x")
    env.write_bytes(b"x")
    monkeypatch.setenv("PIANOEVAL_SOUNDFONT", str(env))
    assert find_soundfont(explicit) == explicit
    assert find_soundfont() == env
    monkeypatch.setenv("PIANOEVAL_SOUNDFONT", str(tmp_path / "gone.sf2"))
    with pytest.raises(InputError, match="PIANOEVAL_SOUNDFONT"):
        find_soundfont()
    with pytest.raises(InputError, match="SoundFont not found"):
        find_soundfont(tmp_path / "nope.sf2")


def test_find_soundfont_none_names_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIANOEVAL_SOUNDFONT", raising=False)
    monkeypatch.setattr("pianoeval.audio.render.STANDARD_SOUNDFONTS", (str(tmp_path / "none.sf2"),))
    with pytest.raises(InputError, match="fluid-soundfont-gm"):
        find_soundfont()


def test_finalize_render_normalises_and_trims() -> None:
    rate = 1000
    wave = np.zeros(10 * rate, dtype=np.float32)
    wave[100:600] = 0.25  # sound from 0.1 s to 0.6 s, then 9.4 s of silence
    out = finalize_render(wave, rate, rate)
    assert np.abs(out).max() == pytest.approx(PEAK_LEVEL, rel=1e-6)
    assert out.size == 600 + int(TAIL_S * rate)
