"""Seeded, shape-preserving audio augmentations: rooms, noise, phone line, EQ, pitch shift, low-pass.

`AudioAugmentor.__call__` draws a random chain (used in training for invariance), and `apply` runs one
named augmentation with explicit parameters (used by the robustness validation). Everything is numpy +
scipy + soxr driven by a `numpy.random.Generator`, so no global random state is read or changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from pianoeval.audio.io import load_audio, resample, save_audio
from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.errors import InputError
from pianoeval.data.manifest import VIEWS

# Names accepted by `apply`, in the order `__call__` chains them: the instrument is detuned and
# coloured, sounds in a room, is mixed with room noise, then passes a band-limited channel.
AUGMENTATIONS: tuple[str, ...] = ("pitch_shift", "eq", "room_ir", "noise", "lowpass", "phone")
# Relative probability of each augmentation once a wave is chosen for augmentation.
DEFAULT_PROBS: dict[str, float] = {
    "pitch_shift": 0.3,
    "eq": 0.5,
    "room_ir": 0.5,
    "noise": 0.5,
    "lowpass": 0.2,
    "phone": 0.15,
}
# Synthetic room bank: this many impulse responses with RT60 spread over RT60_RANGE_S (small room to hall).
N_SYNTHETIC_IRS: int = 8
RT60_RANGE_S: tuple[float, float] = (0.2, 1.2)
# Random-draw ranges for the other augmentations.
EQ_GAIN_DB: tuple[float, float] = (-9.0, 9.0)
LOWPASS_HZ: tuple[float, float] = (2000.0, 8000.0)
NOISE_KINDS: tuple[str, ...] = ("pink", "brown", "babble")
# Telephone band (ITU narrowband) and its sample rate.
PHONE_BAND_HZ: tuple[float, float] = (300.0, 3400.0)
PHONE_RATE: int = 8000
# Outputs are scaled down if their peak exceeds this, so an augmented wave never clips.
MAX_PEAK: float = 0.99
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}


class AudioAugmentor:
    """Random or named augmentation of mono waves [S] -> [S] at `sample_rate`, reproducible from `seed`."""

    def __init__(
        self,
        room_irs_dir: str | Path | None = None,
        noise_dir: str | Path | None = None,
        augment_prob: float = 0.5,
        seed: int = 0,
        sample_rate: int = SAMPLE_RATE,
        probs: Mapping[str, float] | None = None,
        snr_db: tuple[float, float] = (10.0, 30.0),
        pitch_cents: tuple[float, float] = (-50.0, 50.0),
        ir_cache_dir: str | Path | None = None,
    ) -> None:
        if not 0.0 <= augment_prob <= 1.0:
            raise ValueError(f"augment_prob must be in [0, 1], got {augment_prob}")
        probs = dict(DEFAULT_PROBS if probs is None else probs)
        unknown = set(probs) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {list(AUGMENTATIONS)}")
        if any(p < 0 for p in probs.values()) or (augment_prob > 0 and not any(probs.values())):
            raise ValueError("augmentation probabilities must be >= 0 and not all zero")
        self.probs = {name: float(probs.get(name, 0.0)) for name in AUGMENTATIONS}
        self.augment_prob = float(augment_prob)
        self.sample_rate = int(sample_rate)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.pitch_cents = (float(pitch_cents[0]), float(pitch_cents[1]))
        self.rng = np.random.default_rng(seed)
        self._seed = seed
        self._ir_files = _audio_files(room_irs_dir, "room impulse response") if room_irs_dir else []
        self._noise_files = _audio_files(noise_dir, "noise") if noise_dir else []
        self._ir_cache_dir = Path(ir_cache_dir) if ir_cache_dir else None
        self._loaded: dict[Path, np.ndarray] = {}
        self._synthetic_irs: list[np.ndarray] | None = None
        self._ops: dict[str, Callable[..., np.ndarray]] = {
            "room_ir": self._room_ir,
            "noise": self._noise,
            "phone": self._phone,
            "eq": self._eq,
            "pitch_shift": self._pitch_shift,
            "lowpass": self._lowpass,
        }

    def __call__(self, wave: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random augmentation chain of a mono wave [S] -> [S] float32; identity when augment_prob is 0."""
        rng = self.rng if rng is None else rng
        wave = _as_mono(wave)
        if self.augment_prob == 0.0 or rng.random() >= self.augment_prob:
            return wave
        # Each augmentation fires with its own probability; if none fired, one is picked in proportion
        # to them, so exactly `augment_prob` of the waves are changed.
        chosen = [name for name in AUGMENTATIONS if rng.random() < self.probs[name]]
        if not chosen:
            p = np.array([self.probs[n] for n in AUGMENTATIONS])
            chosen = [AUGMENTATIONS[int(rng.choice(len(AUGMENTATIONS), p=p / p.sum()))]]
        for name in chosen:
            wave = self.apply(wave, name, rng=rng)
        return wave

    def apply(self, wave: np.ndarray, name: str, rng: np.random.Generator | None = None, **params: Any) -> np.ndarray:
        """Run augmentation `name` on a mono wave [S] -> [S] float32; parameters not given are drawn at random.

        room_ir: rt60 (s), ir (array), wet (0-1); noise: snr_db, kind (pink|brown|babble) or noise (array);
        phone: bits (None = no mu-law quantisation), compress (ratio); eq: low_db, mid_db, high_db, mid_hz;
        pitch_shift: cents; lowpass: cutoff_hz.
        """
        if name not in self._ops:
            raise ValueError(f"unknown augmentation {name!r}; known: {list(AUGMENTATIONS)}")
        wave = _as_mono(wave)
        if wave.size == 0:
            return wave
        out = self._ops[name](wave, self.rng if rng is None else rng, **params)
        out = np.nan_to_num(np.asarray(out, dtype=np.float32)[: wave.size], nan=0.0, posinf=0.0, neginf=0.0)
        if out.size < wave.size:
            out = np.pad(out, (0, wave.size - out.size))
        peak = float(np.abs(out).max())
        return out * np.float32(MAX_PEAK / peak) if peak > MAX_PEAK else out

    # -- the augmentations ---------------------------------------------------------------------------

    def _room_ir(
        self, wave: np.ndarray, rng: np.random.Generator, rt60: float | None = None, ir: Any = None, wet: float = 1.0
    ) -> np.ndarray:
        """Convolve with a room impulse response (given, from the folder, synthetic bank, or made for `rt60`)."""
        if ir is None:
            if rt60 is not None:
                ir = synthetic_ir(rt60, self.sample_rate, rng)
            elif self._ir_files:
                ir = self._load(self._ir_files[int(rng.integers(len(self._ir_files)))])
            else:
                bank = self.synthetic_irs()
                ir = bank[int(rng.integers(len(bank)))]
        ir = np.asarray(ir, dtype=np.float64)
        ir = ir / max(float(np.abs(ir).max()), 1e-12)
        reverberant = signal.fftconvolve(wave.astype(np.float64), ir)[: wave.size]
        # Keep the level of the dry input so a room does not double as a gain change.
        reverberant *= _rms(wave) / max(_rms(reverberant), 1e-12)
        return wet * reverberant + (1.0 - wet) * wave

    def _noise(
        self,
        wave: np.ndarray,
        rng: np.random.Generator,
        snr_db: float | None = None,
        kind: str | None = None,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """Add noise at `snr_db` (signal power over noise power, whole wave): a file, or synthetic `kind`."""
        snr_db = float(rng.uniform(*self.snr_db)) if snr_db is None else float(snr_db)
        if noise is None:
            if kind is None and self._noise_files:
                noise = self._load(self._noise_files[int(rng.integers(len(self._noise_files)))])
            else:
                kind = str(rng.choice(NOISE_KINDS)) if kind is None else kind
                noise = synthetic_noise(kind, wave.size, self.sample_rate, rng)
        noise = _fit_length(np.asarray(noise, dtype=np.float64), wave.size, rng)
        gain = _rms(wave) / max(_rms(noise), 1e-12) * 10 ** (-snr_db / 20.0)
        return wave + gain * noise

    def _phone(
        self, wave: np.ndarray, rng: np.random.Generator, bits: int | None = 8, compress: float = 4.0
    ) -> np.ndarray:
        """Telephone line: 300-3400 Hz band, 8 kHz sampling, compression, optional mu-law `bits` quantisation."""
        del rng  # deterministic given its parameters
        narrow = resample(wave, self.sample_rate, PHONE_RATE).astype(np.float64)
        sos = signal.butter(6, PHONE_BAND_HZ, btype="bandpass", fs=PHONE_RATE, output="sos")
        narrow = signal.sosfilt(sos, narrow)
        narrow = _compress(narrow, PHONE_RATE, ratio=compress)
        if bits:
            narrow = _mu_law_quantise(narrow, bits)
        out = resample(narrow.astype(np.float32), PHONE_RATE, self.sample_rate)
        # Make-up gain back to the input's RMS: the channel changes the sound, not the level.
        return out * (_rms(wave) / max(_rms(out), 1e-12))

    def _eq(
        self,
        wave: np.ndarray,
        rng: np.random.Generator,
        low_db: float | None = None,
        mid_db: float | None = None,
        high_db: float | None = None,
        mid_hz: float | None = None,
    ) -> np.ndarray:
        """3-band EQ: low shelf at 200 Hz, peak at `mid_hz` (Q 1), high shelf at 4 kHz; gains in dB."""
        low_db, mid_db, high_db = (
            float(rng.uniform(*EQ_GAIN_DB)) if g is None else float(g) for g in (low_db, mid_db, high_db)
        )
        mid_hz = float(np.exp(rng.uniform(np.log(400.0), np.log(4000.0)))) if mid_hz is None else float(mid_hz)
        sos = np.vstack(
            [
                _biquad("lowshelf", 200.0, low_db, self.sample_rate),
                _biquad("peak", mid_hz, mid_db, self.sample_rate, q=1.0),
                _biquad("highshelf", 4000.0, high_db, self.sample_rate),
            ]
        )
        return signal.sosfilt(sos, wave.astype(np.float64))

    def _pitch_shift(self, wave: np.ndarray, rng: np.random.Generator, cents: float | None = None) -> np.ndarray:
        """Shift pitch by `cents` by resampling (tape-speed style: tempo moves by the same ratio), same length."""
        cents = float(rng.uniform(*self.pitch_cents)) if cents is None else float(cents)
        if cents == 0.0:
            return wave
        ratio = 2.0 ** (cents / 1200.0)
        # Declaring the wave to be sampled `ratio` times faster and reading it at the true rate raises
        # every frequency by `ratio`; the result is cut or zero-padded back to the input length.
        return resample(wave, self.sample_rate * ratio, self.sample_rate)

    def _lowpass(self, wave: np.ndarray, rng: np.random.Generator, cutoff_hz: float | None = None) -> np.ndarray:
        """4th-order Butterworth low-pass at `cutoff_hz` (a dull microphone or a lossy encoder)."""
        cutoff = float(np.exp(rng.uniform(*np.log(LOWPASS_HZ)))) if cutoff_hz is None else float(cutoff_hz)
        cutoff = min(cutoff, 0.45 * self.sample_rate)
        sos = signal.butter(4, cutoff, btype="lowpass", fs=self.sample_rate, output="sos")
        return signal.sosfilt(sos, wave.astype(np.float64))

    # -- resources -------------------------------------------------------------------------------------

    def synthetic_irs(self) -> list[np.ndarray]:
        """The seeded bank of N_SYNTHETIC_IRS synthetic room responses, cached in `ir_cache_dir` if given."""
        if self._synthetic_irs is not None:
            return self._synthetic_irs
        rt60s = np.linspace(*RT60_RANGE_S, N_SYNTHETIC_IRS)
        bank = []
        for i, rt60 in enumerate(rt60s):
            cached = None
            if self._ir_cache_dir is not None:
                cached = self._ir_cache_dir / f"synthetic_ir_seed{self._seed}_{i}_rt{rt60:.2f}.wav"
                if cached.is_file():
                    bank.append(self._load(cached, check=False))
                    continue
            ir = synthetic_ir(float(rt60), self.sample_rate, np.random.default_rng([self._seed, i]))
            if cached is not None:
                save_audio(ir, cached, self.sample_rate)
            bank.append(ir)
        self._synthetic_irs = bank
        return bank

    def _load(self, path: Path, check: bool = True) -> np.ndarray:
        """Read (once) an IR or noise file as mono float32 at the augmentor's rate."""
        if path not in self._loaded:
            if check:
                self._loaded[path] = load_audio(path, self.sample_rate)
            else:
                import soundfile as sf

                wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
                self._loaded[path] = resample(wave.mean(axis=1), int(rate), self.sample_rate)
        return self._loaded[path]


def synthetic_ir(rt60: float, sample_rate: int = SAMPLE_RATE, rng: np.random.Generator | None = None) -> np.ndarray:
    """A room impulse response [L] float32: a direct impulse, then Gaussian noise decaying 60 dB in `rt60` s."""
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    rng = np.random.default_rng(0) if rng is None else rng
    n = round(rt60 * 1.2 * sample_rate)
    t = np.arange(n) / sample_rate
    # 60 dB of amplitude decay over rt60: exp(-ln(1000) t / rt60).
    tail = rng.normal(0.0, 1.0, n) * np.exp(-np.log(1000.0) * t / rt60)
    # Air absorbs highs: a gentle low-pass makes the tail less hissy than white noise.
    tail = signal.sosfilt(signal.butter(2, 6000.0, fs=sample_rate, output="sos"), tail)
    predelay = int(0.005 * sample_rate)  # first reflections arrive a few ms after the direct sound
    ir = np.zeros(n + predelay)
    ir[predelay:] = 0.3 * tail / max(float(np.abs(tail).max()), 1e-12)
    ir[0] = 1.0
    return ir.astype(np.float32)


def synthetic_noise(
    kind: str, n: int, sample_rate: int = SAMPLE_RATE, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Noise [n] float64 with unit RMS: `pink` (1/f), `brown` (1/f^2) or `babble` (speech-band murmur)."""
    rng = np.random.default_rng(0) if rng is None else rng
    if kind in ("pink", "brown"):
        spectrum = np.fft.rfft(rng.normal(0.0, 1.0, n))
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        power = 1.0 if kind == "pink" else 2.0
        # Floor at 20 Hz so the DC bin does not dominate.
        spectrum /= np.maximum(freqs, 20.0) ** (power / 2.0)
        noise = np.fft.irfft(spectrum, n)
    elif kind == "babble":
        # Several talkers: speech-band noise, each amplitude-modulated at a syllable rate (3-6 Hz).
        t = np.arange(n) / sample_rate
        sos = signal.butter(4, (300.0, 3000.0), btype="bandpass", fs=sample_rate, output="sos")
        noise = np.zeros(n)
        for _ in range(6):
            rate, phase = rng.uniform(3.0, 6.0), rng.uniform(0, 2 * np.pi)
            envelope = 0.5 * (1.0 + np.sin(2 * np.pi * rate * t + phase)) ** 2
            noise += signal.sosfilt(sos, rng.normal(0.0, 1.0, n)) * envelope
    else:
        raise ValueError(f"unknown noise kind {kind!r}; known: {list(NOISE_KINDS)}")
    return noise / max(_rms(noise), 1e-12)


def _biquad(kind: str, freq: float, gain_db: float, sample_rate: int, q: float = 0.707) -> np.ndarray:
    """One RBJ-cookbook biquad as an sos row [6] (lowshelf, highshelf or peak)."""
    a_gain = 10 ** (gain_db / 40.0)
    w0 = 2 * np.pi * min(freq, 0.45 * sample_rate) / sample_rate
    cos_w, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * a_gain, -2 * cos_w, 1 - alpha * a_gain]
        a = [1 + alpha / a_gain, -2 * cos_w, 1 - alpha / a_gain]
    else:
        sq = 2 * np.sqrt(a_gain) * alpha
        sign = 1 if kind == "lowshelf" else -1
        b = [
            a_gain * ((a_gain + 1) - sign * (a_gain - 1) * cos_w + sq),
            sign * 2 * a_gain * ((a_gain - 1) - sign * (a_gain + 1) * cos_w),
            a_gain * ((a_gain + 1) - sign * (a_gain - 1) * cos_w - sq),
        ]
        a = [
            (a_gain + 1) + sign * (a_gain - 1) * cos_w + sq,
            -sign * 2 * ((a_gain - 1) + sign * (a_gain + 1) * cos_w),
            (a_gain + 1) + sign * (a_gain - 1) * cos_w - sq,
        ]
    b, a = np.asarray(b) / a[0], np.asarray(a) / a[0]
    return np.concatenate([b, a])


def _compress(x: np.ndarray, sample_rate: int, ratio: float = 4.0, threshold_db: float = -30.0) -> np.ndarray:
    """Feed-forward compressor: above `threshold_db` (re the peak), level rises 1/`ratio` as fast."""
    if ratio <= 1.0:
        return x
    peak = max(float(np.abs(x).max()), 1e-12)
    # Envelope: rectified signal smoothed with a 10 ms one-pole filter.
    coeff = np.exp(-1.0 / (0.010 * sample_rate))
    env = signal.lfilter([1 - coeff], [1, -coeff], np.abs(x)) / peak
    level_db = 20 * np.log10(np.maximum(env, 1e-6))
    gain_db = np.minimum(0.0, (threshold_db - level_db) * (1.0 - 1.0 / ratio))
    return x * 10 ** (gain_db / 20.0)


def _mu_law_quantise(x: np.ndarray, bits: int) -> np.ndarray:
    """Mu-law companding to `bits` bits and back (G.711-like coarse quantisation)."""
    peak = max(float(np.abs(x).max()), 1e-12)
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.abs(x / peak)) / np.log1p(mu)
    levels = 2 ** (bits - 1)
    y = np.round(y * levels) / levels
    return peak * np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def _fit_length(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Loop or cut `noise` to `n` samples, starting at a random offset."""
    noise = np.asarray(noise, dtype=np.float64).reshape(-1)
    if noise.size == 0:
        raise ValueError("empty noise signal")
    if noise.size == n:
        return noise
    start = int(rng.integers(noise.size))
    reps = int(np.ceil((n + start) / noise.size))
    return np.tile(noise, reps)[start : start + n]


def _rms(x: np.ndarray) -> float:
    """Root mean square of an array (float64)."""
    return float(np.sqrt(np.mean(np.square(np.asarray(x, dtype=np.float64))))) if np.size(x) else 0.0


def _as_mono(wave: np.ndarray) -> np.ndarray:
    """Check a wave is mono [S] and return it as float32 (the same values, no copy if already float32)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono wave [S], got shape {wave.shape}")
    return wave


def _audio_files(folder: str | Path, what: str) -> list[Path]:
    """Sorted audio files in `folder`; InputError if it is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder not found", folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES)
    if not files:
        raise InputError(f"{what} folder holds no audio files ({', '.join(sorted(_AUDIO_SUFFIXES))})", folder)
    return files


def view_seed(segment_id: str, seed: int) -> int:
    """The augmentation seed of a segment's augmented view: the same on every run and machine."""
    return (int(hashlib.sha1(segment_id.encode()).hexdigest()[:8], 16) + int(seed)) % 2**31


def view_wave(wave: Any, sample_rate: int, view: str, seed: int) -> Any:
    """The recording [S] as heard in `view`: as is (clean) or through a random phone-like chain (augmented)."""
    if view == "clean":
        return wave
    if view == "augmented":
        from pianoeval.audio.augmentation import AudioAugmentor

        return AudioAugmentor(augment_prob=1.0, seed=seed, sample_rate=sample_rate)(wave)
    raise ValueError(f"unknown transcription view {view!r}; known: {list(VIEWS)}")
