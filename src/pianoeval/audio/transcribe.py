"""Piano audio → Performance (notes + sustain pedal) with the TransKun 2.0 model shipped in its wheel.

TransKun works on 16 s windows (its checkpoint's segment length) and stitches notes across windows; a long recording
is processed window by window with a progress bar. The windows hop by HOP_SECONDS (TransKun's default is
8 s). Four inference-only changes make it faster on CPU without changing what it computes (docs/scoring.md,
"Speed"): attention through PyTorch's fused CPU kernel, the interval scores built in place, the CRF
decoding on one thread, and no model run on windows of the trailing padding only.

On CPU the encoder runs in ONNX Runtime by default (`audio.transkun_onnx`, engine "onnx"): about twice as
fast, the same numbers to float rounding. `engine="torch"` (or PIANOEVAL_TRANSCRIBE_ENGINE=torch) gives the
exact PyTorch path back.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pianoeval.core.errors import InputError
from pianoeval.core.threads import one_thread, threads_for_load, torch_threads
from pianoeval.data.midi import Performance

log = logging.getLogger(__name__)

# TransKun's symbols for pedals are negated CC numbers; only the sustain pedal has a place in Performance.
SUSTAIN_SYMBOL = -64
# Hop between the 16 s windows. TransKun's default, 8 s, runs each stretch of audio through the model
# twice; 10 s needs a fifth fewer windows (4 instead of 5 for 30 s) and gave the same note F1 on four
# 30 s ASAP renderings (0.9923 against 0.9926: one note of 1,494), where 12 s lost notes near the window
# joins (0.9904). docs/scoring.md, "Speed".
HOP_SECONDS: float = 10.0
# The engines that can run TransKun's encoder; ENGINE_ENV overrides the default for every caller.
ENGINES: tuple[str, ...] = ("onnx", "torch")
ENGINE_ENV = "PIANOEVAL_TRANSCRIBE_ENGINE"


# A recording this much shorter than a window is transcribed in one window (see _hop_seconds).
ONE_WINDOW_MARGIN_S: float = 3.0


def _hop_seconds(audio_s: float, segment_s: float) -> float:
    """The hop between TransKun's windows for `audio_s` of audio: HOP_SECONDS, or, for a recording at least
    ONE_WINDOW_MARGIN_S shorter than a window, the hop that makes TransKun's padding ((segment - hop) s on
    each side) and the audio fill exactly one window. The 10 s hop would run 10 s of audio through three
    padded windows; one window takes half the time for about the same note F1 (docs/scoring.md, "Speed"). The
    padding (at least a third of the margin) keeps an onset at 0 s from sitting on the window's edge,
    where TransKun misses it."""
    if audio_s <= segment_s - ONE_WINDOW_MARGIN_S:
        return max(HOP_SECONDS, (audio_s + 2 * segment_s) / 3)
    return HOP_SECONDS


def resolve_engine(engine: str | None, device: str = "cpu") -> str:
    """The engine to run: `engine`, else $PIANOEVAL_TRANSCRIBE_ENGINE, else "onnx" on CPU when onnxruntime is
    installed and "torch" otherwise. ConfigError for an unknown name or "onnx" on a GPU."""
    from pianoeval.audio import transkun_onnx
    from pianoeval.core.errors import ConfigError

    engine = engine or os.environ.get(ENGINE_ENV) or None
    if engine is None:
        return "onnx" if device == "cpu" and transkun_onnx.available() else "torch"
    if engine not in ENGINES:
        raise ConfigError(f"unknown transcription engine {engine!r}; choose one of {list(ENGINES)} ({ENGINE_ENV})")
    if engine == "onnx" and device != "cpu":
        raise ConfigError(f"the onnx transcription engine runs on CPU only, not {device!r}; use engine 'torch'")
    return engine


@functools.lru_cache(maxsize=4)
def _model(device: str, engine: str = "torch") -> torch.nn.Module:
    """The pretrained TransKun network on `device`, loaded once per process and engine, with the speed-ups."""
    from pianoeval.audio.backbones import load_transkun_model

    model = _speed_up(load_transkun_model(pretrained=True).to(device))
    if engine == "onnx":
        from pianoeval.audio.transkun_fast import use_fast_path

        use_fast_path(model)
    return model


def _speed_up(model: torch.nn.Module) -> torch.nn.Module:
    """Patch this TransKun instance (not the class) for inference: attention, interval scores, decoding."""
    for module in model.modules():
        if type(module).__name__ == "MultiHeadAttentionKernel" and module.kernel is None:
            fuse_attention(module)
    if type(model.scorer).__name__ == "ScaledInnerProductIntervalScorer" and model.scorer.lengthScaling == "linear":
        model.scorer.forward = functools.partial(_interval_scores, model.scorer)
    process = model.processFramesBatch

    def process_frames(frames: torch.Tensor) -> tuple[Any, torch.Tensor]:
        crf, ctx = process(frames)
        # About 700 steps of tiny ops per window: threads only wait for each other (pianoeval.core.threads).
        crf.decode = one_thread(crf.decode)
        return crf, ctx

    model.processFramesBatch = process_frames
    return model


def fuse_attention(module: torch.nn.Module) -> torch.nn.Module:
    """Give one TransKun MultiHeadAttentionKernel (inference only) the faster `_attention_forward`."""
    # The key and value projections read the same tensor: one matmul [D, 2H] instead of two.
    module.kv_weight = torch.cat([module.k_proj_weight, module.v_proj_weight], dim=1).detach()
    module.forward = functools.partial(_attention_forward, module)
    return module


def _attention_forward(
    self: torch.nn.Module, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None
) -> torch.Tensor:
    """TransKun's MultiHeadAttentionKernel.forward, `[..., L, D]` → `[..., L, D]`, with 4-D SDPA inputs.

    TransKun hands SDPA 5-D tensors `[N, T, heads, L, d]`, for which PyTorch's CPU dispatcher falls back
    to the unfused math path (about a fifth of a window's time); flattened to `[N*T, heads, L, d]` the same
    attention runs in the fused flash kernel. Same result up to float rounding (relative 1e-6).
    """
    key = query if key is None else key
    value = key if value is None else value
    if value is not key or key.shape[:-2] != query.shape[:-2]:
        return type(self).forward(self, query, key, value)
    heads, dim = self.num_heads, self.head_dim
    lead, n_q, n_k = query.shape[:-2], query.shape[-2], key.shape[-2]
    q = (query.reshape(-1, query.shape[-1]) @ self.q_proj_weight).view(-1, n_q, heads, dim).transpose(1, 2)
    kv = (key.reshape(-1, key.shape[-1]) @ self.kv_weight).view(-1, n_k, 2, heads, dim)
    out = F.scaled_dot_product_attention(q, kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2))
    return self.out_proj(out.transpose(1, 2).reshape(*lead, n_q, heads * dim))


def _interval_scores(self: torch.nn.Module, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TransKun's ScaledInnerProductIntervalScorer.forward, in place: ctx [N, P, T, D] → ([T, T, N, P], [T-1, N, P]).

    The interval score matrix is [T, T] per pitch (0.2 GB per 16 s window); TransKun builds a second one
    for the diagonal and a third for the length scaling. Scaling and adding the diagonal in place gives
    the same numbers with two fewer passes over it.
    """
    size = self.size * self.expansionFactor
    q, k, diag = self.map(ctx).split([size, size, 1], dim=-1)
    scores = torch.matmul(q / math.sqrt(size), k.transpose(-1, -2))  # [N, P, T_end, T_begin]
    steps = torch.arange(scores.shape[-1], device=scores.device)
    scores.mul_((steps.unsqueeze(-1) - steps.unsqueeze(0)).abs())
    scores.diagonal(dim1=-2, dim2=-1).add_(diag.squeeze(-1))
    skip = (diag * 0.0)[..., 1:, 0]  # TransKun's placeholder "skip" scores: zeros [N, P, T-1]
    return scores.permute(2, 3, 0, 1).contiguous(), skip.permute(2, 0, 1).contiguous()


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
    engine: str | None = None,
) -> tuple[Performance, dict[str, Any]]:
    """Like `transcribe`, also returning timing: {"audio_s", "wall_s", "real_time_factor", "n_windows",
    "n_windows_skipped" (windows of padding only, not run through the model), "threads", "parallel_windows"
    (windows computed at a time, `_parallel_windows`), "engine"}.
    `engine`: "onnx" or "torch" (the exact PyTorch path), default `resolve_engine`."""
    from tqdm import tqdm

    audio, rate, source = _read_audio(wave_or_path, sample_rate)
    engine = resolve_engine(engine, device)
    model = _model(device, engine)
    if rate != model.fs:
        import soxr

        audio = soxr.resample(audio, rate, model.fs).astype(np.float32)
    segment_s = segment_s or model.segmentSizeInSecond
    if hop_s is None:
        hop_s = _hop_seconds(audio.shape[0] / model.fs, segment_s)
    # Same arithmetic as TransKun.transcribe: the audio is padded by (segment - hop) s on both sides.
    padded = audio.shape[0] + 2 * math.ceil((segment_s - hop_s) * model.fs)
    n_windows = math.ceil(padded / (math.ceil(hop_s * model.fs / model.hopSize) * model.hopSize))

    bar = tqdm(total=n_windows, desc="transcribe", unit="window", disable=not progress, mininterval=2)
    inner = model.transcribeFrames
    n_symbols = len(model.targetMIDIPitch)
    skipped = 0

    def counted(frames: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        nonlocal skipped
        bar.update(1)
        if not bool(frames.any()):
            # Only the zeros TransKun pads the end with (the last window can start after the audio): the
            # model finds nothing there (tests/test_transcribe.py); return what it returns for nothing.
            skipped += 1
            return [[] for _ in range(frames.shape[0])], [0] * (frames.shape[0] * n_symbols)
        return inner(frames, *args, **kwargs)

    threads = threads_for_load(torch.get_num_threads())
    start = time.perf_counter()
    wave = torch.from_numpy(audio).to(device)
    try:
        with torch.inference_mode(), torch_threads(threads):
            parallel, workers = _parallel_windows(model, wave, hop_s, segment_s, threads)
            with parallel:
                # An instance attribute shadows the method on this model only; removed right after.
                model.transcribeFrames = counted
                notes = model.transcribe(wave, stepInSecond=hop_s, segmentSizeInSecond=segment_s)
    finally:
        model.__dict__.pop("transcribeFrames", None)
        bar.close()
    wall = time.perf_counter() - start
    audio_s = audio.shape[0] / model.fs
    stats = {
        "audio_s": audio_s,
        "wall_s": wall,
        "real_time_factor": wall / audio_s,
        "n_windows": float(n_windows),
        "n_windows_skipped": float(skipped),
        "threads": float(threads),
        "parallel_windows": float(workers),
        "engine": engine,
    }
    log.info(
        "transcribed %.1f s of audio in %.1f s (%.2fx real time, %d threads, %s)",
        audio_s,
        wall,
        stats["real_time_factor"],
        threads,
        engine,
    )
    return _to_performance(notes, source), stats


def window_frames(model: torch.nn.Module, wave: torch.Tensor, hop_s: float, segment_s: float) -> list[torch.Tensor]:
    """The frames [1, C, T, W] of every window that `model.transcribe(wave, hop_s, segment_s)` runs through the
    model (not those of padding only), in order: a dry run of TransKun's own loop, which slices the same
    windows whatever the model returns."""
    n_symbols = len(model.targetMIDIPitch)
    windows: list[torch.Tensor] = []

    def record(frames: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if bool(frames.any()):
            windows.append(frames)
        return [[] for _ in range(frames.shape[0])], [0] * (frames.shape[0] * n_symbols)

    model.transcribeFrames = record
    try:
        model.transcribe(wave, stepInSecond=hop_s, segmentSizeInSecond=segment_s)
    finally:
        del model.transcribeFrames
    return windows


def _parallel_windows(
    model: torch.nn.Module, wave: torch.Tensor, hop_s: float, segment_s: float, threads: int
) -> tuple[contextlib.AbstractContextManager[None], int]:
    """(context, windows at a time): with `threads` >= 2, two windows or more and the fast path
    (`transkun_fast.FastWindows`), the windows computed `threads` at a time on one intra-op thread each,
    ahead of TransKun's loop (which then only decodes them, in order); else nothing (1)."""
    from pianoeval.audio.transkun_fast import FastWindows

    fast = model.__dict__.get("processFramesBatch")
    if threads < 2 or not isinstance(fast, FastWindows):
        return contextlib.nullcontext(), 1
    windows = window_frames(model, wave, hop_s, segment_s)
    workers = min(threads, len(windows))
    if workers < 2:
        return contextlib.nullcontext(), 1
    return fast.prefetching(windows, workers, max(1, threads // workers)), workers


def transcribe(
    wave_or_path: str | Path | np.ndarray,
    sample_rate: int | None = None,
    device: str = "cpu",
    engine: str | None = None,
) -> Performance:
    """Audio file or array [S] / [S, C] (with sample_rate) → Performance (notes [N, 4], pedal [M, 2])."""
    return transcribe_timed(wave_or_path, sample_rate, device, engine=engine)[0]
