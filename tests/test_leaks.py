"""No leak, by construction: fold pretraining never reads validation music (transcription views
included), the fusion never learns from in-sample predictions, and every fold-scoped artifact records
the segment groups it learned from, checked against the fold's validation groups.

Select with `pytest -k leak`. Small synthetic data only (no ../shared), so they run in CI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.constants import N_DIMS
from pianoeval.core.io import read_json, write_json
from pianoeval.data.manifest import label_matrix, make_rows, write_manifest

GROUPS = ["A", "B", "C", "D", "E", "F", "G", "H"]
PER_GROUP = 8


def _manifest(tmp_path: Path, groups: list[str] = GROUPS, per_group: int = PER_GROUP) -> tuple[pd.DataFrame, Path]:
    """A labelled manifest: `per_group` performances of each segment group, one score MIDI per group,
    labels that vary within a group (so that pairs count)."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "segment_id": f"{g}/p{k}",
            "piece_id": g,
            "segment_group": g,
            "performer": f"p{k}",
            "tier": "T1",
            "source": "demo",
            "midi_path": f"{g}/p{k}.mid",
            "score_midi_path": f"scores/{g}.mid",
            "labels": rng.uniform(0.2, 0.8, N_DIMS),
        }
        for g in groups
        for k in range(per_group)
    ]
    df = make_rows(rows)
    path = tmp_path / "manifest.parquet"
    write_manifest(df, path)
    return df, path


def _folds(df: pd.DataFrame, path: Path, train: list[str], dev: list[str], val: list[str]) -> dict:
    """A folds file with fold 0 only (k 1, so that it passes the folds file's layout check), by segment group."""

    def ids(groups: list[str]) -> list[str]:
        return sorted(df.loc[df["segment_group"].isin(groups), "segment_id"])

    folds = {
        "protocol": "segment",
        "k": 1,
        "seed": 0,
        "folds": [{"fold": 0, "train": ids(train), "dev": ids(dev), "val": ids(val)}],
    }
    write_json(folds, path)
    return folds


# -- leak (a): fold pretraining and the transcription views of validation segments -----------------------


def test_leak_pretraining_leaves_out_the_validation_segments_transcription_views(tmp_path: Path) -> None:
    from pianoeval.training.pretrain import pretraining_keys

    df, _ = _manifest(tmp_path)
    folds = _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    keys = [*df["segment_id"], *(f"{sid}@{view}" for sid in df["segment_id"] for view in ("clean", "augmented"))]
    keys += [f"score::scores/{g}.mid" for g in GROUPS] + ["asap::some/piece.mid"]
    store = {"items": {k: {} for k in keys}}
    kept = pretraining_keys(store, df, folds, 0)
    val = set(folds["folds"][0]["val"])
    assert not [k for k in kept if k.split("@")[0] in val], "a validation segment's view is pretrained on"
    assert "score::scores/H.mid" not in kept and "asap::some/piece.mid" in kept
    # Everything else is kept: the training segments' views are fine pretraining material.
    assert f"{folds['folds'][0]['train'][0]}@augmented" in kept
    assert len(kept) == len(keys) - 3 * PER_GROUP - 1


