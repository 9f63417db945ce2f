"""The fast TransKun parts (mel front end, raw interval scores, NumPy Viterbi) against TransKun's own code."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from pianoeval.audio import transkun_fast, transkun_windows
from pianoeval.audio.compat import import_transkun, torchaudio_shim


@pytest.fixture(scope="module")
def transkun() -> SimpleNamespace:
    """TransKun's Util, layers and CRF modules (imported with the torchaudio stand-in)."""
    import_transkun()
    from transkun import CRF, LayersTransformer, Util

    return SimpleNamespace(CRF=CRF, layers=LayersTransformer, util=Util)


def _scores(seed: int, tracks: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random raw scores [tracks, n, n] ([begin, end]) mostly negative, so that paths have a few notes, and
    single-frame scores [tracks, n] of both signs."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(-0.15, 0.3, size=(tracks, n, n)).astype(np.float32)
    diag = rng.normal(-0.5, 1.0, size=(tracks, n)).astype(np.float32)
    return raw, diag


def _transkun_decode(transkun: SimpleNamespace, raw: np.ndarray, diag: np.ndarray, start: list[int] | None) -> list:
    """TransKun's own backward Viterbi on the full score it builds: [end, begin, track], lengths and diagonal."""
    n = raw.shape[-1]
    frames = np.arange(n, dtype=np.float32)
    full = raw * np.abs(frames[:, None] - frames[None, :])  # [track, begin, end]
    full[:, frames.astype(int), frames.astype(int)] += diag
    score = torch.from_numpy(full).permute(2, 1, 0).contiguous()
    crf = transkun.CRF.NeuralSemiCRFInterval(score, torch.zeros(n - 1, raw.shape[0]))
    return crf.decode(forcedStartPos=start, forward=False)


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed0", "seed1", "seed2"])
@pytest.mark.parametrize("start", ["none", "zeros", "mixed"])
def test_viterbi_equals_transkun(transkun: SimpleNamespace, seed: int, start: str) -> None:
    """Same intervals, in the same order, as TransKun's viterbiBackward, from any forced start frame."""
    raw, diag = _scores(seed, tracks=7, n=48)
    starts = {"none": None, "zeros": [0] * 7, "mixed": [0, 3, 10, 46, 47, 20, 5]}[start]
    got = transkun_fast.viterbi_backward(raw, diag, starts)
    expected = _transkun_decode(transkun, raw, diag, starts)
    assert got == expected
    assert sum(len(track) for track in got) >= 10  # the check means something: notes were found
    assert any(b == e for track in got for b, e in track)  # including single-frame ones
    assert all(isinstance(b, int) and isinstance(e, int) for track in got for b, e in track)


def test_viterbi_breaks_ties_as_transkun(transkun: SimpleNamespace) -> None:
    """Exact ties (a zero-score interval against the skip, two equal intervals) resolve as torch.max does."""
    raw = np.zeros((2, 6, 6), dtype=np.float32)
    raw[1, 1, 3] = raw[1, 1, 5] = 0.5  # score 1.0 (length 2) and 2.0 (length 4): then the same total below
    raw[1, 1, 4] = 2.0 / 3  # length 3: 2.0, ties with the interval to 5
    diag = np.zeros((2, 6), dtype=np.float32)
    got = transkun_fast.viterbi_backward(raw, diag, None)
    assert got == _transkun_decode(transkun, raw, diag, None)


def test_raw_scores_rebuild_transkun_interval_scores(transkun: SimpleNamespace) -> None:
    """raw * |end - begin| + diag on the diagonal is TransKun's ScaledInnerProductIntervalScorer output."""
    torch.manual_seed(0)
    scorer = transkun.layers.ScaledInnerProductIntervalScorer(8, expansionFactor=2).eval()
    ctx = torch.randn(1, 3, 10, 8)  # [N, pitches, T, D]
    with torch.inference_mode():
        expected, _ = scorer(ctx)  # [T_end, T_begin, N, P]
        raw, diag = transkun_fast.raw_interval_scores(scorer, ctx)  # [N, P, T_begin, T_end], [N, P, T]
    steps = torch.arange(10)
    rebuilt = raw * (steps[:, None] - steps[None, :]).abs() + torch.diag_embed(diag)
    torch.testing.assert_close(rebuilt.permute(3, 2, 0, 1), expected, rtol=1e-5, atol=1e-5)


def test_fast_crf_decodes_transkun_scorer_output(transkun: SimpleNamespace) -> None:
    """From one ctx, TransKun's scorer + CRF and raw scores + FastIntervalCRF give the same intervals."""
    torch.manual_seed(1)
    scorer = transkun.layers.ScaledInnerProductIntervalScorer(16, expansionFactor=1).eval()
    ctx = torch.randn(1, 4, 40, 16)
    with torch.inference_mode():
        score, skip = scorer(ctx)
        expected = transkun.CRF.NeuralSemiCRFInterval(score.flatten(-2), skip.flatten(-2)).decode(forward=False)
        raw, diag = transkun_fast.raw_interval_scores(scorer, ctx)
    got = transkun_fast.FastIntervalCRF(raw.flatten(0, 1).numpy(), diag.flatten(0, 1).numpy()).decode()
    assert got == expected and sum(map(len, got)) > 0
    with pytest.raises(NotImplementedError):
        transkun_fast.FastIntervalCRF(raw.flatten(0, 1).numpy(), diag.flatten(0, 1).numpy()).decode(forward=True)


def test_mel_features_equal_transkun_front_end(transkun: SimpleNamespace) -> None:
    """Gain normalisation + log-mel: TransKun's (torch.fft, all bins, complex abs) to float rounding."""
    with torchaudio_shim():
        front = transkun.util.MelSpectrum(4096, f_min=30, f_max=8000, n_mels=229, fs=44100, nExtraWins=5, log=True)
    front.toMono = True
    model = SimpleNamespace(framewiseFeatureExtractor=front)
    rng = np.random.default_rng(0)
    audio = torch.from_numpy((rng.normal(0, 0.05, size=(2, 40 * 1024)) + 0.01).astype(np.float32))
    frames = transkun.util.makeFrame(audio, 1024, 4096).unsqueeze(0)  # [1, C, T, W], as transcribe makes them
    with torch.inference_mode():
        norm = (frames - frames.mean(dim=[1, 2, 3], keepdim=True)) / (frames.std(dim=[1, 2, 3], keepdim=True) + 1e-8)
        expected = front(norm).contiguous()[:, 0]  # [N, T, mels, windows]
        # What FastWindows computes before its ONNX graph, and the graph's first part (the projection).
        projection = transkun_fast.MelProjection(model.framewiseFeatureExtractor)
        windows = transkun_fast.analysis_windows(model)
        power = transkun_windows.power_spectrum(frames.numpy(), windows, (projection.lo, projection.hi))
        got = projection(torch.from_numpy(power))
    assert got.shape == tuple(expected.shape) == (1, 41, 229, 6)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert transkun_fast._mel_bins(front.freq2mels) == (3, 744)  # 30 Hz to 8 kHz of 2,049 bins


def test_supports_only_the_variant_it_reproduces(transkun: SimpleNamespace) -> None:
    with torchaudio_shim():
        front = transkun.util.MelSpectrum(4096, f_min=30, f_max=8000, n_mels=229, fs=44100, log=True, toMono=True)
    scorer = transkun.layers.ScaledInnerProductIntervalScorer(8)
    model = SimpleNamespace(useInnerProductScorer=True, scorer=scorer, framewiseFeatureExtractor=front)
    assert transkun_fast.supports(model)
    scorer.lengthScaling = "sqrt"
    assert not transkun_fast.supports(model)


def _fast_windows(transkun: SimpleNamespace) -> transkun_fast.FastWindows:
    """A FastWindows on TransKun's real front end and scorer (its ONNX graph is only built on first use)."""
    with torchaudio_shim():
        front = transkun.util.MelSpectrum(4096, f_min=30, f_max=8000, n_mels=229, fs=44100, nExtraWins=5, log=True)
    model = SimpleNamespace(
        framewiseFeatureExtractor=front,
        backbone=torch.nn.Identity(),
        scorer=transkun.layers.ScaledInnerProductIntervalScorer(8),
        targetMIDIPitch=[-64, 60],
        fs=44100,
        hopSize=1024,
        windowSize=4096,
        segmentSizeInSecond=16.0,
    )
    return transkun_fast.FastWindows(model)


def _fake_outputs(calls: list[tuple[int, int | None, bool]]) -> Any:
    """Stands in for FastWindows.outputs: records (window id, threads, on a worker thread), returns outputs whose
    ctx holds the window id."""
    import threading

    def outputs(frames: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(np.asarray(frames).flatten()[0])
        calls.append((i, threads, threading.current_thread().name.startswith("transkun")))
        return np.full((1, 1, 1, 1), i, np.float32), np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2), np.float32)

    return outputs


