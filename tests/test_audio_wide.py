"""The audio track's pooled statistics: baselines on cached frames and the wide & deep probe.

A synthetic frame store whose frames carry the labels (plus noise) stands in for a backbone that
hears the performance: the ridge baseline must find them, and the probe must start from that fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.io import read_json
from pianoeval.data.demo import generate_demo_corpus
from pianoeval.data.manifest import MANIFEST_COLUMNS, label_matrix, write_manifest
from pianoeval.networks.side_input import WithStatistics, pooled_statistics
from pianoeval.steps.train import run_train
from pianoeval.training.checkpoints import load_trained_module
from pianoeval.training.data import load_feature_store, load_fold_data

DIM = 24  # >= 19: the projection of the labels is invertible


def test_pooled_statistics_are_mean_and_std_over_frames() -> None:
    frames = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    torch.testing.assert_close(pooled_statistics(frames), torch.tensor([3.0, 2.0, (8 / 3) ** 0.5, 0.0]))
    with pytest.raises(ValueError, match="F > 0"):
        pooled_statistics(torch.zeros(0, 2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, one_fold: Callable[..., dict]) -> dict[str, Path]:
    """8 segment groups x 6 performances; frames = a fixed projection of the labels + noise."""
    root = tmp_path_factory.mktemp("audio_wide")
    df = generate_demo_corpus(root / "demo", n_pieces=8, n_performances=6, seconds=1.0, seed=11)
    df["audio_path"] = None
    labels = label_matrix(df)
    manifest = root / "manifest.parquet"
    write_manifest(df[list(MANIFEST_COLUMNS)], manifest)
    one_fold(df, root / "folds.json", n_train=5, n_dev=1)
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(len(DIMENSIONS), DIM, generator=gen)
    items = {}
    for i, sid in enumerate(df["segment_id"]):
        centred = torch.tensor(labels[i] - labels.mean(axis=0), dtype=torch.float32)
        n_frames = 5 + i % 4
        frames = (centred @ proj) * 5.0 + 0.3 * torch.randn(n_frames, DIM, generator=gen)
        items[sid] = {"audio_emb": frames}
    store = {"kind": "audio", "meta": {"backbone": "logmel", "dim": DIM, "frame_rate": 5.0}, "items": items}
    torch.save(store, root / "logmel.pt")
    return {"manifest": manifest, "folds": root / "folds.json", "features": root / "logmel.pt"}


def config(**audio: Any) -> dict[str, Any]:
    """A validated config: the probe on cached logmel-like frames, 2 epochs."""
    base = {"models": ["probe"], "backbone": "logmel", "hidden": 16}
    base.update(audio)
    return validate_config(
        {"seed": 1, "audio": base, "training": {"max_epochs": 2, "batch_size": 8, "patience": 5, "lr": 1e-3}}
    )


def train(model: str, corpus: dict[str, Path], out: Path, **audio: Any) -> dict[str, Any]:
    cfg = config(**audio)
    return run_train("audio", model, cfg, 0, corpus["manifest"], corpus["folds"], corpus["features"], out)


def test_fold_data_carries_pooled_statistics(corpus: dict[str, Path]) -> None:
    data = load_fold_data(
        load_feature_store(corpus["features"]),
        pd.read_parquet(corpus["manifest"]),
        read_json(corpus["folds"]),
        0,
    )
    assert data.meta["n_stats"] == 2 * DIM
    item = data.items[0]
    torch.testing.assert_close(item["stats"], pooled_statistics(item["audio_emb"]))


def test_audio_baselines_read_the_pooled_statistics(corpus: dict[str, Path], tmp_path: Path) -> None:
    ridge = train("baseline_ridge", corpus, tmp_path / "ridge")
    mean = train("baseline_mean", corpus, tmp_path / "mean")
    # The frames hold the labels: a linear probe on their means recovers them; the mean cannot.
    assert ridge["r2"] > 0.6 and ridge["pairwise_acc"] > 0.8
    assert mean["r2"] <= 0.0
    assert (tmp_path / "ridge" / "predictions.csv").is_file()


def test_baseline_job_does_not_import_lightning(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A baseline's training job, in a fresh process, never imports Lightning (seconds of a job's start)."""
    import subprocess
    import sys

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config()))
    args = [str(p) for p in (cfg, corpus["manifest"], corpus["folds"], corpus["features"], tmp_path / "ridge")]
    code = (
        "import json, sys; from pathlib import Path; from pianoeval.steps.train import run_train; "
        "c, man, folds, feats, out = sys.argv[1:]; "
        "m = run_train('audio', 'baseline_ridge', json.loads(Path(c).read_text()), 0, Path(man), Path(folds), "
        "Path(feats), Path(out)); "
        "print(sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules), m['r2'] > 0.6)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[] True"


def test_seeding_matches_lightning() -> None:
    """`core.seed.seed_everything` leaves every global generator and variable as Lightning's does."""
    import os
    import random

    import lightning as L

    from pianoeval.core.seed import seed_everything

    draws = []
    for seeder in (lambda: L.seed_everything(7, workers=True, verbose=False), lambda: seed_everything(7)):
        os.environ.pop("PL_SEED_WORKERS", None)
        seeder()
        env = (os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"])
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1)), env))
    assert draws[0] == draws[1]


def test_probe_is_wide_and_deep_from_the_ridge_fit(corpus: dict[str, Path], tmp_path: Path) -> None:
    ridge = train("baseline_ridge", corpus, tmp_path / "ridge")
    out = tmp_path / "probe"
    probe = train("probe", corpus, out)
    module = load_trained_module(out)
    assert isinstance(module.encoder, WithStatistics)
    assert read_json(out / "model_spec.json")["meta"]["n_stats"] == 2 * DIM
    # Starts at the ridge fit and trains 2 epochs from there: close to it, far above the mean.
    assert probe["r2"] > ridge["r2"] - 0.15 and probe["r2"] > 0.5
    plain = train("probe", corpus, tmp_path / "plain", stats_side_input=False)
    assert not isinstance(load_trained_module(tmp_path / "plain").encoder, WithStatistics)
    assert probe["r2"] > plain["r2"]
    # The saved predictions are what the reloaded network gives on the same statistics.
    from pianoeval.data.datasets import multi_task_collate_fn

    data = load_fold_data(
        load_feature_store(corpus["features"]), pd.read_parquet(corpus["manifest"]), read_json(corpus["folds"]), 0
    )
    with torch.no_grad():
        scores = module(multi_task_collate_fn(data.subset("val"))).numpy()
    pred = pd.read_csv(out / "predictions.csv")
    val = pred[pred["split"] == "val"][[f"pred_{d}" for d in DIMENSIONS]].to_numpy()
    np.testing.assert_allclose(scores, val, atol=1e-5)
