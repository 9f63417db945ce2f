"""Print a Markdown table (mean ± std over folds) of every trained model under a results folder.

Usage: python scripts/summarize_folds.py [RESULTS_DIR] [--track symbolic|audio|fusion] [--folder DIR] [--json OUT.json]

It reads `RESULTS_DIR/train/<track>/<model>/fold_<k>/metrics.json` as written by `pianoeval train`
(for `--track fusion`, `RESULTS_DIR/fuse/<model>/fold_<k>/metrics.json` as `pianoeval fuse` writes
them, with the mean error correlation between the two tracks; `--folder` names another folder of
model folders),
so it also summarises a run that is still going (the `folds` column says how many are done), unlike
`results/compare/<track>/comparison.md`, which waits for every fold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def summarise(folder: Path) -> list[dict]:
    """One row per model folder of `folder`: mean/std of pairwise_acc and r2 over its finished folds,
    total wall time, and the mean error correlation when the metrics have one (fusion)."""
    rows = []
    for model_dir in sorted(folder.glob("*")):
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
        if all("error_correlation" in r for r in runs):
            rows[-1]["error_correlation"] = float(np.mean([r["error_correlation"] for r in runs]))
    return sorted(rows, key=lambda r: (-r["pairwise_acc"][0], -r["r2"][0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument("--track", default="symbolic", choices=["symbolic", "audio", "fusion"])
    parser.add_argument("--folder", help="folder of model folders (default: RESULTS/train/TRACK, RESULTS/fuse)")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    results = Path(args.results)
    default = results / "fuse" if args.track == "fusion" else results / "train" / args.track
    folder = Path(args.folder) if args.folder else default
    if not folder.is_dir():
        print(f"error: {folder}: no such folder", file=sys.stderr)
        return 1
    rows = summarise(folder)
    corr = any("error_correlation" in r for r in rows)
    print("| model | pairwise acc | R² | folds | wall (s, all folds) |" + (" error corr. |" if corr else ""))
    print("|---|---|---|---|---|" + ("---|" if corr else ""))
    for r in rows:
        pw, r2 = r["pairwise_acc"], r["r2"]
        mean_std = [f"{pw[0]:.3f} ± {pw[1]:.3f}", f"{r2[0]:.3f} ± {r2[1]:.3f}"]
        cells = [r["model"], *mean_std, r["folds"], f"{r['wall_s']:.0f}"]
        if corr:
            cells.append(f"{r['error_correlation']:.3f}" if "error_correlation" in r else "")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
