"""Which hand-made statistics a trained encoder's embedding carries: a linear probe per statistic.

Usage: python scripts/probe_statistics.py --model s3_deep --tree NAME=RESULTS_DIR [--tree ...] --json OUT.json

For each tree and fold it reads the fold model's embeddings (`train/symbolic/<model>/fold_<k>/embeddings.pt`:
`z` per performance) and the hand-made statistics of the same performances (`featurize/stats.pt`), fits
ridge from `z` to each statistic on the fold's training rows, chooses the ridge strength on its dev rows
and reports R² on its validation rows, averaged over the folds. A statistic the embedding cannot predict
is information the deep part does not keep (the wide part adds it back in a wide & deep model). Nothing
is chosen on validation: each statistic's strength is chosen on dev.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ALPHAS = np.logspace(-3, 3, 13)


def ridge_r2(z: np.ndarray, y: np.ndarray, split: np.ndarray) -> float | None:
    """Validation R² of ridge `z -> y` fitted on `train`, strength chosen on `dev`; None when `y` does not
    vary on train or val (nothing to predict)."""
    train, dev, val = (split == s for s in ("train", "dev", "val"))
    if y[train].std() == 0 or y[val].std() == 0:
        return None
    mu, sd = z[train].mean(0), z[train].std(0) + 1e-8
    x = (z - mu) / sd
    xt, yt = x[train], y[train] - y[train].mean()

    def fit(alpha: float) -> np.ndarray:
        w = np.linalg.solve(xt.T @ xt + alpha * np.eye(x.shape[1]), xt.T @ yt)
        return x @ w + y[train].mean()

    def r2(pred: np.ndarray, rows: np.ndarray) -> float:
        return float(1 - ((y[rows] - pred[rows]) ** 2).sum() / ((y[rows] - y[rows].mean()) ** 2).sum())

    pick = dev if dev.any() else train
    best = max(ALPHAS, key=lambda a: r2(fit(a), pick))
    return r2(fit(best), val)


def probe_tree(results: Path, model: str) -> dict[str, list[float | None]]:
    """{statistic: [validation R² per fold]} for `model` in one results tree."""
    import torch

    store = torch.load(results / "featurize" / "stats.pt", weights_only=False)
    names = list(store["meta"]["stat_names"])
    out: dict[str, list[float | None]] = {n: [] for n in names}
    folds = sorted((results / "train" / "symbolic" / model).glob("fold_*/embeddings.pt"))
    if not folds:
        sys.exit(f"error: {results}: no train/symbolic/{model}/fold_*/embeddings.pt")
    for path in folds:
        emb = torch.load(path, weights_only=False)
        ids = [i for i in emb["ids"] if i in store["items"]]
        keep = np.array([i in store["items"] for i in emb["ids"]])
        z = emb["z"].double().numpy()[keep]
        split = np.asarray(emb["split"])[keep]
        stats = np.stack([store["items"][i]["stats"].double().numpy() for i in ids])
        for j, name in enumerate(names):
            out[name].append(ridge_r2(z, stats[:, j], split))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tree", action="append", required=True, help="NAME=RESULTS_DIR")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    table: dict[str, dict[str, float | None]] = {}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        per_fold = probe_tree(Path(path), args.model)
        table[name] = {
            stat: (float(np.mean(vals)) if vals and all(v is not None for v in vals) else None)
            for stat, vals in per_fold.items()
        }
        print(f"{name}: {len(next(iter(per_fold.values())))} folds", file=sys.stderr)
    names = list(next(iter(table.values())))
    trees = list(table)
    print("| statistic | " + " | ".join(trees) + " |")
    print("|---|" + "---|" * len(trees))
    for stat in names:
        cells = ["n/a" if table[t][stat] is None else f"{table[t][stat]:.3f}" for t in trees]
        print(f"| {stat} | " + " | ".join(cells) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "val_r2": table}, indent=2))


if __name__ == "__main__":
    main()
