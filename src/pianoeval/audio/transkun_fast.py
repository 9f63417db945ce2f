"""TransKun's per-window work outside the encoder, redone for CPU speed: mel front end, interval scores, Viterbi.

With the encoder in ONNX Runtime (`audio.transkun_onnx`), what stays in PyTorch was about half of a
window's time. `fast_process_frames` computes what TransKun's `processFramesBatch` computes, in fewer
passes over memory:
- mel front end: the power |z|² of only the FFT bins the mel filters weigh (30 Hz-8 kHz: 743 of 2,049),
  without the complex `abs` (a square root) and its transposed copies;
- interval scores: one matrix product k·q into [pitch, begin, end] (the layout the backward Viterbi reads),
  where TransKun builds [end, begin, pitch] and the decoder transposes it again (two copies of 0.17 GB);
  the length scaling |end - begin| and the diagonal are applied inside the decoder;
- decoding: TransKun's `viterbiBackward` (the same recursion, ties broken the same way) vectorised over the
  90 pitches in NumPy, and its backtracking jumping from note to note instead of frame by frame.

The notes equal the PyTorch path's up to float rounding (tests/test_transkun_fast.py compares each part
with TransKun's own code); `transcribe(engine="torch")` keeps the exact old path.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from pianoeval.audio.transcribe_ahead import Card
from pianoeval.audio.transkun_windows import SCORED_OUTPUTS, power_spectrum

# A window's graph outputs: ctx [N, P, T, D], raw [N, P, T, T], diag [N, P, T] (`transkun_onnx.OnnxWindow`).
Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


class MelProjection(torch.nn.Module):
    """The end of TransKun's MelSpectrum on a pruned power spectrum: power [N, T, windows, bins] → log-mel
    features [N, T, n_mels, windows] (exported into the ONNX graph before the encoder)."""

    def __init__(self, mel: torch.nn.Module) -> None:
        super().__init__()
        self.lo, self.hi = _mel_bins(mel.freq2mels)
        self.register_buffer("weights", mel.freq2mels[self.lo : self.hi].detach().clone())
        self.log, self.eps = bool(mel.log), float(mel.eps)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """TransKun's mel product and log normalisation."""
        out = (power @ self.weights).transpose(-1, -2)
        if self.log:
            out = ((out + self.eps).log() - math.log(self.eps)) / (-math.log(self.eps))
        return out


def analysis_windows(model: torch.nn.Module) -> np.ndarray:
    """TransKun's STFT windows [windows, W]: the Hann window and its learnt Gaussian ones (Util.Spectrum)."""
    spectrum = model.framewiseFeatureExtractor.spectrogramExtractor
    with torch.no_grad():
        wins = spectrum.win.unsqueeze(0)
        if spectrum.nExtraWins > 0:
            wins = torch.cat([wins, spectrum.winGen.get().t()], dim=0)
    return wins.numpy().astype(np.float32)


def _mel_bins(freq2mels: torch.Tensor) -> tuple[int, int]:
    """The first and one-past-last FFT bin with a non-zero weight in any mel filter (freq2mels [bins, n_mels])."""
    used = torch.nonzero(freq2mels.abs().sum(-1) > 0).flatten()
    return int(used[0]), int(used[-1]) + 1


class FastIntervalCRF:
    """Stands in for TransKun's NeuralSemiCRFInterval at inference: `decode` only.

    raw [S, T, T]: inner products k_begin · q_end / sqrt(d) of S tracks (windows x pitches), [begin, end],
    before the length scaling; diag [S, T]: the single-frame scores.
    """

    def __init__(self, raw: np.ndarray, diag: np.ndarray) -> None:
        self.raw = raw
        self.diag = diag

    def decode(self, forcedStartPos: list[int] | None = None, forward: bool = False) -> list[list[tuple[int, int]]]:
        """The best intervals per track, as TransKun's `decode(forcedStartPos, forward=False)`."""
        if forward:
            raise NotImplementedError("only TransKun's backward decoding (what transcribe uses) is implemented")
        return viterbi_backward(self.raw, self.diag, forcedStartPos)


