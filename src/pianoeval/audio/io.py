"""Read and write audio as mono float32 at the project sample rate, refusing unusable recordings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path

log = logging.getLogger(__name__)

# Below this RMS (dBFS) a recording is treated as silence: a quiet piano passage sits near -40 dBFS,
# an unplugged input near -90.
SILENCE_DBFS: float = -60.0
# A sample at or above this magnitude counts as clipped (full scale, allowing for float rounding).
CLIP_LEVEL: float = 0.999
# More than this fraction of clipped samples means the recording is distorted, not merely loud:
# it is still used (timing, notes and pedalling survive clipping) but a warning says so.
WARN_CLIPPED_FRACTION: float = 0.01
# More than this and the wave is a square wave rather than a recording: refused.
MAX_CLIPPED_FRACTION: float = 0.5


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file as mono float32 [S] at `sample_rate`; InputError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError("audio file not found", path)
    if path.stat().st_size == 0:
        raise InputError("audio file is empty (0 bytes)", path)
    wave, file_rate = _read(path)
    if wave.ndim == 2:
        # A mean rather than one channel keeps both hands of a spaced-pair piano recording.
        wave = wave.mean(axis=1)
    if wave.size == 0:
        raise InputError("audio file has no samples", path)
    if not np.isfinite(wave).all():
        raise InputError("audio contains NaN or infinite samples", path)
    if max_seconds is not None and wave.size / file_rate > max_seconds:
        raise InputError(
            f"audio lasts {wave.size / file_rate:.1f} s, more than the {max_seconds:g} s limit; cut it first",
            path,
        )
    # Clipping is judged before resampling, which would smooth the flat tops away.
    clipped = float(np.mean(np.abs(wave) >= CLIP_LEVEL))
    if clipped > MAX_CLIPPED_FRACTION:
        raise InputError(
            f"audio is clipped ({100 * clipped:.1f}% of samples at full scale); record it at a lower level",
            path,
        )
    if clipped > WARN_CLIPPED_FRACTION:
        log.warning(
            "%s: audio is clipped (%.1f%% of samples at full scale); dynamics and timbre scores are less reliable",
            path,
            100 * clipped,
        )
    rms_db = 20.0 * np.log10(max(float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))), 1e-12))
    if rms_db < SILENCE_DBFS:
        raise InputError(f"audio is silent (RMS {rms_db:.0f} dBFS, below {SILENCE_DBFS:g} dBFS)", path)
    return resample(wave, file_rate, sample_rate)


def save_audio(wave: np.ndarray, path: str | Path, sample_rate: int = SAMPLE_RATE, subtype: str = "FLOAT") -> Path:
    """Write a mono wave [S] (or [S, C]) as WAV/FLAC atomically (format from the suffix); return the path."""
    import soundfile as sf

    path = Path(path)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim not in (1, 2) or wave.shape[0] == 0:
        raise InputError(f"refusing to write audio of shape {wave.shape}", path)
    if path.suffix.lower() == ".flac" and subtype == "FLOAT":
        subtype = "PCM_16"  # FLAC has no float subtype
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wave, sample_rate, subtype=subtype)
    return path


def resample(wave: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Resample a mono wave [S] with soxr (high quality) to float32 [S * to_rate / from_rate]."""
    wave = np.asarray(wave, dtype=np.float32)
    if from_rate == to_rate:
        return np.ascontiguousarray(wave)
    import soxr

    return soxr.resample(wave, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def _read(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file to float32 [S] or [S, C] and its rate: soundfile first, then audioread if installed."""
    import soundfile as sf

    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=False)
        return np.asarray(wave), int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as sf_exc:
        # libsndfile >= 1.1 reads WAV/FLAC/OGG/MP3 itself; audioread (with ffmpeg or GStreamer
        # present) covers what it lacks, such as AAC in .m4a.
        try:
            import audioread

            with audioread.audio_open(str(path)) as f:
                rate, channels = int(f.samplerate), int(f.channels)
                pcm = np.frombuffer(b"".join(f), dtype="<i2")
        except ImportError:
            raise InputError(f"not a readable audio file ({sf_exc})", path) from sf_exc
        except Exception as exc:  # audioread backends raise their own types for undecodable input
            raise InputError(f"not a readable audio file ({sf_exc}; audioread: {type(exc).__name__})", path) from exc
        wave = (pcm.astype(np.float32) / 32768.0).reshape(-1, channels)
        return (wave[:, 0] if channels == 1 else wave), rate
