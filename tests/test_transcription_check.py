"""The TransKun transcription check: note scores (hand-checked), stratified selection, cropping, and
the run (render, transcribe, score, cache) with a stand-in transcriber."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pianoeval.audio import transcribe as transcribe_module
from pianoeval.audio.render import find_soundfont
from pianoeval.audio.transcription_check import (
    MIN_NOTE_S,
    crop_notes,
    note_scores,
    run_transcribe_check,
    select_stratified,
    stratum,
    sustain_offsets,
)
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json
from pianoeval.data.manifest import make_rows, write_manifest
from pianoeval.data.midi import Performance, load_performance

REFERENCE = np.array([[0.0, 0.5, 60, 80], [1.0, 1.5, 62, 80], [2.0, 2.5, 64, 80], [3.0, 3.5, 65, 80]])


def test_note_scores_hand_checked() -> None:
    estimate = np.array(
        [
            [0.03, 0.5, 60, 70],  # onset 30 ms late (within 50 ms), offset exact
            [1.07, 1.5, 62, 70],  # onset 70 ms late: no match
            [2.0, 2.2, 64, 70],  # onset exact, offset 300 ms early (tolerance max(0.2 x 0.5 s, 50 ms))
            [3.0, 3.5, 70, 70],  # wrong pitch
        ]
    )
    scores = note_scores(REFERENCE, estimate)
    assert scores["onset"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert scores["onset_offset"] == pytest.approx({"precision": 0.25, "recall": 0.25, "f1": 0.25})
    # Half the estimate is extra notes: precision halves, recall stays.
    later = estimate.copy()
    later[:, :2] += 5.0  # the same notes 5 s later: nothing in the reference there
    extra = np.concatenate([estimate, later])
    assert note_scores(REFERENCE, extra)["onset"]["precision"] == pytest.approx(0.25)
    assert note_scores(REFERENCE, extra)["onset"]["recall"] == pytest.approx(0.5)
    assert note_scores(REFERENCE, np.zeros((0, 4)))["onset"]["f1"] == 0.0


def test_sustain_pedal_holds_released_notes_until_lifted_or_restruck() -> None:
    notes = np.array([[0.0, 0.5, 60, 80], [1.0, 1.2, 62, 80], [1.5, 1.6, 60, 80], [3.0, 3.2, 64, 80]])
    pedal = np.array([[0.2, 127.0], [2.0, 0.0]])
    # 60 is held only until it is struck again at 1.5 s; 64 is released after the pedal is up.
    np.testing.assert_allclose(sustain_offsets(notes, pedal)[:, 1], [1.5, 2.0, 2.0, 3.2])
    # A pedal never lifted holds to the end of the last note; no pedal changes nothing.
    np.testing.assert_allclose(sustain_offsets(notes, pedal[:1])[:, 1], [1.5, 3.2, 3.2, 3.2])
    np.testing.assert_array_equal(sustain_offsets(notes, np.zeros((0, 2))), notes)


def test_crop_notes_keeps_onsets_before_the_cut_and_lengthens_zero_notes() -> None:
    notes = np.array([[0.0, 0.0, 60, 80], [0.9, 1.4, 62, 80], [1.0, 1.2, 64, 80]])
    cropped = crop_notes(notes, 1.0)
    np.testing.assert_allclose(cropped[:, :2], [[0.0, MIN_NOTE_S], [0.9, 1.0]])
    np.testing.assert_array_equal(crop_notes(notes, None)[1:], notes[1:])


def test_stratified_selection_per_piece_and_bar_length() -> None:
    ids = [f"Schubert_D960_mv2_{bars}_{p}_{s:02d}" for bars in ("8bars", "16bars") for p in range(5) for s in range(3)]
    ids += ["Bach_Prelude_bwv_860::Ko04M"]
    pieces = ["Schubert_D960_mv2"] * 30 + ["Bach_Prelude_bwv_860"]
    assert stratum(ids[0], pieces[0]) == "Schubert_D960_mv2/8bars" and stratum(ids[-1], pieces[-1]) == pieces[-1]
    df = pd.DataFrame({"segment_id": ids, "piece_id": pieces})
    picked = select_stratified(df, per_group=2, seed=1)
    assert picked["stratum"].value_counts().to_dict() == {
        "Schubert_D960_mv2/8bars": 2,
        "Schubert_D960_mv2/16bars": 2,
        "Bach_Prelude_bwv_860": 1,  # smaller than per_group: all of it
    }
    assert picked["segment_id"].is_unique
    assert picked.equals(select_stratified(df, per_group=2, seed=1))
    draws = {tuple(select_stratified(df, per_group=2, seed=s)["segment_id"]) for s in range(5)}
    assert len(draws) > 1  # the seed picks, not the order


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_run_renders_scores_crops_and_caches(
    tiny_midi: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        find_soundfont()
    except InputError:
        pytest.skip("no General MIDI SoundFont")
    # Five notes 0.5 s apart in every file; two pieces, two performances each.
    rows = [
        {
            "segment_id": f"{piece}_8bars_{p}_1",
            "piece_id": piece,
            "segment_group": piece,
            "performer": str(p),
            "tier": "T1",
            "source": "test",
            # Different velocities per piece: identical files would share one cached transcription.
            "midi_path": str(tiny_midi(f"{piece}_{p}.mid", velocity=80 if piece == "A" else 64)),
        }
        for piece in ("A", "B")
        for p in range(2)
    ]
    manifest = tmp_path / "manifest.parquet"
    write_manifest(make_rows(rows), manifest)
    truth = load_performance(rows[0]["midi_path"])  # pedal down at 0 s, up at 2.5 s
    calls: list[float] = []

    def perfect(wave: np.ndarray, sample_rate: int, **kwargs: Any) -> tuple[Performance, dict[str, float]]:
        """Returns the whole MIDI's notes: the ones after the cut must not count."""
        calls.append(len(wave) / sample_rate)
        timing = {"audio_s": len(wave) / sample_rate, "wall_s": 0.5, "real_time_factor": 0.5, "n_windows": 1.0}
        return Performance(truth.notes.copy(), truth.pedal.copy()), timing

    monkeypatch.setattr(transcribe_module, "transcribe_timed", perfect)
    out = tmp_path / "check" / "report.json"
    kwargs = {"audio_dir": tmp_path / "audio", "per_group": 1, "max_seconds": 1.2}
    report = run_transcribe_check(manifest, out, tmp_path / "cache", **kwargs)
    assert read_json(out)["summary"] == report["summary"]
    assert [f["stratum"] for f in report["files"]] == ["A/8bars", "B/8bars"]
    assert all(Path(f["audio_path"]).is_file() for f in report["files"])  # rendered on the way
    assert calls == [pytest.approx(1.2), pytest.approx(1.2)]  # only the first 1.2 s is transcribed
    for f in report["files"]:
        assert f["n_reference"] == f["n_estimate"] == 3  # onsets 0, 0.5, 1.0 s
        assert f["onset"]["f1"] == f["onset_offset"]["f1"] == f["onset_offset_pedal"]["f1"] == 1.0
    assert report["summary"]["onset_f1"] == {"mean": 1.0, "std": 0.0}
    assert report["summary"]["real_time_factor"] == pytest.approx(0.5 / 1.2)

    # Without its pedal, the transcription's notes stop at the key release: only the held score drops.
    def no_pedal(wave: np.ndarray, sample_rate: int, **kwargs: Any) -> tuple[Performance, dict[str, float]]:
        return Performance(truth.notes.copy()), perfect(wave, sample_rate)[1]

    monkeypatch.setattr(transcribe_module, "transcribe_timed", no_pedal)
    unheld = run_transcribe_check(manifest, out, tmp_path / "cache_no_pedal", **kwargs)["summary"]
    assert unheld["onset_offset_f1"]["mean"] == 1.0 and unheld["onset_offset_pedal_f1"]["mean"] < 0.5
    monkeypatch.setattr(transcribe_module, "transcribe_timed", perfect)
    calls.clear()

    # A rerun reads the cached transcriptions; another length is another transcription.
    assert run_transcribe_check(manifest, out, tmp_path / "cache", **kwargs)["summary"] == report["summary"]
    assert calls == []
    run_transcribe_check(manifest, out, tmp_path / "cache", **{**kwargs, "max_seconds": 0.7})
    assert len(calls) == 2 and read_json(out)["files"][0]["n_reference"] == 2
