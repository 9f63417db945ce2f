"""The ONNX Runtime engine of TransKun's encoder: same numbers as PyTorch, cached export, threads kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from pianoeval.audio import onnx_runtime, transkun_onnx
from pianoeval.audio.transcribe import resolve_engine
from pianoeval.core.errors import ConfigError
from pianoeval.data.midi import Performance, write_performance

pytestmark = pytest.mark.skipif(not onnx_runtime.available(), reason="onnxruntime is a pinned dependency")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


class TinyBackbone(nn.Module):
    """Stands in for TransKun's Backbone: x [N, T, F, C], outputIndices [P] → [N, P, T, D]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4 * 3, 8)
        self.pitch = nn.Linear(1, 8)

    def forward(self, x: torch.Tensor, outputIndices: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.proj(x.flatten(-2)))  # [N, T, D]
        return h.unsqueeze(1) + self.pitch(outputIndices.float().unsqueeze(-1)).unsqueeze(1)  # [N, P, T, D]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def transkun_graphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One graph cache for the tests that transcribe with the real TransKun: exported by the first, read by the
    rest (the export itself is tested on the tiny backbone above)."""
    return tmp_path_factory.mktemp("transkun_onnx_cache")


def test_onnx_backbone_equals_torch_and_exports_once(cache: Path) -> None:
    torch_backbone, pitches = TinyBackbone().eval(), [-64, 21, 60]
    onnx_backbone = transkun_onnx.OnnxBackbone(torch_backbone, pitches)
    x = torch.randn(2, 5, 4, 3)  # batch of 2 windows through a graph exported for batch 1
    with torch.inference_mode():
        expected = torch_backbone(x, torch.tensor(pitches))
        got = onnx_backbone(x, torch.tensor(pitches))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    graphs = sorted((cache / "transkun").glob("*.onnx"), key=lambda p: len(p.name))
    graph, optimised = graphs  # the export, and ONNX Runtime's optimised graph for this CPU
    assert optimised.name == f"{graph.stem}.opt-{onnx_runtime.cpu_tag()}.onnx"
    stamps = [p.stat().st_mtime_ns for p in graphs]
    again = transkun_onnx.OnnxBackbone(torch_backbone, pitches)
    with torch.inference_mode():
        torch.testing.assert_close(again(x, torch.tensor(pitches)), got)  # from the optimised graph as it is
    assert sorted((cache / "transkun").glob("*.onnx"), key=lambda p: len(p.name)) == graphs
    assert [p.stat().st_mtime_ns for p in graphs] == stamps  # reused, not exported or optimised again


def test_a_read_only_cache_still_runs(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the optimised graph cannot be kept, the session optimises at every start instead of failing."""
    from pianoeval.core import io as core_io
    from pianoeval.core.errors import OutputError

    torch_backbone, pitches = TinyBackbone().eval(), [60]
    with torch.inference_mode():
        transkun_onnx.OnnxBackbone(torch_backbone, pitches)(torch.randn(1, 5, 4, 3), torch.tensor(pitches))
    for optimised in (cache / "transkun").glob("*.opt-*.onnx"):
        optimised.unlink()

    def refuse(target: Path, suffix: str | None = None) -> None:
        raise OutputError(f"{target}: read-only file system")

    monkeypatch.setattr(core_io, "atomic_path", refuse)
    x = torch.randn(1, 5, 4, 3)
    with torch.inference_mode():
        got = transkun_onnx.OnnxBackbone(torch_backbone, pitches)(x, torch.tensor(pitches))
        torch.testing.assert_close(got, torch_backbone(x, torch.tensor(pitches)), rtol=1e-5, atol=1e-5)
    assert not list((cache / "transkun").glob("*.opt-*.onnx"))


def test_graph_key_follows_weights_and_shape() -> None:
    backbone = TinyBackbone()
    key = transkun_onnx.graph_key(backbone, [60], (5, 4, 3))
    assert transkun_onnx.graph_key(backbone, [60], (6, 4, 3)) != key
    assert transkun_onnx.graph_key(backbone, [61], (5, 4, 3)) != key
    with torch.no_grad():
        backbone.proj.weight[0, 0] += 1e-3
    assert transkun_onnx.graph_key(backbone, [60], (5, 4, 3)) != key


def test_onnx_backbone_follows_torch_threads(cache: Path) -> None:
    from pianoeval.core.threads import torch_threads

    onnx_backbone = transkun_onnx.OnnxBackbone(TinyBackbone().eval(), [60])
    before = torch.get_num_threads()
    with torch_threads(1), torch.inference_mode():
        onnx_backbone(torch.randn(1, 5, 4, 3), torch.tensor([60]))
    assert [threads for _, threads in onnx_backbone._sessions] == [1]
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="predicts pitches"):
        onnx_backbone(torch.randn(1, 5, 4, 3), torch.tensor([61]))


