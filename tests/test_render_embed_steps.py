"""The render and embed steps: runs interrupted after k files restart where they stopped (the rerun
only processes the remaining files, and the result equals an uninterrupted run); the embed subset."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from pianoeval.audio import render as render_module
from pianoeval.audio.io import save_audio
from pianoeval.core.config import validate_config
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json
from pianoeval.data.manifest import make_rows, read_manifest, select_per_group, write_manifest
from pianoeval.steps import embed as embed_module
from pianoeval.steps.embed import run_embed
from pianoeval.steps.render import run_render

N_FILES = 5


class Interrupted(BaseException):
    """Stands in for the kill, raised by the (k+1)-th call so exactly k files were finished. A
    BaseException like KeyboardInterrupt: per-file error handling must not take it for a bad file."""


def counting(real: Callable[..., Any], calls: list[Any], fail_after: int | None = None) -> Callable[..., Any]:
    """Wrap `real`, recording each call's first argument; raise Interrupted on calls past `fail_after`."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if fail_after is not None and len(calls) > fail_after:
            raise Interrupted
        return real(*args, **kwargs)

    return wrapped


def _manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A manifest of T1 rows (one segment group each) written to `path`."""
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test"}
    write_manifest(make_rows([{**base, "segment_group": r["segment_id"], **r} for r in rows]), path)
    return path


def _has_renderer() -> bool:
    try:
        render_module.find_soundfont()
    except InputError:
        return False
    return shutil.which("fluidsynth") is not None


needs_renderer = pytest.mark.skipif(not _has_renderer(), reason="fluidsynth or a General MIDI SoundFont missing")


@pytest.fixture
def midi_manifest(tiny_midi: Callable[..., Path], tmp_path: Path) -> Path:
    """N_FILES different short MIDIs (ids with '/' and '::', as real ids have) in a manifest."""
    rows = [
        {
            "segment_id": f"piece/{i}::seg",
            "midi_path": str(tiny_midi(f"m{i}.mid", pitches=(60 + i, 64 + i), step_s=0.2)),
        }
        for i in range(N_FILES)
    ]
    return _manifest(tmp_path / "manifest.parquet", rows)


@needs_renderer
def test_render_interrupted_after_k_files_resumes_with_the_rest(
    midi_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = validate_config({})
    audio_dir, out = tmp_path / "audio", tmp_path / "render" / "manifest.parquet"
    real, k = render_module.render_midi, 2

    first: list[Any] = []
    monkeypatch.setattr(render_module, "render_midi", counting(real, first, fail_after=k))
    with pytest.raises(Interrupted):
        run_render(config, midi_manifest, audio_dir, out, threads=1)
    done = sorted(audio_dir.glob("*.wav"))
    assert len(done) == k and not out.exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in done}

    second: list[Any] = []
    monkeypatch.setattr(render_module, "render_midi", counting(real, second))
    report = tmp_path / "reports" / "render_skipped.json"  # wherever the rule says: the step derives no path
    df = run_render(config, midi_manifest, audio_dir, out, threads=1, skipped=report)
    # Only the files the interrupted run had not finished are rendered; the finished ones are reused as is.
    assert sorted(second) == sorted(set(read_manifest(midi_manifest)["midi_path"]) - set(first[:k]))
    assert {p.name: p.stat().st_mtime_ns for p in done} == stamps
    assert df["audio_path"].map(lambda p: Path(p).is_file()).all() and df["audio_path"].nunique() == N_FILES
    summary = read_json(report)
    assert (summary["rendered_now"], summary["reused"], summary["skipped"]) == (N_FILES - k, k, [])
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.parquet"]

    # Other render settings are another key: nothing stale is reused.
    third: list[Any] = []
    monkeypatch.setattr(render_module, "render_midi", counting(real, third))
    df16 = run_render(validate_config({"render": {"sample_rate": 16_000}}), midi_manifest, audio_dir, out, threads=1)
    assert len(third) == N_FILES
    assert {sf.info(p).samplerate for p in df16["audio_path"]} == {16_000}


@needs_renderer
def test_render_through_a_cache_survives_its_audio_folder_being_emptied(
    midi_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules declare the audio folder, which Snakemake empties before a rerun: the WAVs kept in the
    cache are linked back (nothing rendered again), to the same audio_path values, with the same bytes."""
    config, out = validate_config({}), tmp_path / "render" / "manifest.parquet"
    audio_dir, cache = tmp_path / "render" / "audio", tmp_path / "cache" / "render"
    first = run_render(config, midi_manifest, audio_dir, out, threads=1, cache_dir=cache)
    wavs = {p.name: p.read_bytes() for p in audio_dir.iterdir()}
    assert len(wavs) == N_FILES and sorted(wavs) == sorted(p.name for p in cache.iterdir())
    assert all(Path(p).parent == audio_dir.resolve() for p in first["audio_path"])
    assert all((audio_dir / n).samefile(cache / n) for n in wavs)  # linked, not copied

    shutil.rmtree(audio_dir)  # what Snakemake does to a directory() output before rerunning its job
    calls: list[Any] = []
    monkeypatch.setattr(render_module, "render_midi", counting(render_module.render_midi, calls))
    report = tmp_path / "skipped.json"
    again = run_render(config, midi_manifest, audio_dir, out, threads=1, skipped=report, cache_dir=cache)
    assert calls == [] and read_json(report)["reused"] == N_FILES
    assert list(again["audio_path"]) == list(first["audio_path"])
    assert {p.name: p.read_bytes() for p in audio_dir.iterdir()} == wavs


