"""TransKun's windows without PyTorch (`transkun_windows`) and the windows `pianoeval score` starts before
importing it (`transcribe_ahead`): same frames as TransKun's, a card that follows its checkpoint, no start
where the windows would not be used. The real-model check (same notes with and without the head start) is
tests/test_transcribe_onnx.py::test_windows_started_ahead_give_the_same_notes."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from pianoeval.audio import onnx_runtime, transcribe, transcribe_ahead
from pianoeval.audio.compat import import_transkun
from pianoeval.audio.transkun_windows import WindowPlan, plan_windows, window_frames

FS, HOP, WIDTH = 44_100, 1024, 4096


def _transkun_frames(audio: np.ndarray, plan: WindowPlan) -> list[torch.Tensor]:
    """The frames TransKun's own code makes of each window: padding by torch, then its `makeFrame` (what
    `transcribe.window_frames` did before the NumPy version)."""
    import_transkun()
    from transkun.Util import makeFrame

    x = F.pad(torch.from_numpy(audio).transpose(-1, -2), (plan.pad_begin, 0))
    out = []
    for i in plan.starts():
        window = F.pad(x[:, i : i + plan.size], (0, plan.size - x[:, i : i + plan.size].shape[-1]))
        out.append(makeFrame(window, HOP, WIDTH).unsqueeze(0))
    return out


@pytest.mark.parametrize(
    ("seconds", "channels", "hop_s"),
    [(3.5, 1, None), (19.5, 2, None), (31.0, 1, None), (30.0, 1, 10.0)],
    ids=["one-window", "stereo-two", "three", "transkun-layout"],
)
def test_window_frames_equal_transkun_make_frame(seconds: float, channels: int, hop_s: float | None) -> None:
    """Every window's frames, zeros before, between and after the audio included, equal TransKun's bit for bit."""
    audio = np.random.default_rng(0).normal(0, 0.1, (round(seconds * FS), channels)).astype(np.float32)
    plan = plan_windows(audio.shape[0], FS, HOP, 16.0, hop_s)
    ours = list(window_frames(audio, plan, HOP, WIDTH))
    theirs = _transkun_frames(audio, plan)
    assert len(ours) == len(theirs) == plan.n_windows
    for got, expected in zip(ours, theirs, strict=True):
        assert got.shape == tuple(expected.shape)
        np.testing.assert_array_equal(got, expected.numpy())
    # What transcribe_timed feeds TransKun: the same frames as tensors, taken without a warning (a read-only
    # NumPy view made torch print one on every `pianoeval score`).
    model = SimpleNamespace(hopSize=HOP, windowSize=WIDTH)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors = list(transcribe.window_frames(model, audio, plan))
    for got, expected in zip(tensors, theirs, strict=True):
        assert torch.equal(got, expected)


def _card(graph: Path, **changes: object) -> transcribe_ahead.Card:
    fields: dict = {"graph": str(graph), "fs": FS, "hop": HOP, "width": WIDTH, "segment_s": 16.0, "lo": 3, "hi": 744}
    fields.update(changes)
    return transcribe_ahead.Card(**fields, windows=np.arange(12, dtype=np.float32).reshape(2, 6))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_card_round_trip_follows_the_checkpoint(tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A saved card reads back equal; it is keyed by the checkpoint file (another file, or the same one
    rewritten, has none) and is dropped when its graph is gone or it cannot be read."""
    ckpt, graph = tmp_path / "2.0.pt", tmp_path / "graph.onnx"
    ckpt.write_bytes(b"weights")
    graph.write_bytes(b"graph")
    assert transcribe_ahead.read_card(ckpt) is None
    card = _card(graph)
    transcribe_ahead.save_card(card, ckpt)
    back = transcribe_ahead.read_card(ckpt)
    assert back is not None and back.same_as(card) and back.windows.dtype == np.float32
    assert not back.same_as(_card(graph, hi=745))
    assert transcribe_ahead.card_path(ckpt).parent == cache / "transkun"
    # The same checkpoint rewritten (size or modification time) is another model: no card.
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert transcribe_ahead.read_card(ckpt) is None
    transcribe_ahead.save_card(card, ckpt)
    graph.unlink()
    assert transcribe_ahead.read_card(ckpt) is None  # its graph is gone
    graph.write_bytes(b"graph")
    transcribe_ahead.card_path(ckpt).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert transcribe_ahead.read_card(ckpt) is None
    assert "unreadable TransKun card" in caplog.text


