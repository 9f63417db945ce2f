"""Piano audio → Performance (notes + sustain pedal) with the TransKun 2.0 model shipped in its wheel.

TransKun works on 16 s windows hopping by 8 s (its training setting) and stitches notes across windows;
a long recording is processed window by window with a progress bar. CPU cost: see docs/audio_backbones.md.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.data.midi import Performance
from pianoeval.errors import InputError

log = logging.getLogger(__name__)

# TransKun's symbols for pedals are negated CC numbers; only the sustain pedal has a place in Performance.
SUSTAIN_SYMBOL = -64


@functools.lru_cache(maxsize=2)
def _model(device: str) -> torch.nn.Module:
    """The pretrained TransKun network on `device`, loaded once per process."""
    from pianoeval.audio.backbones import load_transkun_model

    return load_transkun_model(pretrained=True).to(device)


def _read_audio(wave_or_path: str | Path | np.ndarray, sample_rate: int | None) -> tuple[np.ndarray, int, str | None]:
    """(audio [S, C] float32, rate, path) from a file or an array [S] / [S, C]; InputError if unusable."""
    if isinstance(wave_or_path, (str, Path)):
        import soundfile as sf

        path = Path(wave_or_path)
        if not path.is_file():
            raise InputError("audio file not found", path)
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError for corrupt files
            raise InputError(f"not a readable audio file ({type(exc).__name__}: {exc})", path) from exc
        source: str | None = str(path)
    else:
        if sample_rate is None:
            raise InputError("sample_rate is required when transcribing an array")
        audio, rate, source = np.asarray(wave_or_path, dtype=np.float32), int(sample_rate), None
        if audio.ndim == 1:
            audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise InputError(f"expected audio [samples] or [samples, channels], got shape {audio.shape}", source)
    if not np.isfinite(audio).all():
        raise InputError("audio contains NaN or infinite samples", source)
    return audio, rate, source


def _to_performance(notes: list[Any], path: str | None) -> Performance:
    """TransKun notes (pitch < 0 = pedal interval) → Performance with CC64 down/up events."""
    keys = [(n.start, n.end, n.pitch, n.velocity) for n in notes if n.pitch > 0]
    pedal: list[tuple[float, float]] = []
    for n in notes:
        if n.pitch == SUSTAIN_SYMBOL:
            # As transkun's MIDI writer (CC64 = velocity at the start, 0 at the end), floored at 64 so a
            # detected pedal always counts as down (PEDAL_DOWN_THRESHOLD).
            pedal += [(n.start, float(max(n.velocity, 64))), (n.end, 0.0)]
    return Performance(np.array(keys, dtype=np.float64).reshape(-1, 4), np.array(pedal).reshape(-1, 2), path)


def transcribe_timed(
    wave_or_path: str | Path | np.ndarray,
    sample_rate: int | None = None,
    device: str = "cpu",
    segment_s: float | None = None,
    hop_s: float | None = None,
    progress: bool = True,
) -> tuple[Performance, dict[str, float]]:
    """Like `transcribe`, also returning timing: {"audio_s", "wall_s", "real_time_factor", "n_windows"}."""
    from tqdm import tqdm

    audio, rate, source = _read_audio(wave_or_path, sample_rate)
    model = _model(device)
    if rate != model.fs:
        import soxr

        audio = soxr.resample(audio, rate, model.fs).astype(np.float32)
    segment_s = segment_s or model.segmentSizeInSecond
    hop_s = hop_s or model.segmentHopSizeInSecond
    # Same arithmetic as TransKun.transcribe: the audio is padded by (segment - hop) s on both sides.
    padded = audio.shape[0] + 2 * math.ceil((segment_s - hop_s) * model.fs)
    n_windows = math.ceil(padded / (math.ceil(hop_s * model.fs / model.hopSize) * model.hopSize))

    bar = tqdm(total=n_windows, desc="transcribe", unit="window", disable=not progress, mininterval=2)
    inner = model.transcribeFrames

    def counted(*args: Any, **kwargs: Any) -> Any:
        bar.update(1)
        return inner(*args, **kwargs)

    # An instance attribute shadows the method on this model only; removed right after.
    model.transcribeFrames = counted
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            notes = model.transcribe(
                torch.from_numpy(audio).to(device), stepInSecond=hop_s, segmentSizeInSecond=segment_s
            )
    finally:
        del model.transcribeFrames
        bar.close()
    wall = time.perf_counter() - start
    audio_s = audio.shape[0] / model.fs
    stats = {
        "audio_s": audio_s,
        "wall_s": wall,
        "real_time_factor": wall / audio_s,
        "n_windows": float(n_windows),
    }
    log.info("transcribed %.1f s of audio in %.1f s (%.2fx real time)", audio_s, wall, stats["real_time_factor"])
    return _to_performance(notes, source), stats


def transcribe(
    wave_or_path: str | Path | np.ndarray, sample_rate: int | None = None, device: str = "cpu"
) -> Performance:
    """Audio file or array [S] / [S, C] (with sample_rate) → Performance (notes [N, 4], pedal [M, 2])."""
    return transcribe_timed(wave_or_path, sample_rate, device)[0]