def test_leak_pretrain_step_records_its_groups_and_refuses_validation_music(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pianoeval.data.leaks import ArtifactLeakError
    from pianoeval.steps import pretrain as step

    df, manifest = _manifest(tmp_path)
    _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    store = tmp_path / "curves.pt"
    meta = {"n_features": 4}
    items = {sid: {"curves": torch.zeros(10, 4)} for sid in df["segment_id"]}
    items.update({f"{sid}@clean": {"curves": torch.zeros(10, 4)} for sid in df["segment_id"]})
    torch.save({"kind": "curves", "meta": meta, "items": items}, store)
    config = validate_config({"training": {"pretrain_epochs": 0}, "symbolic": {"hidden": 8, "layers": 1, "heads": 2}})
    out = tmp_path / "encoder.pt"
    info = step.run_pretrain("s3", config, 0, manifest, tmp_path / "folds.json", store, out)
    assert info["learned_from_groups"] == GROUPS[:7]
    assert torch.load(out, weights_only=False)["info"]["learned_from_groups"] == GROUPS[:7]
    # A key selection that lets a validation view through (the old pretraining_keys) fails the build.
    leaky = sorted(items)
    monkeypatch.setattr(step, "pretraining_keys", lambda *args: leaky)
    with pytest.raises(ArtifactLeakError, match=r"encoder2\.pt: fold 0: learned from validation segment group 'H'"):
        step.run_pretrain("s3", config, 0, manifest, tmp_path / "folds.json", store, tmp_path / "encoder2.pt")
    assert not (tmp_path / "encoder2.pt").exists()


def _stats_store(df: pd.DataFrame, path: Path, views: bool = True) -> Path:
    """A statistics store whose 5 statistics carry the labels' signal, with transcription views."""
    y = label_matrix(df)
    rng = np.random.default_rng(1)
    items = {}
    for i, sid in enumerate(df["segment_id"]):
        stats = np.concatenate([y[i, :3], rng.normal(size=2)]).astype("float32")
        items[sid] = {"stats": torch.from_numpy(stats)}
        if views:
            items[f"{sid}@clean"] = {"stats": torch.from_numpy(stats + 0.01)}
    torch.save({"kind": "stats", "meta": {"n_stats": 5}, "items": items}, path)
    return path


def test_leak_train_step_records_learned_groups_and_refuses_a_leaky_pretrained_encoder(tmp_path: Path) -> None:
    from pianoeval.data.leaks import ArtifactLeakError
    from pianoeval.steps.train import run_train

    df, manifest = _manifest(tmp_path)
    _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    store = _stats_store(df, tmp_path / "stats.pt")
    config = validate_config({})
    out = tmp_path / "ridge"
    metrics = run_train("symbolic", "baseline_ridge", config, 0, manifest, tmp_path / "folds.json", store, out)
    # Train rows (with their views) and dev: never H, the validation group.
    assert metrics["learned_from_groups"] == GROUPS[:7] and metrics["labels_from_groups"] == GROUPS[:7]
    assert torch.load(out / "embeddings.pt", weights_only=False)["learned_from_groups"] == GROUPS[:7]
    # A pretrained encoder that read validation music is refused before anything is written.
    encoder = tmp_path / "encoder.pt"
    torch.save({"encoder": {}, "info": {"learned_from_groups": ["A", "H"]}}, encoder)
    with pytest.raises(ArtifactLeakError, match="fold 0: learned from validation segment group 'H'"):
        run_train("symbolic", "s3", config, 0, manifest, tmp_path / "folds.json", store, tmp_path / "s3", encoder)
    assert not (tmp_path / "s3").exists()


def test_leak_guard_message_names_artifact_fold_and_group() -> None:
    from pianoeval.data.leaks import ArtifactLeakError, check_no_leak

    check_no_leak("x.pt", 1, ["A", "B"], ["C"])  # disjoint: fine
    with pytest.raises(ArtifactLeakError) as exc:
        check_no_leak("results/pretrain/s1/fold_1/encoder.pt", 1, ["A", "C", "D"], ["C", "D"])
    message = str(exc.value)
    assert "\n" not in message
    expected = "results/pretrain/s1/fold_1/encoder.pt: fold 1: learned from validation segment group 'C'"
    assert message.startswith(expected)
    assert "(and 1 more)" in message


# -- leak (b): the fusion learns from out-of-fold predictions, never in-sample ones ---------------------


def test_leak_inner_folds_are_group_disjoint_and_cover_the_training_rows(tmp_path: Path) -> None:
    from pianoeval.data.leaks import KeyGroups
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.data import load_feature_store, load_fold_data
    from pianoeval.training.stacking import inner_fold_data

    df, manifest = _manifest(tmp_path)
    folds = _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    store = load_feature_store(_stats_store(df, tmp_path / "stats.pt"))
    data = load_fold_data(store, read_manifest(manifest), folds, 0)
    index = KeyGroups(df)
    held_rows: list[int] = []
    for inner in range(3):
        sub, held = inner_fold_data(data, index, 3, inner, seed=7)
        train_groups = {g for i in sub.splits["train"] for g in index(sub.items[i]["segment_id"])}
        val_groups = {g for i in sub.splits["val"] for g in index(sub.items[i]["segment_id"])}
        assert val_groups == held and not train_groups & held and len(held) == 2
        assert sub.splits["dev"] == data.splits["dev"]
        held_rows += sub.splits["val"]
    # Every training row (ground truth and view) is held out exactly once.
    assert sorted(held_rows) == sorted(data.splits["train"])


HS, HA = 8, 6


def _track_payloads(df: pd.DataFrame, folds: dict) -> dict[str, dict]:
    """Embeddings of two tracks on one fold. The symbolic track *overfits*: its training-row scores
    are the labels themselves (in-sample), elsewhere (dev, val, and out of fold) they are noise around
    the mean. The audio track is honestly good everywhere. Returns the fold payloads and the
    out-of-fold and the in-sample training rows of both."""
    y = label_matrix(df)
    ids = df["segment_id"].tolist()
    spec = folds["folds"][0]
    split_of = {sid: s for s in ("train", "dev", "val") for sid in spec[s]}
    rng = np.random.default_rng(3)
    mean = y.mean(axis=0)

    def useless() -> np.ndarray:
        return np.clip(mean + rng.normal(0, 0.1, y.shape), 0.01, 0.99)

    def good() -> np.ndarray:
        return np.clip(y + rng.normal(0, 0.03, y.shape), 0.01, 0.99)

    sym = useless()
    train = np.array([split_of[s] == "train" for s in ids])
    sym[train] = y[train]
    out = {}
    for track, scores, oof, dim in (("symbolic", sym, useless(), HS), ("audio", good(), good(), HA)):
        order = [i for s in ("train", "dev", "val") for i, sid in enumerate(ids) if split_of[sid] == s]
        out[track] = {
            "ids": [ids[i] for i in order],
            "split": [split_of[ids[i]] for i in order],
            "scores": torch.tensor(scores[order], dtype=torch.float32),
            "z": torch.tensor(scores[order][:, :dim], dtype=torch.float32),
            "learned_from_groups": GROUPS[:7],
        }
        out[f"{track}_oof"] = {sid: oof[i] for i, sid in enumerate(ids) if train[i]}
        out[f"{track}_in_sample"] = {sid: scores[i] for i, sid in enumerate(ids) if train[i]}
    return out


def _oof_files(
    root: Path,
    track: str,
    model: str,
    rows: dict[str, np.ndarray],
    df: pd.DataFrame,
    parts: list[list[str]],
    in_sample: bool = False,
) -> list[Path]:
    """oof.pt files of inner folds holding out `parts` (lists of groups)."""
    group_of = dict(zip(df["segment_id"], df["segment_group"], strict=True))
    train_groups = sorted({group_of[s] for s in rows})
    paths = []
    for j, held in enumerate(parts):
        ids = [s for s in rows if group_of[s] in held]
        labels_from = train_groups if in_sample else [g for g in train_groups if g not in held]
        scores = torch.tensor(np.stack([rows[s] for s in ids]), dtype=torch.float32)
        dim = HS if track == "symbolic" else HA
        payload = {
            "ids": ids,
            "scores": scores,
            "z": scores[:, :dim].clone(),
            "track": track,
            "model": model,
            "fold": 0,
            "inner": j,
            "held_out_groups": held,
            "labels_from_groups": labels_from,
            "learned_from_groups": [*labels_from, "G"],
        }
        paths.append(root / f"{track}_inner_{j}.pt")
        torch.save(payload, paths[-1])
    return paths


@pytest.fixture
def stacked(tmp_path: Path) -> dict:
    """A results folder with both winners' fold-0 embeddings and their inner folds' oof.pt files."""
    return make_stacked(tmp_path)


def make_stacked(tmp_path: Path) -> dict:
    """See the `stacked` fixture (a plain function too: scripts compare old and new stacking with it)."""
    df, manifest = _manifest(tmp_path)
    folds = _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    payloads = _track_payloads(df, folds)
    inputs = {}
    for track, model in (("symbolic", "s3"), ("audio", "probe")):
        folder = tmp_path / "results" / "train" / track / model / "fold_0"
        folder.mkdir(parents=True)
        torch.save(payloads[track], folder / "embeddings.pt")
        winner = write_json({"track": track, "model": model}, tmp_path / "results" / "compare" / track / "winner.json")
        parts = [["A", "B"], ["C", "D"], ["E", "F"]]
        inputs[track] = {
            "winner": winner,
            "embeddings": folder / "embeddings.pt",
            "oof": _oof_files(tmp_path, track, model, payloads[f"{track}_oof"], df, parts),
            # What the old stacking fed the fusion: the fold model's own training-row predictions.
            "in_sample": _oof_files(
                tmp_path / "results", track, model, payloads[f"{track}_in_sample"], df, parts, in_sample=True
            ),
        }
    return {"df": df, "manifest": manifest, "folds": tmp_path / "folds.json", "inputs": inputs, "root": tmp_path}


def _fuse(stacked: dict, out: Path, which: str = "oof") -> dict:
    from pianoeval.steps.fuse import WinnerInputs, run_fuse

    training = {"max_epochs": 30, "batch_size": 8, "patience": 30, "lr": 3e-3}
    config = validate_config({"seed": 2, "fusion": {"hidden": 32}, "training": training})
    tracks = {t: WinnerInputs(i["winner"], i["embeddings"], i[which]) for t, i in stacked["inputs"].items()}
    return run_fuse("f3", config, 0, stacked["manifest"], stacked["folds"], tracks["symbolic"], tracks["audio"], out)


def _val_r2(payload: dict, df: pd.DataFrame) -> float:
    from pianoeval.metrics import r2_scores

    val = [k for k, sp in enumerate(payload["split"]) if sp == "val"]
    y = label_matrix(df.set_index("segment_id").loc[[payload["ids"][k] for k in val]].reset_index())
    return r2_scores(payload["scores"][val].numpy(), y)["mean"]


def test_leak_fusion_learns_from_out_of_fold_rows_not_the_overfit_in_sample_ones(stacked: dict, tmp_path: Path) -> None:
    from pianoeval.training.fusion_data import build_fusion_data

    df = stacked["df"]
    sym = torch.load(stacked["inputs"]["symbolic"]["embeddings"], weights_only=False)
    aud = torch.load(stacked["inputs"]["audio"]["embeddings"], weights_only=False)
    metrics = _fuse(stacked, tmp_path / "f3")
    # In sample the symbolic track looks perfect; out of fold it is useless and the fusion must see
    # that: it follows the audio track (gates above 1/2) and scores the validation rows as well as it.
    assert metrics["stacking"] == {"training_rows": "out_of_fold", "inner_folds": 3}
    assert np.mean(list(metrics["audio_gate_per_dimension"].values())) > 0.5
    assert metrics["r2"] > _val_r2(sym, df) + 0.3 and metrics["r2"] > _val_r2(aud, df) - 0.15
    assert "H" not in metrics["learned_from_groups"]
    # What the fusion read for its training rows: the out-of-fold scores, not the in-sample labels.
    from pianoeval.data.leaks import KeyGroups
    from pianoeval.steps.fuse import WinnerInputs, winner_embeddings

    i = stacked["inputs"]["symbolic"]
    _, stacked_sym = winner_embeddings(WinnerInputs(i["winner"], i["embeddings"], i["oof"]), 0, KeyGroups(df))
    data = build_fusion_data(aud, stacked_sym, df)
    train_scores = torch.stack([data.items[k]["scores_symbolic"] for k in data.splits["train"]])
    train_labels = torch.stack([data.items[k]["labels"] for k in data.splits["train"]])
    assert (train_scores - train_labels).abs().mean() > 0.05  # the in-sample rows would be exact


def test_leak_fusion_refuses_in_sample_or_missing_out_of_fold_rows(stacked: dict, tmp_path: Path) -> None:
    from pianoeval.core.errors import InputError
    from pianoeval.data.leaks import ArtifactLeakError

    # An "out-of-fold" file whose model learned the labels of the rows it predicts is a leak.
    with pytest.raises(ArtifactLeakError, match=r"inner_0\.pt: fold 0/inner 0: learned from its own out-of-fold"):
        _fuse(stacked, tmp_path / "a", which="in_sample")
    # No out-of-fold rows at all (the old in-sample stacking) or a part missing: refused.
    for track in ("symbolic", "audio"):
        stacked["inputs"][track]["none"] = []
        stacked["inputs"][track]["two"] = stacked["inputs"][track]["oof"][:2]
    with pytest.raises(InputError, match="no out-of-fold predictions given"):
        _fuse(stacked, tmp_path / "b", which="none")
    with pytest.raises(InputError, match="has no out-of-fold prediction; rerun train_inner"):
        _fuse(stacked, tmp_path / "c", which="two")
    for name in "abc":
        assert not (tmp_path / name).exists()
    # Embeddings made before the guard (no record) are refused too.
    payload = torch.load(stacked["inputs"]["audio"]["embeddings"], weights_only=False)
    del payload["learned_from_groups"]
    torch.save(payload, stacked["inputs"]["audio"]["embeddings"])
    with pytest.raises(InputError, match="no 'learned_from_groups' record"):
        _fuse(stacked, tmp_path / "d")


def test_leak_fusion_fails_when_a_fold_model_learned_from_validation_music(stacked: dict, tmp_path: Path) -> None:
    from pianoeval.data.leaks import ArtifactLeakError

    path = stacked["inputs"]["symbolic"]["embeddings"]
    payload = torch.load(path, weights_only=False)
    payload["learned_from_groups"] = [*payload["learned_from_groups"], "H"]
    torch.save(payload, path)
    with pytest.raises(ArtifactLeakError, match="f3: fold 0: learned from validation segment group 'H'"):
        _fuse(stacked, tmp_path / "f3")
    assert not (tmp_path / "f3").exists()


def test_leak_train_inner_predicts_only_held_out_rows_and_records_them(tmp_path: Path) -> None:
    from pianoeval.steps.train_inner import run_train_inner

    df, manifest = _manifest(tmp_path)
    _folds(df, tmp_path / "folds.json", train=GROUPS[:6], dev=["G"], val=["H"])
    config = validate_config(
        {
            "training": {"max_epochs": 2, "batch_size": 8, "patience": 1},
            "stacking": {"inner_folds": 3},
            "symbolic": {"hidden": 8, "layers": 1, "heads": 2},
        }
    )
    seen: list[str] = []
    for inner in range(3):
        out = tmp_path / f"inner_{inner}"
        metrics = run_train_inner(
            "symbolic", "s3_deep", config, 0, inner, manifest, tmp_path / "folds.json", _curves_store(df, tmp_path), out
        )
        oof = torch.load(out / "oof.pt", weights_only=False)
        held = set(oof["held_out_groups"])
        assert {sid.split("/")[0] for sid in oof["ids"]} == held and not held & set(oof["labels_from_groups"])
        assert "H" not in oof["learned_from_groups"] and metrics["n_out_of_fold"] == len(oof["ids"])
        assert oof["scores"].shape == (len(oof["ids"]), N_DIMS) and oof["z"].shape[0] == len(oof["ids"])
        seen += oof["ids"]
    assert sorted(seen) == sorted(read_json(tmp_path / "folds.json")["folds"][0]["train"])


def _curves_store(df: pd.DataFrame, root: Path) -> Path:
    """A small curves store (what S3 reads): random curves and the 5 statistics."""
    path = root / "curves.pt"
    if path.exists():
        return path
    rng = np.random.default_rng(2)
    items = {
        sid: {
            "curves": torch.from_numpy(rng.normal(size=(12, 4)).astype("float32")),
            "stats": torch.from_numpy(rng.normal(size=5).astype("float32")),
        }
        for sid in df["segment_id"]
    }
    torch.save({"kind": "curves", "meta": {"n_features": 4, "n_stats": 5}, "items": items}, path)
    return path


def test_leak_checkpoints_of_another_fold_composition_are_not_resumed(tmp_path: Path) -> None:
    """The checkpoint folder is a per-fold cache: a fold number cut from new folds (whose validation
    music the old checkpoint may have trained on) must start afresh, not resume."""
    from torch import nn

    from pianoeval.training.fit import _same_run

    ckpt, net, config = tmp_path / "checkpoints", nn.Linear(4, 2), {"training": {"lr": 1e-3}}
    rows = {"train": ["A/p0", "A/p1"], "dev": ["G/p0"]}
    _same_run(ckpt, config, net, 1, rows)
    (ckpt / "last.ckpt").write_bytes(b"state")
    assert _same_run(ckpt, config, net, 1, {k: list(reversed(v)) for k, v in rows.items()})  # same rows: resume
    assert not _same_run(ckpt, config, net, 1, {"train": ["A/p0", "H/p0"], "dev": ["G/p0"]})
    assert not (ckpt / "last.ckpt").exists()
