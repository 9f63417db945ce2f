"""TransKun transcription views of the rendered recordings (steps/transcribe.py) and how training
and fusion use them: view ids, the cached resumable step on real renderings, the views joining the
training split (never dev or val) and val_transcribed, fusion pairing a view with its recording's audio."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pianoeval.audio.augmentation import view_seed, view_wave
from pianoeval.core.config import validate_config
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json
from pianoeval.data.manifest import make_rows, read_manifest, split_view_id, view_id, write_manifest
from pianoeval.data.midi import load_performance
from pianoeval.steps import transcribe as tc
from pianoeval.steps.render import run_render
from pianoeval.training.data import load_fold_data, transcription_views
from pianoeval.training.fusion_data import build_fusion_data
from tests.test_render_embed_steps import counting, needs_renderer


def test_view_ids_round_trip_and_other_ids_are_left_alone() -> None:
    assert view_id("demo::piece00/P01", "clean") == "demo::piece00/P01@clean"
    assert split_view_id("demo::piece00/P01@augmented") == ("demo::piece00/P01", "augmented")
    # An '@' inside an id that is not followed by a view name is part of the id.
    assert split_view_id("someone@example/seg1") == ("someone@example/seg1", None)
    assert split_view_id("score::/x/y.mid") == ("score::/x/y.mid", None)
    keys = ["a", "a@clean", "a@augmented", "b", "b@clean", "c@mail"]
    expected = {"a": {"clean": "a@clean", "augmented": "a@augmented"}, "b": {"clean": "b@clean"}}
    assert transcription_views(keys) == expected


def test_augmented_view_is_seeded_per_segment_and_changes_the_audio() -> None:
    wave = np.random.default_rng(0).normal(0, 0.1, 24_000).astype(np.float32)
    seed = view_seed("p/1", 42)
    assert seed == view_seed("p/1", 42) != view_seed("p/2", 42)
    a = view_wave(wave, 24_000, "augmented", seed)
    assert np.array_equal(a, view_wave(wave, 24_000, "augmented", seed))
    assert a.shape == wave.shape and not np.allclose(a, wave)
    assert view_wave(wave, 24_000, "clean", seed) is wave
    with pytest.raises(ValueError, match="unknown transcription view"):
        view_wave(wave, 24_000, "phone", seed)


@pytest.fixture
def rendered(tiny_midi: Callable[..., Path], tmp_path: Path) -> Path:
    """Two short rendered performances (a C major and an A minor arpeggio) in a rendered manifest."""
    midis = [
        tiny_midi("c.mid", pitches=(60, 64, 67, 72), step_s=0.4, pedal=False),
        tiny_midi("a.mid", pitches=(57, 60, 64, 69), step_s=0.4, pedal=False),
    ]
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test", "labels": np.full(19, 0.5)}
    rows = [{**base, "segment_id": f"p/{i}", "segment_group": "p", "midi_path": str(m)} for i, m in enumerate(midis)]
    manifest = write_manifest(make_rows(rows), tmp_path / "prepare.parquet")
    out = tmp_path / "render" / "manifest.parquet"
    run_render(validate_config({}), manifest, tmp_path / "audio", out, threads=1)
    return out


@needs_renderer
def test_transcribe_step_writes_views_and_reuses_its_cache(
    rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = validate_config({"transcription": {"views": ["clean", "augmented"]}})
    out, cache = tmp_path / "transcribe" / "manifest.parquet", tmp_path / "cache"
    report = tmp_path / "reports" / "transcribe.json"
    df = tc.run_transcribe(config, rendered, out, cache, threads=1, skipped=report)
    assert list(df["segment_id"]) == ["p/0@clean", "p/0@augmented", "p/1@clean", "p/1@augmented"]
    assert read_manifest(out)["segment_id"].tolist() == df["segment_id"].tolist()
    # Labels, group and piece come from the recording's row; the MIDI is the transcription.
    assert df["segment_group"].eq("p").all() and np.allclose(np.stack(df["labels"]), 0.5)
    clean = load_performance(df["midi_path"][0])
    assert sorted(clean.notes[:, 2].astype(int).tolist()) == [60, 64, 67, 72]
    assert read_json(report)["transcribed_now"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.parquet"]

    # A second run (the killed run's restart) transcribes nothing that is cached.
    calls: list[Any] = []
    monkeypatch.setattr(tc, "_work", counting(tc._work, calls))
    again = tc.run_transcribe(config, rendered, out, cache, threads=1, skipped=report)
    assert again["midi_path"].tolist() == df["midi_path"].tolist()
    assert read_json(report)["transcribed_now"] == 0


def test_per_group_transcribes_a_seeded_draw_of_each_segment_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test", "labels": np.full(19, 0.5)}
    rows = [
        {**base, "segment_id": f"{g}/{i}", "segment_group": g, "midi_path": "x.mid", "audio_path": f"{g}{i}.wav"}
        for g in ("a", "b", "c")
        for i in range(5)
    ]
    manifest = write_manifest(make_rows(rows), tmp_path / "rendered.parquet")
    asked: list[str] = []

    def fake_work(job: tuple) -> tuple[str, str, None, bool]:  # TransKun is not under test here
        asked.append(job[0])
        return view_id(job[0], job[2]), f"{job[0]}.mid", None, True

    monkeypatch.setattr(tc, "_work", fake_work)

    def transcribed(seed: int) -> list[str]:
        config = validate_config({"seed": seed, "transcription": {"views": ["clean"], "per_group": 2}})
        df = tc.run_transcribe(config, manifest, tmp_path / f"views{seed}.parquet", tmp_path / "cache", threads=1)
        return [split_view_id(v)[0] for v in df["segment_id"]]

    first = transcribed(0)
    assert asked == first  # only the drawn recordings reach TransKun
    assert [v.split("/")[0] for v in first] == ["a", "a", "b", "b", "c", "c"]  # 2 per group, manifest order
    assert transcribed(0) == first and transcribed(1) != first  # seeded
    with pytest.raises(Exception, match="per_group"):
        validate_config({"transcription": {"per_group": 1}})  # a single recording makes no pair


def test_transcribe_step_without_views_writes_an_empty_manifest(rendered: Path, tmp_path: Path) -> None:
    out = tmp_path / "t" / "manifest.parquet"
    df = tc.run_transcribe(validate_config({}), rendered, out, tmp_path / "cache")
    assert df.empty and read_manifest(out).empty


def test_transcribe_step_names_unreadable_audio_and_stops_over_the_skip_limit(rendered: Path, tmp_path: Path) -> None:
    df = read_manifest(rendered)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave")
    df.loc[0, "audio_path"] = str(bad)
    broken = write_manifest(df, tmp_path / "broken.parquet")
    config = validate_config({"transcription": {"views": ["clean"]}, "max_skipped_fraction": 0.0})
    out = tmp_path / "t" / "manifest.parquet"
    with pytest.raises(InputError, match="transcribe"):
        tc.run_transcribe(config, broken, out, tmp_path / "cache")
    assert not out.exists()
    entry = tc._work(("p/0", str(bad), "clean", 0, str(tmp_path / "cache"), "cpu"))
    assert entry[1] is None and entry[2]["path"] == str(bad)


def _store(ids: list[str]) -> dict[str, Any]:
    """A stats feature store whose item i has stats filled with i."""
    return {"kind": "stats", "meta": {}, "items": {k: {"stats": torch.full((3,), float(i))} for i, k in enumerate(ids)}}


def test_views_join_the_training_split_only_and_val_transcribed(one_fold: Callable[..., dict], tmp_path: Path) -> None:
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test"}
    rows = [
        {**base, "segment_id": f"g{g}/{i}", "segment_group": f"g{g}", "labels": np.full(19, 0.1 * (g + 1))}
        for g in range(3)
        for i in range(2)
    ]
    manifest = make_rows(rows)
    folds = one_fold(manifest, tmp_path / "folds.json", n_train=1, n_dev=1)
    ids = list(manifest["segment_id"])
    store = _store(ids + [f"{s}@{v}" for s in ids for v in ("clean", "augmented")])
    data = load_fold_data(store, manifest, folds, 0)
    split_ids = {s: [data.items[i]["segment_id"] for i in idx] for s, idx in data.splits.items()}
    assert split_ids["train"] == [
        "g0/0", "g0/0@clean", "g0/0@augmented", "g0/1", "g0/1@clean", "g0/1@augmented"
    ]  # fmt: skip
    assert split_ids["dev"] == ["g1/0", "g1/1"] and split_ids["val"] == ["g2/0", "g2/1"]
    assert split_ids["val_transcribed"] == ["g2/0@clean", "g2/1@clean"]
    view = data.items[data.splits["val_transcribed"][0]]
    src = data.items[data.splits["val"][0]]
    assert torch.equal(view["labels"], src["labels"]) and int(view["group"]) == int(src["group"])
    assert not torch.equal(view["stats"], src["stats"])  # its own features
    # Without views, the splits are what they were.
    plain = load_fold_data(_store(ids), manifest, folds, 0)
    assert set(plain.splits) == {"train", "dev", "val"} and len(plain.splits["train"]) == 2


def test_fusion_pairs_a_transcription_view_with_its_recordings_audio() -> None:
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test", "segment_group": "p"}
    manifest = make_rows([{**base, "segment_id": f"p/{i}", "labels": np.full(19, 0.2 * i)} for i in range(3)])
    audio = {
        "ids": ["p/0", "p/1", "p/2"],
        "split": ["train", "train", "val"],
        "z": torch.eye(3),
        "scores": torch.zeros(3, 19),
    }
    symbolic = {
        "ids": ["p/0", "p/0@clean", "p/1", "p/2"],
        "split": ["train", "train", "train", "val"],
        "z": torch.arange(8.0).reshape(4, 2),
        "scores": torch.zeros(4, 19),
    }
    data = build_fusion_data(audio, symbolic, manifest)
    assert data.missing == [] and len(data.splits["train"]) == 3
    view = next(it for it in data.items if it["segment_id"] == "p/0@clean")
    assert torch.equal(view["z_audio"], audio["z"][0]) and torch.equal(view["z_symbolic"], symbolic["z"][1])
    assert torch.allclose(view["labels"], torch.zeros(19))


def test_ridge_baseline_gives_transcriptions_their_own_fit(one_fold: Callable[..., dict], tmp_path: Path) -> None:
    """The ground-truth predictions of the ridge baseline are the same with and without transcription
    views in training; the transcriptions (compressed statistics) are predicted by their own ridge."""
    from pianoeval.training.baselines import baseline_predict

    rng = np.random.default_rng(0)
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test"}
    n_groups, per = 12, 4
    x = rng.normal(size=(n_groups * per, 5)).astype("float32")
    y = 1 / (1 + np.exp(-(x[:, :1] @ np.ones((1, 19)))))
    rows = [
        {**base, "segment_id": f"g{i // per:02d}/{i % per}", "segment_group": f"g{i // per:02d}", "labels": y[i]}
        for i in range(len(x))
    ]
    manifest = make_rows(rows)
    folds = one_fold(manifest, tmp_path / "folds.json", n_train=8, n_dev=2)
    ids = list(manifest["segment_id"])
    gt = {sid: {"stats": torch.from_numpy(x[i])} for i, sid in enumerate(ids)}
    views = {f"{sid}@clean": {"stats": torch.from_numpy(0.3 * x[i] + 1.0)} for i, sid in enumerate(ids)}
    plain = load_fold_data({"items": gt}, manifest, folds, 0)
    mixed = load_fold_data({"items": {**gt, **views}}, manifest, folds, 0)
    p_plain, p_mixed = baseline_predict("baseline_ridge", plain), baseline_predict("baseline_ridge", mixed)
    assert np.allclose(p_plain["val"], p_mixed["val"]) and np.allclose(p_plain["dev"], p_mixed["dev"])
    # The transcribed validation rows, predicted by their own ridge: far better than the training mean.
    y_val = np.stack([mixed.items[i]["labels"].numpy() for i in mixed.splits["val_transcribed"]])
    own = np.mean((p_mixed["val_transcribed"] - y_val) ** 2)
    assert own < 0.5 * np.mean((mixed.labels("train").mean(0) - y_val) ** 2)
    trees = baseline_predict("baseline_trees", mixed)  # reads [x, flag]
    assert trees["val_transcribed"].shape == y_val.shape


def test_ridge_baseline_scores_transcriptions_by_the_ground_truth_fit_without_any_in_training(
    one_fold: Callable[..., dict], tmp_path: Path
) -> None:
    from pianoeval.training.baselines import baseline_predict

    rng = np.random.default_rng(1)
    base = {"piece_id": "p", "performer": "1", "tier": "T1", "source": "test"}
    x = rng.normal(size=(24, 3)).astype("float32")
    rows = [
        {
            **base,
            "segment_id": f"g{i // 4}/{i % 4}",
            "segment_group": f"g{i // 4}",
            "labels": np.full(19, 0.5 + 0.1 * x[i, 0]),
        }
        for i in range(24)
    ]
    manifest = make_rows(rows)
    folds = one_fold(manifest, tmp_path / "folds.json", n_train=4, n_dev=1)
    items = {sid: {"stats": torch.from_numpy(x[i])} for i, sid in enumerate(manifest["segment_id"])}
    # Views of the validation segments only, with the same statistics as their MIDI.
    val = folds["folds"][0]["val"]
    items.update({f"{sid}@clean": dict(items[sid]) for sid in val})
    data = load_fold_data({"items": items}, manifest, folds, 0)
    assert "val_transcribed" in data.splits and not any(
        "@" in data.items[i]["segment_id"] for i in data.splits["train"]
    )
    preds = baseline_predict("baseline_ridge", data)
    assert np.allclose(preds["val_transcribed"], preds["val"])
