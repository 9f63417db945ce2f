"""Per-dimension validation figures of fold models, side by side: mean over folds of each fold's figure.

Usage: python scripts/per_dimension.py NAME=MODEL_DIR [NAME=MODEL_DIR ...] [--json OUT.json]

MODEL_DIR is a model's folder of folds (e.g. `results/train/symbolic/s3`); it reads each
`fold_<k>/metrics.json` (`per_dimension`: pairwise accuracy and R² on the fold's validation rows, as
`pianoeval train` writes them) and prints a Markdown table with one row per PercePiano dimension.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def per_dimension(model_dir: Path) -> dict[str, dict[str, float]]:
    """{dimension: {pairwise_acc, r2}}: the mean over the folds of `model_dir` of each fold's figure."""
    files = sorted(model_dir.glob("fold_*/metrics.json"))
    if not files:
        sys.exit(f"error: {model_dir}: no fold_*/metrics.json")
    folds = [json.loads(f.read_text())["per_dimension"] for f in files]
    return {
        dim: {metric: float(np.mean([fold[dim][metric] for fold in folds])) for metric in ("pairwise_acc", "r2")}
        for dim in folds[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    table = {name: per_dimension(Path(path)) for name, _, path in (m.partition("=") for m in args.models)}
    names = list(table)
    print("| dimension | " + " | ".join(f"{n}: pairwise / R²" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for dim in table[names[0]]:
        cells = [f"{table[n][dim]['pairwise_acc']:.3f} / {table[n][dim]['r2']:.3f}" for n in names]
        print(f"| {dim} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
