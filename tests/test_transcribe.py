"""Transcription with TransKun: a FluidSynth rendering of known notes comes back with note F1 >= 0.8."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import mir_eval
import numpy as np
import pytest
import soundfile as sf
import torch

from pianoeval.audio.transcribe import _interval_scores, _to_performance, fuse_attention, transcribe, transcribe_timed
from pianoeval.core.errors import InputError
from pianoeval.data.midi import Performance, write_performance

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def test_notes_and_sustain_pedal_conversion() -> None:
    notes = [
        SimpleNamespace(start=0.5, end=1.0, pitch=60, velocity=80),
        SimpleNamespace(start=0.1, end=2.0, pitch=-64, velocity=100),
        SimpleNamespace(start=0.2, end=0.4, pitch=-67, velocity=90),  # soft pedal: no place in Performance
        SimpleNamespace(start=0.0, end=0.3, pitch=72, velocity=50),
    ]
    perf = _to_performance(notes, "x.wav")
    np.testing.assert_array_equal(perf.notes, [[0.0, 0.3, 72, 50], [0.5, 1.0, 60, 80]])
    np.testing.assert_array_equal(perf.pedal, [[0.1, 100.0], [2.0, 0.0]])
    assert perf.path == "x.wav"


@pytest.mark.parametrize("cross", [False, True], ids=["self-attention", "query-from-another-tensor"])
def test_fused_attention_equals_transkun_attention(cross: bool) -> None:
    """The flattened-SDPA, fused-key-value forward gives TransKun's own attention output."""
    from pianoeval.audio.compat import import_transkun

    import_transkun()
    from transkun.LayersTransformer import MultiHeadAttentionKernel

    torch.manual_seed(0)
    layer = MultiHeadAttentionKernel(32, num_heads=4, kernel=None).eval()  # as TransKun 2.0 builds it
    query = torch.randn(2, 5, 7, 32)  # [N, T, L, D], as TransKun's F and T attention blocks call it
    key = torch.randn(2, 5, 7, 32) if cross else query
    with torch.inference_mode():
        expected = layer(query, key)
        got = fuse_attention(layer)(query, key)
    assert layer.forward.func.__name__ == "_attention_forward"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_in_place_interval_scores_equal_transkun_scores() -> None:
    from pianoeval.audio.compat import import_transkun

    import_transkun()
    from transkun.LayersTransformer import ScaledInnerProductIntervalScorer

    torch.manual_seed(0)
    scorer = ScaledInnerProductIntervalScorer(8, expansionFactor=2).eval()
    ctx = torch.randn(1, 3, 10, 8)  # [N, pitches, T, D]
    with torch.inference_mode():
        expected, got = scorer(ctx), _interval_scores(scorer, ctx)
    assert got[0].shape == (10, 10, 1, 3) and got[1].shape == (9, 1, 3)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_one_thread_runs_on_one_thread_and_restores() -> None:
    from pianoeval.core.threads import one_thread

    before = torch.get_num_threads()
    assert one_thread(torch.get_num_threads)() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("load", "omp", "expected"),
    [(0.3, None, 2), (1.9, None, 2), (2.0, None, 1), (9.0, None, 1), (9.0, "2", 2)],
    ids=["idle", "one-core-busy", "cores-busy", "overloaded", "user-set-OMP_NUM_THREADS"],
)
def test_threads_for_load(monkeypatch: pytest.MonkeyPatch, load: float, omp: str | None, expected: int) -> None:
    """One thread once the load average reaches the core count (2 here), unless the user chose."""
    from pianoeval.core import threads

    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert threads.threads_for_load(2) == expected