def test_resolve_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIANOEVAL_TRANSCRIBE_ENGINE", raising=False)
    assert resolve_engine(None) == "onnx"
    assert resolve_engine(None, "cuda") == "torch"
    assert resolve_engine("torch") == "torch"
    monkeypatch.setenv("PIANOEVAL_TRANSCRIBE_ENGINE", "torch")
    assert resolve_engine(None) == "torch"
    assert resolve_engine("onnx") == "onnx"  # an explicit argument wins over the environment
    monkeypatch.setenv("PIANOEVAL_TRANSCRIBE_ENGINE", "tensorrt")
    with pytest.raises(ConfigError, match="unknown transcription engine"):
        resolve_engine(None)
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_engine("onnx", "cuda")
    monkeypatch.delenv("PIANOEVAL_TRANSCRIBE_ENGINE")
    monkeypatch.setattr(onnx_runtime, "available", lambda: False)
    assert resolve_engine(None) == "torch"  # without onnxruntime, the exact path


def _rendering(tmp_path: Path) -> tuple[np.ndarray, int]:
    """6.5 s of FluidSynth audio: 12 notes and chords."""
    rows = [[0.3 + 0.5 * i, 0.7 + 0.5 * i, p, 60 + 5 * (i % 5)] for i, p in enumerate([60, 64, 67, 72, 65, 69])]
    rows += [[3.5, 4.5, p, 90] for p in (48, 55, 64)] + [[4.8, 5.6, p, 70] for p in (50, 57, 65)]
    midi = write_performance(Performance(np.array(rows, dtype=float)), tmp_path / "in.mid")
    wav = tmp_path / "in.wav"
    cmd = ["fluidsynth", "-ni", "-F", str(wav), "-r", "44100", str(SOUNDFONT), str(midi)]
    subprocess.run(cmd, check=True, capture_output=True)
    audio, rate = sf.read(str(wav), dtype="float32")
    return audio[: int(6.5 * rate)], rate


def _same_notes(fast: Performance, exact: Performance) -> None:
    """Same notes: pitches and velocities equal, onsets and offsets within 1 ms."""
    assert len(exact.notes) >= 10
    assert fast.notes.shape == exact.notes.shape
    np.testing.assert_array_equal(fast.notes[:, 2:], exact.notes[:, 2:])
    np.testing.assert_allclose(fast.notes[:, :2], exact.notes[:, :2], atol=1e-3)


needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3"
)


@pytest.mark.slow(reason="renders with FluidSynth and transcribes with both TransKun engines")
@needs_fluidsynth
def test_onnx_engine_transcribes_as_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transkun_graphs: Path
) -> None:
    """On a rendering of 12 notes and chords, both engines give the same notes, onsets within 1 ms."""
    from pianoeval.audio.transcribe import transcribe_timed
    from pianoeval.core.threads import torch_threads

    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(transkun_graphs))
    audio, rate = _rendering(tmp_path)
    before = torch.get_num_threads()
    with torch_threads(1):
        exact, stats_t = transcribe_timed(audio, sample_rate=rate, progress=False, engine="torch")
        fast, stats_o = transcribe_timed(audio, sample_rate=rate, progress=False, engine="onnx")
    assert torch.get_num_threads() == before
    assert (stats_t["engine"], stats_o["engine"]) == ("torch", "onnx")
    _same_notes(fast, exact)


@pytest.mark.slow(reason="transcribes 19.5 s three times (8 TransKun windows)")
@needs_fluidsynth
def test_our_window_loop_stitches_as_transkun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transkun_graphs: Path
) -> None:
    """Our window loop, on two threads (two windows at a time, the third on both threads), gives TransKun's own
    `transcribe` notes for its layout (hop_s); the default plan (two windows for 19.5 s) finds the same notes at
    nearly the same times and velocities."""
    from pianoeval.audio.transcribe import _model, _to_performance, transcribe_timed
    from pianoeval.core.threads import torch_threads

    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(transkun_graphs))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # two threads whatever the machine's load (threads_for_load)
    audio, rate = _rendering(tmp_path)
    audio = np.concatenate([audio] * 3)
    with torch_threads(2), torch.inference_mode():
        own = _model("cpu", "onnx").transcribe(torch.from_numpy(audio), stepInSecond=10.0, segmentSizeInSecond=16.0)
        exact = _to_performance(own, None)
        ours, stats = transcribe_timed(audio, sample_rate=rate, progress=False, hop_s=10.0)
        planned, stats_p = transcribe_timed(audio, sample_rate=rate, progress=False)
    assert (stats["threads"], stats["parallel_windows"], stats["n_windows"]) == (2, 2, 3)
    np.testing.assert_allclose(ours.notes, exact.notes, rtol=0, atol=1e-9)  # the window offsets summed apart
    assert len(exact.notes) >= 30
    assert (stats_p["parallel_windows"], stats_p["n_windows"]) == (2, 2)
    # Other windows, other context: the same notes (by pitch, then onset: a chord's order may change), onsets
    # within 30 ms, velocities within 10 of 127.
    a, b = (n[np.lexsort((n[:, 0], n[:, 2]))] for n in (planned.notes, exact.notes))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a[:, 2], b[:, 2])
    np.testing.assert_allclose(a[:, 0], b[:, 0], atol=0.03)
    np.testing.assert_allclose(a[:, 3], b[:, 3], atol=10)