@needs_renderer
def test_interrupted_render_drops_queued_files(
    midi_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interruption stops the run instead of rendering every queued file first."""
    real, calls = render_module.render_midi, []

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if len(calls) == 2:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(render_module, "render_midi", fail_once)
    with pytest.raises(Interrupted):
        run_render(validate_config({}), midi_manifest, tmp_path / "audio", tmp_path / "out.parquet", threads=1)
    # File 1 done, file 2 interrupted, file 3 at most already started by the worker; 4 and 5 cancelled.
    assert len(calls) <= 3 < N_FILES


def test_embed_interrupted_after_k_files_resumes_with_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = validate_config({})
    sr = config["render"]["sample_rate"]
    t = np.arange(sr) / sr
    rows = []
    for i in range(N_FILES):
        wav = save_audio(0.3 * np.sin(2 * np.pi * 110.0 * (i + 1) * t), tmp_path / "wav" / f"s{i}.wav", sr)
        rows.append({"segment_id": f"s{i}", "audio_path": str(wav)})
    manifest = _manifest(tmp_path / "manifest.parquet", rows)
    cache, out = tmp_path / "cache", tmp_path / "embed" / "logmel.pt"
    real, k = embed_module.embed_wave, 3

    first: list[Any] = []
    monkeypatch.setattr(embed_module, "embed_wave", counting(real, first, fail_after=k))
    with pytest.raises(Interrupted):
        run_embed("logmel", config, manifest, out, cache)
    assert len(list(cache.rglob("*.pt"))) == k and not out.exists()

    second: list[Any] = []
    monkeypatch.setattr(embed_module, "embed_wave", counting(real, second))
    run_embed("logmel", config, manifest, out, cache, skipped=tmp_path / "reports" / "embed.json")
    assert len(second) == N_FILES - k
    assert read_json(tmp_path / "reports" / "embed.json")["embedded_now"] == N_FILES - k
    assert sorted(p.name for p in out.parent.iterdir()) == ["logmel.pt"]

    # The resumed store equals one from an uninterrupted run.
    monkeypatch.setattr(embed_module, "embed_wave", real)
    run_embed("logmel", config, manifest, tmp_path / "fresh.pt", tmp_path / "fresh_cache")
    resumed = torch.load(out, weights_only=False)["items"]
    fresh = torch.load(tmp_path / "fresh.pt", weights_only=False)["items"]
    assert sorted(resumed) == sorted(fresh) == [f"s{i}" for i in range(N_FILES)]
    for key in fresh:
        torch.testing.assert_close(resumed[key]["audio_emb"], fresh[key]["audio_emb"])


def test_embed_subset_draws_labelled_rows_per_group(tmp_path: Path) -> None:
    config = validate_config({"audio": {"embed_per_group": 2}})
    sr = config["render"]["sample_rate"]
    t = np.arange(sr // 2) / sr
    rows = []
    for g, n in (("g1", 5), ("g2", 3)):
        for i in range(n):
            wav = save_audio(0.3 * np.sin(2 * np.pi * 220.0 * (i + 1) * t), tmp_path / f"{g}_{i}.wav", sr)
            # g2's first performance is unlabelled: never drawn.
            labels = None if (g, i) == ("g2", 0) else [0.5] * 19
            rows.append({"segment_id": f"{g}_{i}", "segment_group": g, "audio_path": str(wav), "labels": labels})
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test"}
    df = make_rows([{**base, **r} for r in rows])
    picked = select_per_group(df, 2, seed=0)
    assert picked["segment_group"].value_counts().to_dict() == {"g1": 2, "g2": 2}
    assert "g2_0" not in set(picked["segment_id"])
    assert picked.equals(select_per_group(df, 2, seed=0))
    assert len({tuple(select_per_group(df, 2, seed=s)["segment_id"]) for s in range(6)}) > 1
    assert select_per_group(df, None, seed=0).equals(df)

    manifest = tmp_path / "manifest.parquet"
    write_manifest(df, manifest)
    meta = run_embed("logmel", config, manifest, tmp_path / "logmel.pt", tmp_path / "cache")
    store = torch.load(tmp_path / "logmel.pt", weights_only=False)
    assert sorted(store["items"]) == sorted(select_per_group(df, 2, seed=config["seed"])["segment_id"])
    assert meta["per_group"] == 2