def test_bad_inputs_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        transcribe(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(InputError, match="not a readable audio file"):
        transcribe(tmp_path / "junk.wav")
    with pytest.raises(InputError, match="sample_rate is required"):
        transcribe(np.zeros(100, dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        transcribe(np.full(100, np.nan, dtype=np.float32), sample_rate=44100)


@pytest.mark.slow(reason="renders with FluidSynth and runs TransKun on the CPU")
@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3")
def test_transcribes_rendered_notes(tmp_path: Path) -> None:
    pitches = [60, 64, 67, 72, 65]
    reference = np.array([[0.3 + 0.6 * i, 0.3 + 0.6 * i + 0.4, p, 90] for i, p in enumerate(pitches)], dtype=float)
    midi = write_performance(Performance(reference), tmp_path / "in.mid")
    wav = tmp_path / "out.wav"
    subprocess.run(
        ["fluidsynth", "-ni", "-F", str(wav), "-r", "44100", str(SOUNDFONT), str(midi)],
        check=True,
        capture_output=True,
    )
    # Cut to 3.5 s (the notes end at 3.1 s) so the window count below does not hang on FluidSynth's tail.
    audio, rate = sf.read(str(wav), dtype="float32")
    perf, stats = transcribe_timed(audio[: int(3.5 * rate)], sample_rate=rate, progress=False)
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        reference[:, :2],
        mir_eval.util.midi_to_hz(reference[:, 2]),
        perf.notes[:, :2],
        mir_eval.util.midi_to_hz(perf.notes[:, 2]),
        onset_tolerance=0.05,
        offset_ratio=None,
    )
    assert f1 >= 0.8, perf.notes
    assert stats["wall_s"] > 0 and stats["audio_s"] >= reference[-1, 1]
    # Shorter than a window: one window, (16 - 3.5) / 3 s of zeros before the audio.
    assert stats["n_windows"] == 1
    # TransKun's own layout at a 10 s hop: 3.5 s padded by 6 s on both sides, one window holding audio (the
    # next would start after the audio's end, padding only); the same notes.
    perf10, stats10 = transcribe_timed(audio[: int(3.5 * rate)], sample_rate=rate, progress=False, hop_s=10.0)
    assert stats10["n_windows"] == 1
    assert np.array_equal(perf10.notes[:, 2], perf.notes[:, 2])
    assert np.abs(perf10.notes[:, 0] - perf.notes[:, 0]).max() < 0.02


FS, FRAME = 44_100, 1024  # TransKun's rate and frame hop


@pytest.mark.parametrize("seconds", [0.5, 3.5, 10.0, 14.5, 15.0, 15.5, 29.0, 30.0, 31.5, 60.0, 600.0])
def test_window_plan_covers_the_audio_with_the_fewest_windows(seconds: float) -> None:
    """The default plan: EDGE_PAD_S before the audio, neighbours overlapping by MIN_OVERLAP_S at least (less
    one frame), the last window reaching the audio's end, steps of whole frames, and no window fewer would do."""
    from pianoeval.audio.transcribe import EDGE_PAD_S, MIN_OVERLAP_S, plan_windows

    n = round(seconds * FS)
    plan = plan_windows(n, FS, FRAME, 16.0)
    assert plan.size == 16 * FS and len(plan.starts()) == plan.n_windows
    assert plan.pad_begin >= EDGE_PAD_S * FS
    assert plan.starts()[-1] + plan.size >= plan.pad_begin + n  # the end of the audio is inside a window
    if plan.n_windows > 1:
        assert plan.step % FRAME == 0  # every window's frames on one grid
        assert plan.size - plan.step >= MIN_OVERLAP_S * FS - FRAME
        # One window fewer, at the largest step the overlap allows, would not reach the end.
        assert plan.pad_begin + n > (plan.n_windows - 2) * (16.0 - MIN_OVERLAP_S) * FS + plan.size
    expected = {0.5: 1, 3.5: 1, 10.0: 1, 14.5: 1, 15.0: 1, 15.5: 2, 29.0: 2, 30.0: 2, 31.5: 3, 60.0: 4, 600.0: 40}
    assert plan.n_windows == expected[seconds]


def test_window_plan_of_a_short_recording_and_transkun_layout() -> None:
    from pianoeval.audio.transcribe import plan_windows

    # Well inside one window: (16 - 10) / 3 = 2 s of zeros before the audio (as before the plan existed).
    assert plan_windows(10 * FS, FS, FRAME, 16.0).pad_begin == 2 * FS
    assert plan_windows(int(14.5 * FS), FS, FRAME, 16.0).pad_begin == FS  # at least EDGE_PAD_S
    # TransKun's layout at a 10 s hop: 6 s of zeros, a window every 10 s (rounded up to whole frames) while
    # a window still holds audio: 30 s → starts at 0, 10, 20 and 30 s of the padded signal.
    plan = plan_windows(30 * FS, FS, FRAME, 16.0, hop_s=10.0)
    assert (plan.pad_begin, plan.step, plan.n_windows) == (6 * FS, 431 * FRAME, 4)
    assert plan_windows(int(3.5 * FS), FS, FRAME, 16.0, hop_s=10.0).n_windows == 1


@pytest.mark.slow(reason="runs TransKun on a 16 s window on the CPU")
def test_the_model_finds_nothing_in_padding() -> None:
    """What skipping a padding-only window relies on: the model run on it returns no notes."""
    from pianoeval.audio.transcribe import _model

    model = _model("cpu")  # imports transkun (with its torchaudio stand-in) first
    from transkun.Util import makeFrame

    frames = makeFrame(torch.zeros(1, 16 * model.fs), model.hopSize, model.windowSize).unsqueeze(0)
    with torch.inference_mode():
        notes, last = model.transcribeFrames(frames)
    assert notes == [[]] and last == [0] * len(model.targetMIDIPitch)
