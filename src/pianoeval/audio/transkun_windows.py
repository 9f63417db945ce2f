"""TransKun's windows without PyTorch: where they sit on a recording, their frames and power spectra.

Everything here is NumPy, so `audio.transcribe_ahead` can prepare (and start) a recording's first windows
before PyTorch is imported; `audio.transcribe` and `audio.transkun_fast` use the same functions, so both
paths see the same numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pianoeval.core.errors import ConfigError

# TransKun's own layout (`TRANSKUN_HOP_S` given as `hop_s`): 16 s windows hopping by hop_s, the audio padded by
# (16 - hop_s) s of zeros on both sides, so a 30 s recording runs through 4 windows at a 10 s hop (64 s of
# window for 30 s of audio). The default layout, `plan_windows`, runs the fewest windows that cover the audio
# with EDGE_PAD_S of zeros before it and MIN_OVERLAP_S between neighbours: 2 windows for 30 s, 1 per 15 s
# beyond. On PercePiano and ASAP renderings of 20-60 s it kept the note F1 of TransKun's layout with 43-50 %
# fewer windows (docs/benchmarks.md, "Transcription window layout").
EDGE_PAD_S: float = 1.0
MIN_OVERLAP_S: float = 1.0
# The hop of TransKun's layout before `plan_windows` (and a `hop_s` for comparisons): 10 s.
TRANSKUN_HOP_S: float = 10.0
# The engines that can run TransKun's encoder; ENGINE_ENV overrides the default for every caller.
ENGINES: tuple[str, ...] = ("onnx", "torch")
ENGINE_ENV = "PIANOEVAL_TRANSCRIBE_ENGINE"
# The outputs of the graph of a whole window (`transkun_onnx.OnnxWindow`): the encoder's context and the raw
# interval scores (`transkun_fast`).
SCORED_OUTPUTS: tuple[str, ...] = ("ctx", "raw", "diag")


@dataclass(frozen=True)
class WindowPlan:
    """Where TransKun's windows sit on a recording, in samples at the model's rate: `pad_begin` zeros before
    the audio, then windows of `size` samples starting every `step` (a whole number of frames, so every
    window's frames fall on one grid), `n_windows` of them; past the audio's end, zeros."""

    pad_begin: int
    step: int
    size: int
    n_windows: int

    def starts(self) -> range:
        """Each window's first sample in the padded signal."""
        return range(0, self.n_windows * self.step, self.step)


def plan_windows(n_samples: int, fs: int, frame_hop: int, segment_s: float, hop_s: float | None = None) -> WindowPlan:
    """The windows for `n_samples` of audio at `fs` Hz (frames every `frame_hop` samples, windows of
    `segment_s`).

    `hop_s` None: the fewest windows with EDGE_PAD_S before the audio (an onset at 0 s on a window's edge was
    missed) and at least MIN_OVERLAP_S between neighbours (less one frame, the step being rounded up to whole
    frames so the last window reaches the end), spread evenly. A recording that fits one window with that pad
    is padded by (window - audio) / 3 s before it, at least EDGE_PAD_S, as before (bench_transcribe_short.py).
    `hop_s` given: TransKun's own layout (its `transcribe`): padding (segment - hop) s on both sides, a window
    every hop (rounded up to whole frames), those of padding only left out.
    """
    size = math.ceil(segment_s * fs)
    audio_s = n_samples / fs
    if hop_s is not None:
        pad = math.ceil((segment_s - hop_s) * fs)
        step = math.ceil(hop_s * fs / frame_hop) * frame_hop
        # TransKun visits every start below the padded length; a window starting at or after the audio's end
        # holds zeros only, and the model finds nothing there (tests/test_transcribe.py).
        return WindowPlan(pad, step, size, max(len(range(0, pad + n_samples, step)), 1))
    if audio_s + EDGE_PAD_S <= segment_s:
        pad = math.ceil(max(EDGE_PAD_S, (segment_s - audio_s) / 3) * fs)
        return WindowPlan(pad, size, size, 1)
    pad = math.ceil(EDGE_PAD_S * fs)
    span = pad + n_samples - size  # what the starts of the windows after the first must reach
    n = math.ceil(span / ((segment_s - MIN_OVERLAP_S) * fs)) + 1
    step = math.ceil(span / (n - 1) / frame_hop) * frame_hop
    return WindowPlan(pad, step, size, n)


def resolve_engine(engine: str | None, device: str = "cpu") -> str:
    """The engine to run: `engine`, else $PIANOEVAL_TRANSCRIBE_ENGINE, else "onnx" on CPU when onnxruntime is
    installed and "torch" otherwise. ConfigError for an unknown name or "onnx" on a GPU."""
    from pianoeval.audio import onnx_runtime

    engine = engine or os.environ.get(ENGINE_ENV) or None
    if engine is None:
        return "onnx" if device == "cpu" and onnx_runtime.available() else "torch"
    if engine not in ENGINES:
        raise ConfigError(f"unknown transcription engine {engine!r}; choose one of {list(ENGINES)} ({ENGINE_ENV})")
    if engine == "onnx" and device != "cpu":
        raise ConfigError(f"the onnx transcription engine runs on CPU only, not {device!r}; use engine 'torch'")
    return engine


def window_frames(audio: np.ndarray, plan: WindowPlan, hop: int, width: int) -> Iterator[np.ndarray]:
    """The frames [1, C, T, W] of each of `plan`'s windows on `audio` [S, C], zeros padding it, one at a time:
    TransKun's `makeFrame` (half a frame of zeros on the left, frames of `width` every `hop` samples, the last
    reaching past the window's end) of each window. Views of one padded copy per window (3 MB for 16 s)."""
    signal = np.ascontiguousarray(audio.T)  # [C, S]
    n_frames = math.ceil(plan.size / hop) + 1
    left, right = width // 2, (n_frames - 1) * hop + width // 2 - plan.size
    for start in plan.starts():
        window = np.zeros((signal.shape[0], left + plan.size + right), dtype=signal.dtype)
        begin, end = max(start - plan.pad_begin, 0), min(start - plan.pad_begin + plan.size, signal.shape[1])
        if end > begin:
            offset = left + max(plan.pad_begin - start, 0)
            window[:, offset : offset + end - begin] = signal[:, begin:end]
        # Writeable so that torch.from_numpy takes the view without a warning; nothing writes to frames (they
        # overlap: a write would change its neighbours).
        yield np.lib.stride_tricks.sliding_window_view(window, width, axis=-1, writeable=True)[:, ::hop][None]


def power_spectrum(frames: np.ndarray, windows: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """TransKun's gain normalisation and windowed power spectrum, averaged over channels (its toMono), of the
    FFT bins in [lo, hi): frames [N, C, T, W], windows [K, W] → power [N, T, K, hi - lo] (float32).

    NumPy's float32 FFT ran 3x faster here than torch.fft (MKL) on this AMD CPU, and the |z|² of the bins
    the mel filters weigh skips the complex `abs` (a square root) of all 2,049.
    """
    x = np.asarray(frames)
    # torch.std's default: the unbiased estimate, as TransKun's processFramesBatch.
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / (x.std(axis=(1, 2, 3), ddof=1, keepdims=True) + 1e-8)
    z = np.fft.rfft(x[..., None, :] * windows, norm="ortho")[..., bins[0] : bins[1]]
    return (np.square(z.real) + np.square(z.imag)).mean(axis=1)