def test_transcription_caches_are_per_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engines differ by float rounding: a cached transcription of one is not reused for the other."""
    from pianoeval.audio import transcribe as transcribe_module
    from pianoeval.audio.transcription_check import transcribe_cached
    from pianoeval.steps.transcribe import _cache_key

    engines: list[str] = []

    def fake(wave: np.ndarray, sample_rate: int, **kwargs: object) -> tuple[Performance, dict[str, float]]:
        engines.append(str(kwargs["engine"]))
        return Performance(np.array([[0.1, 0.4, 60, 80]])), {"audio_s": 1.0, "wall_s": 0.1}

    monkeypatch.setattr(transcribe_module, "transcribe_timed", fake)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.random.default_rng(0).normal(0, 0.1, 24_000).astype(np.float32), 24_000)
    keys = []
    for engine in ("onnx", "torch", "onnx"):
        monkeypatch.setenv("PIANOEVAL_TRANSCRIBE_ENGINE", engine)
        transcribe_cached(wav, None, 24_000, tmp_path / "cache")
        keys.append(_cache_key(str(wav), "clean", 0))
    assert engines == ["onnx", "torch"]  # the second onnx run was read from the cache
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert keys[0] != keys[1] and keys[0] == keys[2]


@pytest.mark.slow(reason="transcribes 19.5 s twice with the real TransKun (4 windows)")
@needs_fluidsynth
def test_windows_started_ahead_give_the_same_notes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transkun_graphs: Path
) -> None:
    """The windows `pianoeval score` starts before importing PyTorch (`transcribe_ahead`) are taken over and give
    the notes of a transcription without them, to the bit; started for another plan, they are stopped and not
    used; and starting them from a file imports no PyTorch."""
    from pianoeval.audio import transcribe_ahead
    from pianoeval.audio.transcribe import _model, transcribe_timed
    from pianoeval.audio.transkun_windows import plan_windows

    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(transkun_graphs))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # two windows at a time whatever the machine's load
    audio, rate = _rendering(tmp_path)
    audio = np.concatenate([audio] * 3)
    channels = audio if audio.ndim == 2 else audio[:, None]  # [S, C], as transcribe_timed reads it
    checkpoint = transcribe_ahead.checkpoint()
    assert checkpoint is not None
    # What `_model` does in the first process that loads TransKun, here into this test's cache.
    transcribe_ahead.save_card(_model("cpu", "onnx").processFramesBatch.card(), checkpoint)
    card = transcribe_ahead.read_card()
    assert card is not None and card.fs == rate
    plan = plan_windows(len(audio), card.fs, card.hop, card.segment_s)
    plain, stats = transcribe_timed(audio, sample_rate=rate, progress=False)
    ahead = transcribe_ahead.Ahead(channels, card, plan, threads=2)
    try:
        early, stats_ahead = transcribe_timed(audio, sample_rate=rate, progress=False, ahead=ahead)
    finally:
        ahead.close()
    assert (stats["ahead_windows"], stats_ahead["ahead_windows"], stats_ahead["n_windows"]) == (0, 2, 2)
    assert len(plain.notes) >= 30
    np.testing.assert_array_equal(early.notes, plain.notes)
    np.testing.assert_array_equal(early.pedal, plain.pedal)
    # Started for another plan: not handed out, and stopped (ONNX Runtime's terminate flag) rather than finished.
    other = transcribe_ahead.Ahead(channels, card, plan, threads=2)
    assert other.take(card, plan_windows(len(audio), card.fs, card.hop, card.segment_s, hop_s=10.0)) == []
    # From a file, in a fresh process: the windows start before PyTorch is imported.
    wav = tmp_path / "take.wav"
    sf.write(str(wav), audio, rate)
    code = (
        "import sys; from pathlib import Path; from pianoeval.audio import transcribe_ahead as t; "
        f"a = t.start(Path({str(wav)!r})); "
        "print(a is not None and a.plan.n_windows, 'torch' in sys.modules); a.close()"
    )
    env = {**os.environ, onnx_runtime.CACHE_ENV: str(transkun_graphs)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["2", "False"]
