"""Render piano MIDI to mono WAV with the FluidSynth command-line synthesiser and a GM SoundFont."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pianoeval.audio.io import resample, save_audio
from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.errors import InputError
from pianoeval.data.midi import load_performance

# Environment variable naming a SoundFont that overrides the standard locations.
SOUNDFONT_ENV: str = "PIANOEVAL_SOUNDFONT"
# Where Debian/Ubuntu (fluid-soundfont-gm, musescore-general) and Homebrew put a General MIDI SoundFont.
STANDARD_SOUNDFONTS: tuple[str, ...] = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/MuseScore_General.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/default.sf2",
)
# FluidSynth master gain: 0.5 keeps dense pedalled chords below full scale before normalisation.
DEFAULT_GAIN: float = 0.5
# Rendered audio is peak-normalised to this level (-1 dBFS): like real recordings made at an unknown
# gain, absolute level carries no information; loudness is heard in timbre and relative dynamics.
PEAK_LEVEL: float = 10 ** (-1.0 / 20.0)
# Audio after the last sound above SILENCE_DBFS is kept for this long (the piano's release tail).
TAIL_S: float = 1.0
# Level (dBFS, relative to full scale after normalisation) below which the tail counts as silence.
SILENCE_DBFS: float = -60.0
# Bump when render_midi's output changes for the same MIDI and settings: it is part of every
# cached render's key (render_key), so a new version re-renders instead of reusing old files.
RENDER_VERSION: int = 1
# FluidSynth's supported output rates; outside them it renders at 44.1 kHz and we resample.
_SYNTH_RATES: tuple[int, int] = (8_000, 96_000)
_INSTALL_HINT = "install FluidSynth (Debian: apt-get install fluidsynth; macOS: brew install fluid-synth)"


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """Return the SoundFont to use: `explicit`, else $PIANOEVAL_SOUNDFONT, else a standard location."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise InputError("SoundFont not found", path)
        return path
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise InputError(f"SoundFont named by ${SOUNDFONT_ENV} not found", path)
        return path
    for candidate in STANDARD_SOUNDFONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise InputError(
        "no General MIDI SoundFont found; install one (Debian: apt-get install fluid-soundfont-gm; "
        f"macOS: brew install fluid-synth and a .sf2) or set ${SOUNDFONT_ENV} to a .sf2 file",
        STANDARD_SOUNDFONTS[0],
    )


def render_key(
    midi_path: str | Path, soundfont: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
) -> str:
    """Short hex key [12] of one render: the MIDI's bytes, the SoundFont (name, size), rate, gain,
    RENDER_VERSION (and the length cap, when there is one: whole renders keep their keys)."""
    import hashlib

    midi_path, soundfont = Path(midi_path), Path(soundfont)
    try:
        digest = hashlib.sha1(midi_path.read_bytes())
        sf2_size = soundfont.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", exc.filename or midi_path) from exc
    digest.update(f"|{soundfont.name}|{sf2_size}|{sample_rate}|{DEFAULT_GAIN:g}|{RENDER_VERSION}".encode())
    if max_seconds is not None:
        digest.update(f"|max={max_seconds:g}".encode())
    return digest.hexdigest()[:12]


def render_midi(
    midi_path: str | Path,
    wav_path: str | Path,
    soundfont: str | Path | None = None,
    sample_rate: int = SAMPLE_RATE,
    gain: float = DEFAULT_GAIN,
    reverb: bool = False,
    max_seconds: float | None = None,
) -> Path:
    """Render a MIDI file to a mono float WAV [S] at `sample_rate`, peak-normalised (only its first
    `max_seconds` when given: a smaller run); return the WAV path."""
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    load_performance(midi_path)  # refuses missing, corrupt or note-less MIDI with a clear message
    sf2 = find_soundfont(soundfont)
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise InputError(f"the fluidsynth program is not on PATH; {_INSTALL_HINT}", midi_path)
    synth_rate = sample_rate if _SYNTH_RATES[0] <= sample_rate <= _SYNTH_RATES[1] else 44_100
    with tempfile.TemporaryDirectory(prefix="pianoeval_render_") as tmp:
        raw = Path(tmp) / "raw.wav"
        # -n -i: no MIDI input, no shell; -F: render faster than real time to a file.
        # Chorus is off (a piano has none); reverb is optional because rooms are added by augmentation.
        cmd = [
            exe,
            "-n",
            "-i",
            "-q",
            "-g",
            f"{gain:g}",
            "-C",
            "0",
            "-R",
            "1" if reverb else "0",
            "-r",
            str(synth_rate),
            "-T",
            "wav",
            "-O",
            "float",
            "-F",
            str(raw),
            str(sf2),
            str(midi_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not raw.is_file() or raw.stat().st_size == 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise InputError(
                f"fluidsynth failed (exit {proc.returncode}): {detail[-1] if detail else 'no output'}", midi_path
            )
        import soundfile as sf

        wave, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    wave = finalize_render(wave.mean(axis=1), int(rate), sample_rate)
    if max_seconds is not None:
        wave = wave[: round(max_seconds * sample_rate)]
    if wave.size == 0 or not np.any(wave):
        raise InputError("fluidsynth produced silence (are the notes in a playable range?)", midi_path)
    return save_audio(wave, wav_path, sample_rate)


def finalize_render(wave: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono render [S] to `sample_rate`, peak-normalise to PEAK_LEVEL, trim silence after TAIL_S."""
    wave = resample(wave, rate, sample_rate)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak <= 0.0:
        return wave
    wave = wave * np.float32(PEAK_LEVEL / peak)
    loud = np.flatnonzero(np.abs(wave) > 10 ** (SILENCE_DBFS / 20.0))
    end = min(wave.size, int(loud[-1]) + 1 + round(TAIL_S * sample_rate))
    return np.ascontiguousarray(wave[:end], dtype=np.float32)