def test_the_wheel_checkpoint_is_the_one_transkun_loads() -> None:
    """The card is keyed by the file `load_transkun_model` reads, found without importing transkun."""
    from pianoeval.audio.backbones import transkun_pretrained_dir

    assert transcribe_ahead.checkpoint() == transkun_pretrained_dir() / "2.0.pt"


def test_nothing_starts_where_it_would_not_be_used(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No head start for a MIDI, a GPU device, the torch engine, audio the score command refuses, or without
    a card (the first transcription on a machine); and none is needed to score (`started` yields None)."""
    wav = tmp_path / "take.wav"
    sf.write(str(wav), np.random.default_rng(0).normal(0, 0.1, 3 * FS).astype(np.float32), FS)
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(3 * FS, np.float32), FS)
    assert transcribe_ahead.start(wav) is None  # no card in this cache
    graph = tmp_path / "graph.onnx"
    graph.write_bytes(b"graph")
    ckpt = transcribe_ahead.checkpoint()
    assert ckpt is not None
    transcribe_ahead.save_card(_card(graph), ckpt)
    assert transcribe_ahead.read_card() is not None
    assert transcribe_ahead.start(tmp_path / "take.mid") is None
    assert transcribe_ahead.start(wav, "cuda") is None
    assert transcribe_ahead.start(silent) is None  # `pianoeval score` says why itself
    assert transcribe_ahead.start(tmp_path / "missing.wav") is None
    monkeypatch.setenv("PIANOEVAL_TRANSCRIBE_ENGINE", "torch")
    assert transcribe_ahead.start(wav) is None
    monkeypatch.setenv("PIANOEVAL_TRANSCRIBE_ENGINE", "tensorrt")  # refused later, with the list of engines
    with transcribe_ahead.started(wav) as ahead:
        assert ahead is None
    assert json.loads(transcribe_ahead.card_path(ckpt).read_text())["graph"] == str(graph)


def test_score_takes_the_started_windows_of_its_own_recording_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`transcribe_recording` reuses the audio the windows were started on, and hands them on, only when they
    were started on this file at TransKun's rate; otherwise it reads the file itself and passes none."""
    from pianoeval.audio import transcribe as transcribe_module
    from pianoeval.data.midi import Performance
    from pianoeval.steps import score

    seen: list[tuple[object, int]] = []

    def fake(wave: np.ndarray, sample_rate: int, device: str = "cpu", ahead: object = None) -> tuple:
        seen.append((ahead, len(wave)))
        return Performance(np.array([[0.5, 1.0, 60, 80]])), {"audio_s": len(wave) / sample_rate}

    monkeypatch.setattr(transcribe_module, "transcribe_timed", fake)
    wav, other = tmp_path / "take.wav", tmp_path / "other.wav"
    for path, seconds in ((wav, 3), (other, 4)):
        sf.write(str(path), np.random.default_rng(0).normal(0, 0.1, seconds * FS).astype(np.float32), FS)
    started = SimpleNamespace(source=wav, card=SimpleNamespace(fs=FS), audio=np.zeros((5 * FS, 1), np.float32))
    score.transcribe_recording(wav, ahead=started)
    score.transcribe_recording(other, ahead=started)
    started.card.fs = 22_050
    score.transcribe_recording(wav, ahead=started)
    assert seen == [(started, 5 * FS), (None, 4 * FS), (None, 3 * FS)]
