"""Tests for audio loading/saving: resampling, mono mix-down and every refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianoeval.audio.io import load_audio, save_audio
from pianoeval.core.errors import InputError


def _sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A mono sine [S] float32."""
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_48k_becomes_mono_24k(tmp_path: Path) -> None:
    left = _sine(1.5, 48_000, 440.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "st.wav"
    sf.write(path, stereo, 48_000, subtype="FLOAT")
    wave = load_audio(path, sample_rate=24_000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 36_000) <= 2
    # The mean of a sine and silence has half the amplitude; the 440 Hz peak survives resampling.
    assert np.abs(wave[1000:-1000]).max() == pytest.approx(0.15, abs=0.01)
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(wave.size, 1 / 24_000)[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"], ids=["wav", "flac", "ogg", "mp3"])
def test_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    if suffix == ".mp3" and "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support (needs >= 1.1)")
    wave = _sine(0.5, 24_000)
    path = tmp_path / f"x{suffix}"
    sf.write(path, wave, 24_000)
    back = load_audio(path)
    # MP3 adds encoder delay/padding, so compare the aligned middle for it.
    assert abs(back.size - wave.size) <= (2400 if suffix == ".mp3" else 0)
    if suffix != ".mp3":
        assert np.corrcoef(back, wave)[0, 1] > 0.95
    spectrum = np.abs(np.fft.rfft(back))
    assert np.fft.rfftfreq(back.size, 1 / 24_000)[spectrum.argmax()] == pytest.approx(440.0, abs=3.0)


def test_save_audio_is_atomic_and_readable(tmp_path: Path) -> None:
    wave = _sine(0.25, 24_000)
    out = save_audio(wave, tmp_path / "sub" / "y.wav", 24_000)
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["y.wav"]  # no temporary file left behind
    np.testing.assert_array_equal(load_audio(out), wave)


def _write(path: Path, wave: np.ndarray, rate: int = 24_000) -> Path:
    sf.write(path, wave, rate, subtype="FLOAT")
    return path


def _bad_file(kind: str, folder: Path) -> Path:
    """Write one kind of unusable audio file in `folder` and return its path."""
    path = folder / f"{kind}.wav"
    if kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF but not audio " * 20)
    elif kind == "zero-length":
        _write(path, np.zeros(0, np.float32))
    elif kind == "nan":
        _write(path, np.where(np.arange(2400) == 5, np.nan, 0.3).astype(np.float32))
    elif kind == "silent":
        _write(path, np.full(2400, 1e-4, np.float32))
    elif kind == "clipped":
        _write(path, np.clip(_sine(0.2, 24_000, amp=3.0), -1, 1))
    return path  # "missing": never written


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "not found"),
        ("empty-file", "empty"),
        ("corrupt", "not a readable audio file"),
        ("zero-length", "no samples"),
        ("nan", "NaN"),
        ("silent", "silent"),
        ("clipped", "clipped"),
    ],
    ids=["missing", "empty-file", "corrupt", "zero-length", "nan", "silent", "clipped"],
)
def test_refusals(tmp_path: Path, kind: str, message: str) -> None:
    path = _bad_file(kind, tmp_path)
    with pytest.raises(InputError, match=message) as info:
        load_audio(path)
    assert info.value.path == str(path)


def test_too_long_only_when_limit_given(tmp_path: Path) -> None:
    path = _write(tmp_path / "long.wav", _sine(2.0, 24_000))
    assert load_audio(path, max_seconds=3.0).size == 48_000
    with pytest.raises(InputError, match="more than the 1 s limit"):
        load_audio(path, max_seconds=1.0)


def test_quiet_but_not_silent_is_accepted(tmp_path: Path) -> None:
    # -50 dBFS RMS: a soft passage, above the -60 dBFS silence threshold.
    path = _write(tmp_path / "quiet.wav", _sine(0.5, 24_000, amp=10 ** (-50 / 20) * np.sqrt(2)))
    assert load_audio(path).size == 12_000
