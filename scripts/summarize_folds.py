"""Print a Markdown table (mean ± std over folds) of every trained model under a results folder.

Usage: python scripts/summarize_folds.py [RESULTS_DIR] [--track symbolic] [--json OUT.json]

It reads `RESULTS_DIR/train/<track>/<model>/fold_<k>/metrics.json` as written by `pianoeval train`,
so it also summarises a run that is still going (the `folds` column says how many are done), unlike
`results/compare/<track>/comparison.md`, which waits for every fold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def summarise(results: Path, track: str) -> list[dict]:
    """One row per model: mean/std of pairwise_acc and r2 over its finished folds, total wall time."""
    rows = []
    for model_dir in sorted((results / "train" / track).glob("*")):
        runs = [json.loads(p.read_text()) for p in sorted(model_dir.glob("fold_*/metrics.json"))]
        if not runs:
            continue
        pw = np.array([r["pairwise_acc"] for r in runs], dtype=float)
        r2 = np.array([r["r2"] for r in runs], dtype=float)
        rows.append(
            {
                "model": model_dir.name,
                "folds": len(runs),
                "pairwise_acc": [float(pw.mean()), float(pw.std())],
                "r2": [float(r2.mean()), float(r2.std())],
                "per_fold": [[float(a), float(b)] for a, b in zip(pw, r2, strict=True)],
                "wall_s": float(sum(r.get("wall_s", 0.0) for r in runs)),
            }
        )
    return sorted(rows, key=lambda r: (-r["pairwise_acc"][0], -r["r2"][0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument("--track", default="symbolic")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    results = Path(args.results)
    if not (results / "train" / args.track).is_dir():
        print(f"error: {results / 'train' / args.track}: no such folder", file=sys.stderr)
        return 1
    rows = summarise(results, args.track)
    print("| model | pairwise acc | R² | folds | wall (s, all folds) |")
    print("|---|---|---|---|---|")
    for r in rows:
        pw, r2 = r["pairwise_acc"], r["r2"]
        mean_std = [f"{pw[0]:.3f} ± {pw[1]:.3f}", f"{r2[0]:.3f} ± {r2[1]:.3f}"]
        cells = [r["model"], *mean_std, r["folds"], f"{r['wall_s']:.0f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