def _window_id(result: tuple[Any, torch.Tensor]) -> int:
    """The window id a fake window's (CRF, ctx) carries."""
    return int(result[1].flatten()[0])


def test_prefetching_hands_out_each_window_once_in_order(transkun: SimpleNamespace) -> None:
    """Planned windows are computed on the worker threads, each once, read from the iterable as they are needed,
    and handed out in order: on one thread each, but the last of an odd count, which gets all the threads; a
    window that is not the planned one is computed at once, and so is everything after it."""
    fast = _fast_windows(transkun)
    calls: list[tuple[int, int | None, bool]] = []
    fast.outputs = _fake_outputs(calls)  # type: ignore[method-assign]
    windows = [torch.full((1, 2, 3, 4), float(i)) for i in range(1, 6)]
    read: list[int] = []

    def lazily() -> Iterator[torch.Tensor]:
        for w in windows:
            read.append(int(w.flatten()[0]))
            yield w

    with fast.prefetching(lazily(), n_windows=5, workers=2, threads=2):
        assert read == [1, 2]  # the first two, started at once
        got = [_window_id(fast(w.clone())) for w in windows]  # the decoding loop makes its own frames
    assert got == [1, 2, 3, 4, 5]
    assert sorted(calls) == [(1, 1, True), (2, 1, True), (3, 1, True), (4, 1, True), (5, 2, True)]
    calls.clear()
    with fast.prefetching(iter(windows), n_windows=5, workers=2, threads=1):
        assert _window_id(fast(windows[0])) == 1
        assert _window_id(fast(torch.full((1, 2, 3, 4), 9.0))) == 9  # not the planned window 2
        assert _window_id(fast(windows[2])) == 3
    assert (9, None, False) in calls and (3, None, False) in calls  # computed on the caller's thread
    assert fast._pool is None and not fast._ahead and next(fast._pending, None) is None


