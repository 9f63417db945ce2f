"""Fusion networks (F1 cross-attention, F2 concat, F3 gating; score conditioning) and `run_fuse`.

`run_fuse` runs on synthetic track winners: per-fold embeddings files as the training step writes
them, where the symbolic track knows some dimensions and the audio track the others, so that a
fusion that reads both must beat either alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.constants import ALL_STAT_NAMES, DIMENSIONS, N_DIMS, SCORE_COLUMNS
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.data.demo import generate_demo_corpus
from pianoeval.data.manifest import label_matrix, write_manifest
from pianoeval.networks.fusion import FUSIONS, GatedFusion, build_fusion, n_score_stats
from pianoeval.steps.fuse import WinnerInputs, run_fuse
from pianoeval.training.fusion_data import build_fusion_data, score_statistics

HA, HS = 6, 5


def batch(n: int = 8, seed: int = 0, score: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {
        "z_audio": torch.randn(n, HA, generator=g),
        "scores_audio": torch.rand(n, N_DIMS, generator=g),
        "z_symbolic": torch.randn(n, HS, generator=g),
        "scores_symbolic": torch.rand(n, N_DIMS, generator=g),
    }
    if score:
        stats = torch.randn(n, n_score_stats(), generator=g) * 10
        stats[:, -1] = 1.0
        out["score_stats"] = stats
    return out


@pytest.mark.parametrize("name", ["f1", "f2", "f3", "f1_score", "f2_score", "f3_score"])
def test_fusions_embed_every_row(name: str) -> None:
    net = build_fusion(name, HA, HS, hidden=16).eval()
    b = batch(score=name.endswith("_score"))
    z = net(b)
    assert z.shape == (8, 16) and torch.isfinite(z).all()
    # Rows are independent at evaluation: one row alone gives the same embedding.
    one = {k: v[:1] for k, v in b.items()}
    torch.testing.assert_close(net(one), z[:1], rtol=1e-4, atol=1e-5)


def test_unknown_fusion_names_are_refused() -> None:
    from pianoeval.core.errors import ConfigError

    for name in ("f4", "f1_scores", "concat"):
        with pytest.raises(ConfigError, match="unknown fusion"):
            build_fusion(name, HA, HS)
    assert set(FUSIONS) == {"f1", "f2", "f3"}


def test_gates_are_per_dimension_in_unit_interval_and_mix_the_heads() -> None:
    net = GatedFusion(HA, HS, hidden=16).eval()
    b = batch()
    g = net.get_gates(b)
    assert g.shape == (8, N_DIMS) and (g >= 0).all() and (g <= 1).all()
    assert 0.05 < g.mean() < 0.2  # starts leaning on the symbolic track
    a, s = net.inputs(b)
    audio = net.audio_head(a, net.offset(b["scores_audio"]))
    expected = g * audio + (1 - g) * net.symbolic_head(s, net.offset(b["scores_symbolic"]))
    torch.testing.assert_close(net.predict_scores(b), expected)
    # Forcing the gates open gives the audio head alone; after init_bias it returns the audio scores.
    with torch.no_grad():
        net.gate[1].weight.zero_()
        net.gate[1].bias.fill_(50.0)
    torch.testing.assert_close(net.predict_scores(b), audio)
    net.init_bias(torch.full((N_DIMS,), 0.6))
    torch.testing.assert_close(net.predict_scores(b), b["scores_audio"].clamp(1e-4, 1 - 1e-4), rtol=1e-4, atol=1e-5)


def test_f3_saves_no_ranking_utility_and_keeps_its_seeded_initialisation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No loss trains the per-track heads' ranking utility: F3 has none, yet its weights are those of the
    layout before (heads that kept it, from the same seed), and a checkpoint that still holds it loads."""
    import pianoeval.networks.fusion as fusion
    from pianoeval.evaluation.inference import network_state

    torch.manual_seed(3)
    net = GatedFusion(HA, HS, hidden=16)
    assert not [k for k in net.state_dict() if "ranking" in k]
    with monkeypatch.context() as m:
        m.setattr(fusion, "_regression_only", lambda heads: heads)
        torch.manual_seed(3)
        before = GatedFusion(HA, HS, hidden=16)
    extra = {k for k in before.state_dict() if "ranking" in k}
    assert extra and set(before.state_dict()) - extra == set(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before.state_dict()[k]), k
    # A fusion fold checkpoint written before (the module's `net.encoder.*`) loads into today's network.
    holder = torch.nn.Module()
    holder.encoder = GatedFusion(HA, HS, hidden=16)
    saved = {f"net.encoder.{k}": v for k, v in before.state_dict().items()}
    holder.load_state_dict(network_state(saved, holder), strict=True)
    assert torch.equal(holder.encoder.gate[1].weight, net.gate[1].weight)


