"""Piano audio → Performance (notes + sustain pedal) with the TransKun 2.0 model shipped in its wheel.

TransKun works on 16 s windows (its checkpoint's segment length) and stitches notes across windows; a long recording
is processed window by window with a progress bar. Where the windows sit is `plan_windows`: the fewest that
cover the recording with 1 s of zeros before it and 1 s of overlap (2 for 30 s, where TransKun's own layout
at a 10 s hop runs 4), stitched as TransKun's `transcribe` does (`_stitched`). Three inference-only changes
make the PyTorch path faster on CPU without changing what it computes (docs/scoring.md, "Speed"): attention
through PyTorch's fused CPU kernel, the interval scores built in place, the CRF decoding on one thread.

On CPU the encoder runs in ONNX Runtime by default (`audio.transkun_onnx`, engine "onnx"): about twice as
fast, the same numbers to float rounding. `engine="torch"` (or PIANOEVAL_TRANSCRIBE_ENGINE=torch) gives the
exact PyTorch path back. The window plan, frames and power spectra are NumPy (`audio.transkun_windows`), so
`pianoeval score` can start a recording's first windows before it imports PyTorch (`audio.transcribe_ahead`);
`transcribe_timed(ahead=...)` takes them over.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from pianoeval.audio import transkun_windows
from pianoeval.audio.transkun_windows import (  # re-exported: the window plan and the engines are part of this API
    EDGE_PAD_S,
    ENGINE_ENV,
    ENGINES,
    MIN_OVERLAP_S,
    TRANSKUN_HOP_S,
    WindowPlan,
    plan_windows,
    resolve_engine,
)
from pianoeval.core.errors import InputError
from pianoeval.core.threads import one_thread, threads_for_load, torch_threads
from pianoeval.data.midi import Performance

if TYPE_CHECKING:
    from pianoeval.audio.transcribe_ahead import Ahead

__all__ = [
    "EDGE_PAD_S",
    "ENGINES",
    "ENGINE_ENV",
    "MIN_OVERLAP_S",
    "TRANSKUN_HOP_S",
    "WindowPlan",
    "plan_windows",
    "resolve_engine",
    "transcribe",
    "transcribe_timed",
]

log = logging.getLogger(__name__)

# TransKun's symbols for pedals are negated CC numbers; only the sustain pedal has a place in Performance.
SUSTAIN_SYMBOL = -64


@functools.lru_cache(maxsize=4)
def _model(device: str, engine: str = "torch") -> torch.nn.Module:
    """The pretrained TransKun network on `device`, loaded once per process and engine, with the speed-ups."""
    from pianoeval.audio.backbones import load_transkun_model

    model = _speed_up(load_transkun_model(pretrained=True).to(device))
    if engine == "onnx":
        from pianoeval.audio import transcribe_ahead
        from pianoeval.audio.transkun_fast import FastWindows, use_fast_path

        fast = use_fast_path(model).processFramesBatch
        ckpt = transcribe_ahead.checkpoint()
        if isinstance(fast, FastWindows) and ckpt is not None:
            # The next `pianoeval score` on this machine starts its windows before importing PyTorch.
            transcribe_ahead.save_card(fast.card(), ckpt)
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
    ahead: Ahead | None = None,
) -> tuple[Performance, dict[str, Any]]:
    """Like `transcribe`, also returning timing: {"audio_s", "wall_s", "real_time_factor", "n_windows",
    "window_step_s", "threads", "parallel_windows" (windows computed at a time, `_parallel_windows`),
    "ahead_windows" (taken over from `ahead`), "engine"}. `hop_s`: TransKun's own window layout with this hop
    instead of `plan_windows`' default. `engine`: "onnx" or "torch" (the exact PyTorch path), default
    `resolve_engine`. `ahead`: the first windows of this audio, started before PyTorch was imported
    (`transcribe_ahead.start`), taken over if they were started for this model and plan."""
    audio, rate, source = _read_audio(wave_or_path, sample_rate)
    engine = resolve_engine(engine, device)
    model = _model(device, engine)
    if rate != model.fs:
        import soxr

        audio = soxr.resample(audio, rate, model.fs).astype(np.float32)
    plan = plan_windows(audio.shape[0], model.fs, model.hopSize, segment_s or model.segmentSizeInSecond, hop_s)
    threads = threads_for_load(torch.get_num_threads())
    start = time.perf_counter()
    started = _started_ahead(model, plan, ahead) if engine == "onnx" else []
    with torch.inference_mode(), torch_threads(threads):
        parallel, workers = _parallel_windows(model, audio, plan, threads, started)
        with parallel:
            notes = _stitched(model, window_frames(model, audio, plan, device), plan, progress)
    wall = time.perf_counter() - start
    audio_s = audio.shape[0] / model.fs
    stats = {
        "audio_s": audio_s,
        "wall_s": wall,
        "real_time_factor": wall / audio_s,
        "n_windows": float(plan.n_windows),
        "window_step_s": plan.step / model.fs,
        "threads": float(threads),
        "parallel_windows": float(workers),
        "ahead_windows": float(len(started)),
        "engine": engine,
    }
    log.info(
        "transcribed %.1f s of audio in %.1f s (%.2fx real time, %d windows, %d threads, %s)",
        audio_s,
        wall,
        stats["real_time_factor"],
        plan.n_windows,
        threads,
        engine,
    )
    return _to_performance(notes, source), stats


def window_frames(
    model: torch.nn.Module, audio: np.ndarray, plan: WindowPlan, device: str = "cpu"
) -> Iterator[torch.Tensor]:
    """The frames [1, C, T, W] of each of `plan`'s windows on `audio` [S, C], zeros padding it, one at a time
    (22 MB a window: an hour's, all at once, would be 5 GB), on `device`: `transkun_windows.window_frames`,
    TransKun's `makeFrame` of each window."""
    for frames in transkun_windows.window_frames(audio, plan, model.hopSize, model.windowSize):
        yield torch.from_numpy(frames).to(device)


def _started_ahead(model: torch.nn.Module, plan: WindowPlan, ahead: Ahead | None) -> list[tuple[np.ndarray, Future]]:
    """The windows `ahead` started, if they were started for this model (its card) and `plan`; else none."""
    from pianoeval.audio.transkun_fast import FastWindows

    fast = model.__dict__.get("processFramesBatch")
    if ahead is None or not isinstance(fast, FastWindows):
        return []
    return ahead.take(fast.card(), plan)


def _stitched(model: torch.nn.Module, frames: Iterable[torch.Tensor], plan: WindowPlan, progress: bool) -> list[Any]:
    """TransKun's notes for the windows `frames` laid out by `plan`, stitched as its `transcribe` does: each
    window decodes from where the previous one's last finished note per pitch ended; a note that overlaps
    the last kept one of its pitch replaces it if it has an onset, else extends it; notes never finished
    are dropped, then overlaps resolved."""
    from collections import defaultdict

    from tqdm import tqdm
    from transkun.Data import resolveOverlapping

    step_frames = plan.step // model.hopSize
    last_frame = round(plan.size / model.hopSize)
    kept: defaultdict[int, list[Any]] = defaultdict(list)
    start_pos = [math.floor(plan.pad_begin / model.hopSize)] * len(model.targetMIDIPitch)
    bar = tqdm(frames, total=plan.n_windows, desc="transcribe", unit="window", disable=not progress, mininterval=2)
    for i, window in zip(plan.starts(), bar, strict=True):
        events, last = model.transcribeFrames(
            window, forcedStartPos=start_pos, velocityCriteron="hamming", lastFrameIdx=last_frame
        )
        start_pos = [max(p - step_frames, 0) for p in last]
        offset = (i - plan.pad_begin) / model.fs
        for e in events[0]:
            e.start = max(e.start + offset, 0.0)
            e.end = max(e.end + offset, e.start)
            same = kept[e.pitch]
            if same and e.start < same[-1].end:
                if e.hasOnset:
                    same[-1] = e
                else:
                    same[-1].hasOffset = e.hasOffset
                    same[-1].end = max(e.end, same[-1].end)
            elif e.hasOnset:
                same.append(e)
    for same in kept.values():
        if same:
            same[-1].hasOffset = True  # the recording's end finishes what still sounds
    return resolveOverlapping([e for same in kept.values() for e in same if e.hasOffset])


def _parallel_windows(
    model: torch.nn.Module,
    audio: np.ndarray,
    plan: WindowPlan,
    threads: int,
    started: Sequence[tuple[np.ndarray, Future]] = (),
) -> tuple[contextlib.AbstractContextManager[None], int]:
    """(context, windows at a time): with `threads` >= 2, two windows or more and the fast path
    (`transkun_fast.FastWindows`), the windows computed `threads` at a time on one intra-op thread each,
    ahead of the decoding (which takes them in order), the first ones taken over from `started`; else
    nothing (1), or only the windows `started`."""
    from pianoeval.audio.transkun_fast import FastWindows

    fast = model.__dict__.get("processFramesBatch")
    workers = min(threads, plan.n_windows)
    if not isinstance(fast, FastWindows) or (workers < 2 and not started):
        return contextlib.nullcontext(), 1
    workers = max(workers, len(started))
    return fast.prefetching(window_frames(model, audio, plan), plan.n_windows, workers, threads, started), workers


def transcribe(
    wave_or_path: str | Path | np.ndarray,
    sample_rate: int | None = None,
    device: str = "cpu",
    engine: str | None = None,
) -> Performance:
    """Audio file or array [S] / [S, C] (with sample_rate) → Performance (notes [N, 4], pedal [M, 2])."""
    return transcribe_timed(wave_or_path, sample_rate, device, engine=engine)[0]