def test_prefetching_takes_over_windows_started_elsewhere(transkun: SimpleNamespace) -> None:
    """Windows already started (`transcribe_ahead`) are handed out first, not computed again; the pool starts the
    next ones as they are taken, and a single started window needs no second worker."""
    from concurrent.futures import Future

    fast = _fast_windows(transkun)
    calls: list[tuple[int, int | None, bool]] = []
    fast.outputs = _fake_outputs(calls)  # type: ignore[method-assign]
    windows = [torch.full((1, 2, 3, 4), float(i)) for i in range(1, 5)]

    def done(i: int) -> Future:
        future: Future = Future()
        future.set_result(_fake_outputs([])(np.full(1, i)))
        return future

    started = [(windows[k].numpy(), done(10 + k)) for k in range(2)]  # ids 10, 11: computed elsewhere
    with fast.prefetching(iter(windows), n_windows=4, workers=2, threads=2, started=started):
        assert calls == []  # both workers' windows are the started ones
        got = [_window_id(fast(w.clone())) for w in windows]
    assert got == [10, 11, 3, 4]
    assert sorted(calls) == [(3, 1, True), (4, 1, True)]
    calls.clear()
    with fast.prefetching(iter(windows[:1]), n_windows=1, workers=1, threads=2, started=[started[0]]):
        assert _window_id(fast(windows[0])) == 10
    assert calls == [] and fast._pool is None


def test_prefetching_passes_worker_errors_on(transkun: SimpleNamespace) -> None:
    fast = _fast_windows(transkun)

    def outputs(frames: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise RuntimeError("ONNX Runtime failed")

    fast.outputs = outputs  # type: ignore[method-assign]
    windows = [torch.ones(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)]
    with pytest.raises(RuntimeError, match="ONNX Runtime failed"), fast.prefetching(windows, 2, workers=2, threads=2):
        fast(windows[0])
    assert fast._pool is None