@pytest.mark.parametrize("name", ["f1", "f2", "f1_score", "f2_score"])
def test_fusion_starts_at_the_symbolic_winners_scores(name: str) -> None:
    """Wrapped for training (label mean known), a fusion's first prediction is the symbolic track's."""
    from pianoeval.training.module import PerformanceModule

    module = PerformanceModule(build_fusion(name, HA, HS, hidden=16), label_mean=[0.55] * N_DIMS).eval()
    b = batch(score=name.endswith("_score"))
    torch.testing.assert_close(module(b), b["scores_symbolic"].clamp(1e-4, 1 - 1e-4), rtol=1e-4, atol=1e-5)


def test_score_conditioning_reads_the_score_statistics() -> None:
    net = build_fusion("f2_score", HA, HS, hidden=16).eval()
    b = batch(score=True)
    z = net(b)
    changed = dict(b, score_stats=b["score_stats"] + 3.0)
    changed["score_stats"][:, -1] = 1.0
    assert not torch.allclose(net(changed), z)
    # Without an aligned score (flag 0) the score view sits at zero, whatever the other columns say.
    unaligned = dict(b, score_stats=b["score_stats"].clone())
    unaligned["score_stats"][:, -1] = 0.0
    other = dict(unaligned, score_stats=unaligned["score_stats"] * 2)
    other["score_stats"][:, -1] = 0.0
    torch.testing.assert_close(net(unaligned), net(other))
    # The plain variant ignores them.
    plain = build_fusion("f2", HA, HS, hidden=16).eval()
    torch.testing.assert_close(plain(b), plain(changed))


# -- run_fuse on synthetic track winners -------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, one_fold: Callable[..., dict]) -> dict:
    """results/ with both tracks' winner files, fold-0 embeddings and inner folds' out-of-fold rows, plus a
    statistics store; `symbolic` and `audio` are the fuse step's WinnerInputs."""
    root = tmp_path_factory.mktemp("fuse")
    df = generate_demo_corpus(root / "demo", n_pieces=6, n_performances=8, seconds=1.0, seed=5)
    manifest = root / "manifest.parquet"
    write_manifest(df, manifest)
    y = label_matrix(df)
    fold = one_fold(df, root / "folds.json", n_train=4, n_dev=1)["folds"][0]
    ids = df["segment_id"].tolist()
    split_of = {sid: name for name in ("train", "dev", "val") for sid in fold[name]}
    split = [split_of[sid] for sid in ids]
    rng = np.random.default_rng(0)
    half = N_DIMS // 2
    mean = y.mean(axis=0)
    # The symbolic track predicts the first half of the dimensions, the audio track the rest.
    s_scores, a_scores = np.tile(mean, (len(y), 1)), np.tile(mean, (len(y), 1))
    s_scores[:, :half], a_scores[:, half:] = y[:, :half], y[:, half:]
    inputs = {}
    for track, scores, dim in (("symbolic", s_scores, HS), ("audio", a_scores, HA)):
        model = "s3" if track == "symbolic" else "probe"
        folder = root / "results" / "train" / track / model / "fold_0"
        folder.mkdir(parents=True)
        z = np.hstack([scores[:, :dim] if track == "symbolic" else scores[:, -dim:], rng.normal(0, 0.01, (len(y), 0))])
        groups = sorted(df["segment_group"].unique())
        z, scores = torch.tensor(z, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32)
        learned = sorted(set(df.loc[df["segment_id"].isin(fold["train"] + fold["dev"]), "segment_group"]))
        torch.save(
            {"ids": ids, "split": split, "z": z, "scores": scores, "learned_from_groups": learned},
            folder / "embeddings.pt",
        )
        write_json({"track": track, "model": model}, root / "results" / "compare" / track / "winner.json")
        # Two inner folds over the training groups: each predicts its held-out half (the same
        # honest scores: this track knows its dimensions in and out of sample).
        train_groups = [g for g in groups if g in set(df.loc[df["segment_id"].isin(fold["train"]), "segment_group"])]
        oof = []
        for j, held in enumerate((train_groups[::2], train_groups[1::2])):
            rows = [i for i, sid in enumerate(ids) if split[i] == "train" and df["segment_group"].iloc[i] in held]
            record = {"track": track, "model": model, "fold": 0, "inner": j, "held_out_groups": held,
                      "labels_from_groups": [g for g in learned if g not in held]}  # fmt: skip
            oof.append(root / "results" / "train_inner" / track / model / "fold_0" / f"inner_{j}" / "oof.pt")
            oof[-1].parent.mkdir(parents=True)
            torch.save({"ids": [ids[i] for i in rows], "z": z[rows], "scores": scores[rows], **record,
                        "learned_from_groups": record["labels_from_groups"]}, oof[-1])  # fmt: skip
        winner = root / "results" / "compare" / track / "winner.json"
        inputs[track] = WinnerInputs(winner, folder / "embeddings.pt", oof)
    stats = torch.zeros(len(ids), len(ALL_STAT_NAMES))
    stats[:, SCORE_COLUMNS.stop - 1] = 1.0
    stats[:, SCORE_COLUMNS.start] = torch.tensor(y[:, 0])  # a score statistic that tracks a label
    torch.save(
        {"kind": "stats", "meta": {}, "items": {sid: {"stats": stats[i]} for i, sid in enumerate(ids)}},
        root / "stats.pt",
    )
    return {"root": root, "manifest": manifest, "folds": root / "folds.json", "stats": root / "stats.pt", **inputs}