def raw_interval_scores(scorer: torch.nn.Module, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TransKun's ScaledInnerProductIntervalScorer before the length scaling: ctx [N, P, T, D] →
    (raw [N, P, T_begin, T_end] = k_begin · q_end / sqrt(d), diag [N, P, T])."""
    size = scorer.size * scorer.expansionFactor
    q, k, diag = scorer.map(ctx).split([size, size, 1], dim=-1)
    return torch.matmul(k, (q / math.sqrt(size)).transpose(-1, -2)), diag.squeeze(-1)


def viterbi_backward(raw: np.ndarray, diag: np.ndarray, start: list[int] | None = None) -> list[list[tuple[int, int]]]:
    """TransKun's `viterbiBackward` on unscaled scores: raw [S, T, T] ([begin, end]), diag [S, T] → intervals.

    TransKun's score of an interval (b, e), e > b, is raw[b, e] * (e - b); a single frame scores diag[b];
    skipping a frame scores 0. `value[b]` is the best score of the frames from b on; ties go to the skip, then
    to the nearest end, as torch.max does.
    """
    tracks, n = diag.shape
    value = np.zeros((tracks, n), dtype=np.float32)
    choice = np.full((tracks, n), -1, dtype=np.int64)  # end - begin - 1 of the interval from a begin, -1: skip
    gain = diag * (diag > 0)
    value[:, n - 1] = gain[:, n - 1]
    lengths = np.arange(n, dtype=np.float32)
    rows = np.arange(tracks)
    for b in range(n - 2, -1, -1):
        candidate = raw[:, b, b + 1 :] * lengths[1 : n - b]
        candidate += value[:, b + 1 :]
        best = candidate.argmax(axis=1)
        best_value = candidate[rows, best]
        skip = value[:, b + 1]
        take = best_value > skip
        choice[:, b] = np.where(take, best, -1)
        value[:, b] = np.where(take, best_value, skip) + gain[:, b]
    return _backtrack(choice, diag > 0, start)


def _backtrack(choice: np.ndarray, single: np.ndarray, start: list[int] | None) -> list[list[tuple[int, int]]]:
    """Intervals per track from each track's start frame, as TransKun's backtracking, note to note."""
    tracks, n = single.shape
    frames = np.arange(n - 1)
    # The first frame at or after each frame that begins an interval (n - 1: none); skips in between.
    begins = np.where(choice[:, : n - 1] >= 0, frames, n - 1)
    next_begin = np.minimum.accumulate(begins[:, ::-1], axis=1)[:, ::-1]
    start = [0] * tracks if start is None else start
    result: list[list[tuple[int, int]]] = []
    for track in range(tracks):
        singles = np.flatnonzero(single[track]).tolist()
        intervals: list[tuple[int, int]] = []
        j = int(start[track])
        while j < n - 1:
            b = int(next_begin[track, j])
            # Single-frame notes on every frame visited before the loop ends, before the interval at b.
            last = b + 1 if b < n - 1 else n - 1
            intervals += [(s, s) for s in singles[bisect_left(singles, j) : bisect_left(singles, last)]]
            if b >= n - 1:
                break
            end = b + 1 + int(choice[track, b])
            intervals.append((b, end))
            j = end
        if single[track, n - 1]:
            intervals.append((n - 1, n - 1))
        result.append(intervals)
    return result


class FastWindows:
    """TransKun's `processFramesBatch` for one model, by the parts above: frames [N, C, T, W] → (CRF, ctx
    [N, P, T, D]); the power spectrum in NumPy, then mel projection, encoder and raw interval scores in one
    ONNX Runtime graph (`transkun_onnx.OnnxWindow`), then `FastIntervalCRF`. `use_fast_path` installs it;
    `prefetching` computes a recording's windows ahead on worker threads (and takes over those
    `audio.transcribe_ahead` started before PyTorch was imported)."""

    def __init__(self, model: torch.nn.Module) -> None:
        from pianoeval.audio.transkun_onnx import OnnxWindow

        self.front = MelProjection(model.framewiseFeatureExtractor)
        self.windows = analysis_windows(model)
        self.graph = OnnxWindow(model.backbone, list(model.targetMIDIPitch), model.scorer, self.front)
        self.layout = (int(model.fs), int(model.hopSize), int(model.windowSize), float(model.segmentSizeInSecond))
        self._card: Card | None = None
        self._ahead: deque[tuple[np.ndarray, Future[Outputs]]] = deque()
        self._pending: Iterator[tuple[np.ndarray, int]] = iter(())
        self._pool: ThreadPoolExecutor | None = None

    def card(self) -> Card:
        """What running this model's windows without PyTorch takes (`transcribe_ahead.Card`): its graph for a
        whole window (exported now if missing), the window layout and the analysis windows."""
        if self._card is None:
            fs, hop, width, segment_s = self.layout
            shape = (
                math.ceil(math.ceil(segment_s * fs) / hop) + 1,
                *self.windows.shape[:1],
                self.front.hi - self.front.lo,
            )
            graph = self.graph.path_for(shape)
            self._card = Card(str(graph), fs, hop, width, segment_s, self.front.lo, self.front.hi, self.windows)
        return self._card

    def outputs(self, frames: np.ndarray, threads: int | None = None) -> Outputs:
        """One window's graph outputs (ctx, raw, diag), the graph on `threads` intra-op threads (default:
        PyTorch's number)."""
        power = power_spectrum(frames, self.windows, (self.front.lo, self.front.hi))
        return tuple(self.graph.run(power, SCORED_OUTPUTS, threads))

    def compute(
        self, frames: torch.Tensor | np.ndarray, threads: int | None = None
    ) -> tuple[FastIntervalCRF, torch.Tensor]:
        """One window's (CRF, ctx)."""
        return decodable(self.outputs(np.asarray(frames), threads))

    def __call__(self, frames: torch.Tensor) -> tuple[FastIntervalCRF, torch.Tensor]:
        """The window's (CRF, ctx): prefetched if it is the next one `prefetching` expects, else computed now."""
        if self._ahead:
            expected, future = self._ahead.popleft()
            self._submit()
            if expected.shape == tuple(frames.shape) and np.array_equal(expected, frames.numpy()):
                return decodable(future.result())
            self._stop()  # asked for another window than planned: compute the rest one by one
        return self.compute(frames)

    def _submit(self) -> None:
        """Start the next planned window on the pool."""
        frames, threads = next(self._pending, (None, 1))
        if self._pool is not None and frames is not None:
            self._ahead.append((frames, self._pool.submit(self.outputs, frames, threads)))

    def _stop(self) -> None:
        """Drop the plan and wait for the windows in flight on our pool (their results are not used; windows
        started elsewhere are their starter's to stop)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._ahead.clear()
        self._pending = iter(())

    @contextlib.contextmanager
    def prefetching(
        self,
        windows: Iterable[torch.Tensor],
        n_windows: int,
        workers: int,
        threads: int,
        started: Sequence[tuple[np.ndarray, Future[Outputs]]] = (),
    ) -> Iterator[None]:
        """Within the block, the `n_windows` of `windows` (frames, in the order TransKun will ask for them,
        read as they are needed) are computed up to `workers` ahead: on one intra-op thread each (on two idle
        cores, two windows on one thread each beat one window on two: the encoder's threads wait for each
        other at every op), except the last n_windows % workers, which get `threads` each (the third of
        three windows would leave a core idle). `started`: (frames, future outputs) of the first windows,
        already running (`transcribe_ahead`)."""
        self._stop()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="transkun")
        together = n_windows - n_windows % workers
        planned = ((np.asarray(f), 1 if workers > 1 and k < together else threads) for k, f in enumerate(windows))
        self._ahead.extend(started)
        self._pending = itertools.islice(planned, len(started), None)
        for _ in range(workers - len(started)):
            self._submit()
        try:
            yield
        finally:
            self._stop()


def decodable(outputs: Outputs) -> tuple[FastIntervalCRF, torch.Tensor]:
    """(CRF, ctx) of a window's graph outputs (ctx [N, P, T, D], raw [N, P, T, T], diag [N, P, T])."""
    ctx, raw, diag = outputs
    return FastIntervalCRF(raw.reshape(-1, *raw.shape[-2:]), diag.reshape(-1, diag.shape[-1])), torch.from_numpy(ctx)


def supports(model: torch.nn.Module) -> bool:
    """Whether `model` is the TransKun variant these parts reproduce (inner-product scorer, linear length
    scaling, mono log-mel front end)."""
    scorer = getattr(model, "scorer", None)
    return (
        getattr(model, "useInnerProductScorer", False)
        and type(scorer).__name__ == "ScaledInnerProductIntervalScorer"
        and scorer.lengthScaling == "linear"
        and len(scorer.map) == 1
        and model.framewiseFeatureExtractor.toMono
    )


def use_fast_path(model: torch.nn.Module) -> torch.nn.Module:
    """Run this (CPU, eval) TransKun model's windows by `FastWindows` where `supports`, else only its encoder
    in ONNX Runtime (`transkun_onnx.use_onnx_backbone`); the model is changed in place."""
    from pianoeval.audio.onnx_runtime import check_available
    from pianoeval.audio.transkun_onnx import use_onnx_backbone

    check_available()
    if supports(model):
        model.processFramesBatch = FastWindows(model)
    else:
        use_onnx_backbone(model)
    return model
