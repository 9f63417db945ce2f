"""Tests for the audio augmentations: shapes, identity, determinism and each effect's measured property."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianoeval.audio.augmentation import (
    AUGMENTATIONS,
    NOISE_KINDS,
    AudioAugmentor,
    synthetic_ir,
    synthetic_noise,
)
from pianoeval.core.errors import InputError

SR = 24_000


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR in dB of `noisy` [S] against `clean` [S]: clean power over residual power."""
    clean = np.asarray(clean, np.float64)
    residual = np.asarray(noisy, np.float64) - clean
    return float(20.0 * np.log10(np.sqrt(np.mean(clean**2)) / max(np.sqrt(np.mean(residual**2)), 1e-12)))


def _band_energy_db(wave: np.ndarray, lo: float, hi: float) -> float:
    """Energy (dB) of `wave` between `lo` and `hi` Hz."""
    spectrum = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / SR)
    return float(10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].sum() + 1e-20))


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    """1.5 s of a decaying chord with harmonics up to ~10 kHz plus a little broadband noise [S]."""
    rng = np.random.default_rng(3)
    t = np.arange(int(1.5 * SR)) / SR
    wave = sum(
        np.sin(2 * np.pi * f0 * h * t) / h for f0 in (220.0, 277.2, 329.6) for h in range(1, 30) if f0 * h < 10_000
    )
    wave = wave * np.exp(-1.5 * t) + 0.01 * rng.normal(size=t.size)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


@pytest.mark.parametrize("name", AUGMENTATIONS, ids=list(AUGMENTATIONS))
def test_each_augmentation_preserves_shape_and_changes_wave(music: np.ndarray, name: str) -> None:
    out = AudioAugmentor(seed=0).apply(music, name)
    assert out.shape == music.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6
    assert not np.allclose(out, music, atol=1e-3)


def test_identity_when_augment_prob_zero(music: np.ndarray) -> None:
    aug = AudioAugmentor(augment_prob=0.0, seed=5)
    for _ in range(5):
        assert np.array_equal(aug(music), music)


def test_random_chain_is_seeded(music: np.ndarray) -> None:
    a, b, c = (
        AudioAugmentor(seed=7, augment_prob=1.0),
        AudioAugmentor(seed=7, augment_prob=1.0),
        AudioAugmentor(seed=8, augment_prob=1.0),
    )
    outs_a = [a(music) for _ in range(4)]
    outs_b = [b(music) for _ in range(4)]
    outs_c = [c(music) for _ in range(4)]
    for x, y in zip(outs_a, outs_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(outs_a, outs_c, strict=True))
    # Global numpy state is neither read nor advanced.
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    AudioAugmentor(seed=7, augment_prob=1.0)(music)
    assert np.random.random() == before


def test_augment_prob_is_the_fraction_changed(music: np.ndarray) -> None:
    aug = AudioAugmentor(seed=1, augment_prob=0.3, probs={"eq": 0.5, "lowpass": 0.5})
    changed = [not np.array_equal(aug(music[:2400]), music[:2400]) for _ in range(400)]
    assert np.mean(changed) == pytest.approx(0.3, abs=0.07)


@pytest.mark.parametrize("kind", NOISE_KINDS, ids=list(NOISE_KINDS))
@pytest.mark.parametrize("snr", [5.0, 20.0], ids=["snr5", "snr20"])
def test_noise_snr_is_as_requested(music: np.ndarray, kind: str, snr: float) -> None:
    out = AudioAugmentor(seed=2).apply(music * 0.5, "noise", snr_db=snr, kind=kind)
    assert measured_snr_db(music * 0.5, out) == pytest.approx(snr, abs=1.0)


def test_noise_from_folder(music: np.ndarray, tmp_path: Path) -> None:
    # A short noise file is looped to the wave's length; the SNR still holds.
    sf.write(tmp_path / "hum.wav", 0.2 * np.sin(2 * np.pi * 50 * np.arange(4800) / SR), SR)
    out = AudioAugmentor(noise_dir=tmp_path, seed=0).apply(music * 0.5, "noise", snr_db=12.0)
    assert measured_snr_db(music * 0.5, out) == pytest.approx(12.0, abs=1.0)
    residual = out - music * 0.5
    spectrum = np.abs(np.fft.rfft(residual))
    assert np.fft.rfftfreq(residual.size, 1 / SR)[spectrum.argmax()] == pytest.approx(50.0, abs=2.0)


def test_phone_removes_high_band(music: np.ndarray) -> None:
    out = AudioAugmentor(seed=0).apply(music, "phone")
    drop_high = _band_energy_db(music, 4000, 12_000) - _band_energy_db(out, 4000, 12_000)
    drop_mid = _band_energy_db(music, 500, 3000) - _band_energy_db(out, 500, 3000)
    assert drop_high > 20.0
    assert abs(drop_mid) < 10.0  # the speech band passes


def test_lowpass_cuts_above_cutoff(music: np.ndarray) -> None:
    out = AudioAugmentor(seed=0).apply(music, "lowpass", cutoff_hz=2000.0)
    assert _band_energy_db(music, 6000, 12_000) - _band_energy_db(out, 6000, 12_000) > 30.0