def fuse(name: str, results: dict, out: Path, **kwargs: object) -> dict:
    config = validate_config(
        {
            "seed": 2,
            "fusion": {"hidden": 32},
            "training": {"max_epochs": 25, "batch_size": 8, "patience": 25, "lr": 3e-3},
        }
    )
    return run_fuse(
        name, config, 0, results["manifest"], results["folds"], results["symbolic"], results["audio"], out, **kwargs
    )


def track_r2(results: dict, track: str) -> float:
    from pianoeval.metrics import MetricsSuite

    emb = torch.load(
        results["root"]
        / "results"
        / "train"
        / track
        / ("s3" if track == "symbolic" else "probe")
        / "fold_0"
        / "embeddings.pt",
        weights_only=False,
    )
    df = pd.read_parquet(results["manifest"]).set_index("segment_id")
    val = [i for i, s in enumerate(emb["split"]) if s == "val"]
    ids = [emb["ids"][i] for i in val]
    y = label_matrix(df.loc[ids].reset_index())
    groups = df.loc[ids, "segment_group"].astype("category").cat.codes.to_numpy()
    return MetricsSuite().compute(emb["scores"][val].numpy(), y, groups)["r2"]


def test_run_fuse_beats_either_track_when_they_know_different_things(results: dict, tmp_path: Path) -> None:
    out = tmp_path / "f3"
    metrics = fuse("f3", results, out)
    assert metrics["symbolic_model"] == "s3" and metrics["audio_model"] == "probe"
    assert set(metrics["audio_gate_per_dimension"]) == set(DIMENSIONS)
    assert metrics["r2"] > max(track_r2(results, "symbolic"), track_r2(results, "audio")) + 0.05
    assert -1.0 <= metrics["error_correlation"] <= 1.0
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 48 and read_json(out / "model_spec.json")["model"] == "f3"


def test_score_conditioned_fuse_reads_the_statistics_store(results: dict, tmp_path: Path) -> None:
    out = tmp_path / "f2_score"
    with pytest.raises(InputError, match="pass --stats"):
        fuse("f2_score", results, out)
    assert not out.exists()  # refused before writing anything
    metrics = fuse("f2_score", results, out, stats_path=results["stats"])
    assert metrics["n_val"] == 8 and np.isfinite(metrics["r2"])
    data = build_fusion_data(
        torch.load(results["root"] / "results/train/audio/probe/fold_0/embeddings.pt", weights_only=False),
        torch.load(results["root"] / "results/train/symbolic/s3/fold_0/embeddings.pt", weights_only=False),
        pd.read_parquet(results["manifest"]),
        score_statistics(results["stats"]),
    )
    assert data.items[0]["score_stats"].shape == (n_score_stats(),)
    # A store without the score statistics is refused, naming the file.
    short = tmp_path / "short.pt"
    store = torch.load(results["stats"], weights_only=False)
    store["items"] = {k: {"stats": v["stats"][:18]} for k, v in store["items"].items()}
    torch.save(store, short)
    with pytest.raises(InputError, match="rerun its featurize rule"):
        fuse("f1_score", results, tmp_path / "f1_score", stats_path=short)
    assert not (tmp_path / "f1_score").exists()


def test_run_fuse_is_repeatable_and_a_score_fusion_learns_from_the_statistics(results: dict, tmp_path: Path) -> None:
    """Same seed, config and inputs: the same fusion, bit for bit. A score-conditioned fusion trained on
    other score statistics (the store's label-tracking column shuffled across segments) predicts
    otherwise, so run_fuse does feed the statistics through to the network."""
    runs = []
    for run in ("a", "b"):
        metrics = fuse("f2_score", results, tmp_path / run, stats_path=results["stats"])
        metrics.pop("wall_s")
        runs.append((metrics, (tmp_path / run / "predictions.csv").read_bytes()))
    assert runs[0] == runs[1]
    store = torch.load(results["stats"], weights_only=False)
    ids = sorted(store["items"])
    column = torch.stack([store["items"][sid]["stats"][SCORE_COLUMNS.start] for sid in ids])
    shuffled = column[torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))]
    for sid, value in zip(ids, shuffled, strict=True):
        store["items"][sid]["stats"] = store["items"][sid]["stats"].clone()
        store["items"][sid]["stats"][SCORE_COLUMNS.start] = value
    torch.save(store, tmp_path / "shuffled.pt")
    fuse("f2_score", results, tmp_path / "shuffled", stats_path=tmp_path / "shuffled.pt")
    assert (tmp_path / "shuffled" / "predictions.csv").read_bytes() != runs[0][1]
