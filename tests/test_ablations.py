"""The ablation rows: `baseline_blend` is exactly the wide part a wide & deep encoder starts from, and
`<encoder>_deep` is the encoder without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.constants import N_DIMS
from pianoeval.core.settings import FitSettings
from pianoeval.networks.side_input import WithStatistics
from pianoeval.training.data import FoldData

CONFIG = validate_config({"symbolic": {"hidden": 16, "layers": 1, "heads": 2}, "training": {"wide_part": "blend"}})
SETTINGS = FitSettings.from_config(CONFIG)
META = {"n_features": 4, "n_stats": 5}


def _data(seed: int = 0) -> FoldData:
    """Synthetic curves and statistics of 10 groups x 6 performances; labels a non-linear function of
    the statistics (so that the dev-chosen blend uses both ridge and trees)."""
    rng = np.random.default_rng(seed)
    items, splits = [], {"train": [], "dev": [], "val": []}
    for g in range(10):
        split = "train" if g < 6 else "dev" if g < 8 else "val"
        for k in range(6):
            stats = rng.normal(size=5).astype("float32")
            y = 1 / (1 + np.exp(-(stats[0] + np.sin(2 * stats[1]) * np.ones(N_DIMS) + 0.1 * rng.normal(size=N_DIMS))))
            items.append(
                {
                    "curves": torch.from_numpy(rng.normal(size=(12, 4)).astype("float32")),
                    "stats": torch.from_numpy(stats),
                    "labels": torch.tensor(y, dtype=torch.float32),
                    "group": torch.tensor(g),
                    "segment_id": f"g{g}/p{k}",
                    "split": split,
                }
            )
            splits[split].append(len(items) - 1)
    return FoldData(items, splits, dict(META), [])


def test_baseline_blend_is_exactly_the_start_of_a_wide_and_deep_encoder() -> None:
    from pianoeval.training.fit import init_wide_part, wide_part_baseline
    from pianoeval.training.predict import predict_network
    from pianoeval.training.registry import build_module, build_network

    data = _data()
    blend, info = wide_part_baseline("symbolic", data, SETTINGS)
    assert info["wide"]["wide_part"] == "blend" and 0.0 <= info["wide"]["ridge_share"] <= 1.0
    net = build_network("s3", META, SETTINGS)  # the wide & deep S3, as training builds it
    assert isinstance(net, WithStatistics)
    module = build_module("s3", net, SETTINGS, label_mean=data.labels("train").mean(axis=0).tolist())
    assert init_wide_part(module, data, "blend") == info["wide"]  # the same dev-chosen blend
    start, _ = predict_network(module, data, 8)
    alone, _ = predict_network(blend, data, 8)
    for split in ("train", "dev", "val"):
        np.testing.assert_allclose(alone[split], start[split], rtol=0, atol=1e-6)
    # And it is not a constant: the wide part alone predicts something.
    assert alone["val"].std(axis=0).mean() > 0.01


def test_deep_variants_are_the_bare_encoders_on_the_same_features() -> None:
    from pianoeval.training.registry import BASELINES, FEATURE_KIND, SYMBOLIC_MODELS, build_network, encoder_of

    for encoder in ("s1", "s2", "s3"):
        deep = f"{encoder}_deep"
        assert deep in SYMBOLIC_MODELS and encoder_of(deep) == encoder
        assert FEATURE_KIND[deep] == FEATURE_KIND[encoder]
    net = build_network("s3_deep", META, SETTINGS)
    assert not isinstance(net, WithStatistics) and type(net) is type(build_network("s3", META, SETTINGS).base)
    assert "baseline_blend" in BASELINES


def write_fold_inputs(data: FoldData, folder: Path) -> tuple[Path, Path, Path]:
    """`data` as the train step reads it: (manifest, folds with one fold, curves store) in `folder`."""
    from pianoeval.core.io import write_json
    from pianoeval.data.manifest import make_rows, write_manifest

    rows = [
        {
            "segment_id": it["segment_id"],
            "piece_id": it["segment_id"][:2],
            "segment_group": it["segment_id"][:2],
            "performer": it["segment_id"][3:],
            "tier": "T1",
            "source": "demo",
            "labels": it["labels"].numpy(),
        }
        for it in data.items
    ]
    write_manifest(make_rows(rows), folder / "manifest.parquet")
    folds = {
        "protocol": "segment",
        "k": 1,
        "seed": 0,
        "folds": [{"fold": 0, **{s: [data.items[i]["segment_id"] for i in idx] for s, idx in data.splits.items()}}],
    }
    write_json(folds, folder / "folds.json")
    store = {
        "kind": "curves",
        "meta": META,
        "items": {it["segment_id"]: {"curves": it["curves"], "stats": it["stats"]} for it in data.items},
    }
    torch.save(store, folder / "curves.pt")
    return folder / "manifest.parquet", folder / "folds.json", folder / "curves.pt"


def test_train_step_runs_both_ablations(tmp_path: Path) -> None:
    """baseline_blend and s3_deep through `run_train` on a synthetic fold: outputs and records."""
    from pianoeval.steps.train import run_train

    data = _data(1)
    config = validate_config({**CONFIG, "training": {**CONFIG["training"], "max_epochs": 2, "batch_size": 8}})
    args = (config, 0, *write_fold_inputs(data, tmp_path))
    blend = run_train("symbolic", "baseline_blend", *args, tmp_path / "blend")
    assert blend["wide"]["learned_from_groups"] == [f"g{g}" for g in range(8)]
    assert blend["n_parameters"] > 0 and 0.0 <= blend["pairwise_acc"] <= 1.0
    deep = run_train("symbolic", "s3_deep", *args, tmp_path / "deep")
    assert "wide" not in deep and deep["model"] == "s3_deep"
    assert torch.load(tmp_path / "deep" / "embeddings.pt", weights_only=False)["z"].shape[0] == len(data.items)


@pytest.mark.parametrize("model", ["baseline_blend"])
def test_a_wide_part_without_statistics_is_a_config_error(model: str) -> None:
    from pianoeval.core.errors import ConfigError
    from pianoeval.training.registry import build_network, build_wide_part

    with pytest.raises(ConfigError, match="needs statistics"):
        build_wide_part("symbolic", {"n_features": 4}, SETTINGS)
    with pytest.raises(ConfigError, match="build_wide_part"):
        build_network(model, META, SETTINGS)