def test_pitch_shift_of_a_sine() -> None:
    t = np.arange(2 * SR) / SR
    sine = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    out = AudioAugmentor(seed=0).apply(sine, "pitch_shift", cents=50)
    assert out.shape == sine.shape
    n = SR  # the first second (no padding there); zero-padded FFT for 0.125 Hz bins
    spectrum = np.abs(np.fft.rfft(out[:n] * np.hanning(n), 8 * n))
    peak_hz = np.fft.rfftfreq(8 * n, 1 / SR)[spectrum.argmax()]
    assert peak_hz == pytest.approx(440.0 * 2 ** (50 / 1200), abs=2.0)  # 452.9 Hz


def test_eq_gains_match_requested_db() -> None:
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.normal(size=4 * SR)).astype(np.float32)
    out = AudioAugmentor(seed=0).apply(noise, "eq", low_db=6.0, mid_db=0.0, high_db=-6.0, mid_hz=1000.0)
    assert _band_energy_db(out, 20, 80) - _band_energy_db(noise, 20, 80) == pytest.approx(6.0, abs=1.0)
    assert _band_energy_db(out, 9000, 11_000) - _band_energy_db(noise, 9000, 11_000) == pytest.approx(-6.0, abs=1.0)


def test_synthetic_ir_decays_by_rt60() -> None:
    rt60 = 0.6
    ir = synthetic_ir(rt60, SR, np.random.default_rng(0))
    assert ir[0] == 1.0
    tail = ir[int(0.01 * SR) :].astype(np.float64)
    win = int(0.05 * SR)
    energy = np.array([np.mean(tail[i : i + win] ** 2) for i in range(0, tail.size - win, win)])
    assert np.all(np.diff(energy[:8]) < 0)  # strictly decaying over the first 0.4 s
    # Energy falls 60 dB per rt60: over 0.3 s, 30 dB (noisy estimate, so +-5 dB).
    drop_db = 10 * np.log10(energy[0] / energy[6])
    assert drop_db == pytest.approx(60 * 0.3 / rt60, abs=5.0)


def test_room_ir_adds_a_tail_and_bank_is_cached(tmp_path: Path) -> None:
    click = np.zeros(SR, dtype=np.float32)
    click[100] = 0.5
    aug = AudioAugmentor(seed=0, ir_cache_dir=tmp_path)
    out = aug.apply(click, "room_ir", rt60=0.8)
    assert np.abs(out[SR // 4 :]).max() > 1e-3  # energy 0.25 s after a click: reverberation
    bank = aug.synthetic_irs()
    cached = sorted(tmp_path.glob("*.wav"))
    assert len(cached) == len(bank) == 8
    reloaded = AudioAugmentor(seed=0, ir_cache_dir=tmp_path).synthetic_irs()
    for x, y in zip(bank, reloaded, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_synthetic_noise_colours() -> None:
    rng = np.random.default_rng(0)
    pink, brown = synthetic_noise("pink", SR, SR, rng), synthetic_noise("brown", SR, SR, rng)
    # Octave 250-500 Hz against 4-8 kHz: pink loses ~0 dB per octave in band energy, brown ~3 dB per octave.
    tilt = {k: _band_energy_db(w, 250, 500) - _band_energy_db(w, 4000, 8000) for k, w in (("p", pink), ("b", brown))}
    assert tilt["p"] == pytest.approx(0.0, abs=3.0)
    assert tilt["b"] == pytest.approx(12.0, abs=3.0)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        AudioAugmentor().apply(np.zeros(10, np.float32), "reverse")
    with pytest.raises(ValueError, match="mono"):
        AudioAugmentor().apply(np.zeros((2, 10), np.float32), "eq")
    with pytest.raises(InputError, match="no audio files"):
        AudioAugmentor(noise_dir=tmp_path)
    with pytest.raises(InputError, match="not found"):
        AudioAugmentor(room_irs_dir=tmp_path / "missing")


def test_augmentor_leaves_the_global_random_state_alone(music: np.ndarray) -> None:
    """Every augmentation draws from the augmentor's own Generator: Python's and numpy's global states
    are neither read nor changed (training reseeds them per epoch, and robustness and the `augmented`
    view seed per recording). audiomentations draws from both (docs/benchmarks.md, "Libraries of the field")."""
    import random

    random.seed(5)
    np.random.seed(5)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    augmentor = AudioAugmentor(augment_prob=1.0, probs=dict.fromkeys(AUGMENTATIONS, 1.0), seed=0, sample_rate=SR)
    chained = augmentor(music)
    for name in AUGMENTATIONS:
        augmentor.apply(music, name)
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state)
    again = AudioAugmentor(augment_prob=1.0, probs=dict.fromkeys(AUGMENTATIONS, 1.0), seed=0, sample_rate=SR)
    np.random.seed(99)  # a different global state does not change the seeded chain
    np.testing.assert_array_equal(again(music), chained)


def test_room_keeps_the_dry_level(music: np.ndarray) -> None:
    """A room changes the sound, not the level: the reverberant wave has the dry wave's RMS (the dynamics
    dimensions read level; audiomentations' impulse response rescales the peak to 0.5 instead)."""
    out = AudioAugmentor(seed=0, sample_rate=SR).apply(music, "room_ir", rt60=1.0)
    rms = lambda x: float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))  # noqa: E731
    assert rms(out) == pytest.approx(rms(music), rel=1e-3)
