"""Experiments decided on the folds' dev slices only (never the validation folds); docs/benchmarks.md.

    python scripts/dev_experiments.py centred RESULTS   # ridge/trees on statistics + within-segment centred copies
    python scripts/dev_experiments.py blend RESULTS s3   # an encoder averaged with the trees baseline

`centred` reads RESULTS/featurize/stats.pt, the manifest and the folds; `blend` reads the
predictions.csv of finished folds (folds where the encoder or the trees are missing are left out).
Both print mean pairwise accuracy and R² over the dev slices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _report(rows: dict[str, list[tuple[float, float]]]) -> None:
    for name, values in rows.items():
        pw, r2 = np.array(values).mean(axis=0)
        print(f"{name}: dev folds {len(values)}, pairwise {pw:.3f}, R² {r2:.3f}")


def centred(results: Path) -> None:
    """Statistics alone vs. statistics plus their deviation from the segment group's mean."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from pianoeval.core.io import read_json
    from pianoeval.data.manifest import read_manifest
    from pianoeval.metrics import MetricsSuite
    from pianoeval.training.data import load_feature_store, load_fold_data

    store = load_feature_store(results / "featurize" / "stats.pt")
    manifest = read_manifest(results / "prepare" / "manifest.parquet")
    folds = read_json(results / "folds" / "folds.json")
    suite = MetricsSuite()

    def centre(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
        out = x.copy()
        for g in np.unique(groups):
            out[groups == g] -= x[groups == g].mean(axis=0)
        return out

    rows: dict[str, list[tuple[float, float]]] = {}
    for spec in folds["folds"]:
        data = load_fold_data(store, manifest, folds, int(spec["fold"]))
        x = {s: np.stack([data.items[i]["stats"].numpy() for i in data.splits[s]]) for s in ("train", "dev")}
        g = {s: data.groups(s) for s in ("train", "dev")}
        y = {s: data.labels(s) for s in ("train", "dev")}
        inputs = {
            "raw": x,
            "raw+centred": {s: np.hstack([x[s], centre(x[s], g[s])]) for s in x},
        }
        for name, f in inputs.items():
            scaler = StandardScaler().fit(f["train"])
            for alpha in (10.0, 100.0, 1000.0):
                reg = Ridge(alpha=alpha).fit(scaler.transform(f["train"]), y["train"])
                m = suite.compute(np.clip(reg.predict(scaler.transform(f["dev"])), 0, 1), y["dev"], g["dev"])
                rows.setdefault(f"{name} ridge alpha {alpha:g}", []).append((m["pairwise_acc"], m["r2"]))
            mean = y["train"].mean(axis=0)
            trees = ExtraTreesRegressor(
                n_estimators=200, min_samples_leaf=3, max_features=0.5, n_jobs=1, random_state=0
            ).fit(f["train"], y["train"] - mean)
            m = suite.compute(np.clip(trees.predict(f["dev"]) + mean, 0, 1), y["dev"], g["dev"])
            rows.setdefault(f"{name} trees", []).append((m["pairwise_acc"], m["r2"]))
    _report(rows)


def blend(results: Path, models: list[str]) -> None:
    """Each encoder, the trees baseline, and their average, on the dev rows of predictions.csv."""
    import pandas as pd

    from pianoeval.core.constants import DIMENSIONS
    from pianoeval.metrics import MetricsSuite

    suite = MetricsSuite()
    pred_cols, label_cols = [f"pred_{d}" for d in DIMENSIONS], [f"label_{d}" for d in DIMENSIONS]
    rows: dict[str, list[tuple[float, float]]] = {}
    for fold_dir in sorted((results / "train" / "symbolic" / "baseline_trees").glob("fold_*")):
        paths = {m: results / "train" / "symbolic" / m / fold_dir.name / "predictions.csv" for m in models}
        if not all(p.is_file() for p in paths.values()):
            continue
        trees = pd.read_csv(fold_dir / "predictions.csv").set_index("segment_id")
        dev = trees[trees["split"] == "dev"]
        y, groups = dev[label_cols].to_numpy(), dev["group"].to_numpy()
        preds = {"baseline_trees": dev[pred_cols].to_numpy()}
        for m, path in paths.items():
            preds[m] = pd.read_csv(path).set_index("segment_id").loc[dev.index, pred_cols].to_numpy()
            preds[f"{m}+trees"] = 0.5 * (preds[m] + preds["baseline_trees"])
        for name, p in preds.items():
            m = suite.compute(p, y, groups)
            rows.setdefault(name, []).append((m["pairwise_acc"], m["r2"]))
    _report(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["centred", "blend"])
    parser.add_argument("results", type=Path)
    parser.add_argument("models", nargs="*", default=["s3"], help="blend: encoders to average with the trees")
    args = parser.parse_args()
    if args.experiment == "centred":
        centred(args.results)
    else:
        blend(args.results, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
