"""Compare training settings of one model on the folds' DEV slices: one results tree per setting.

Usage: python scripts/sweep_dev.py --model s3_deep --tree NAME=RESULTS_DIR[,RESULTS_DIR...] [--tree ...] --json OUT.json

For each tree it reads `RESULTS_DIR/train/symbolic/<model>/fold_<k>/metrics.json` and reports the dev
pairwise accuracy and R² of each fold's chosen epoch (`dev`), mean ± std over folds, and the one
number the fits select epochs by (`dev/selection` = pairwise + 0.5 × R², `training/module.py`), averaged
over folds. The setting with the highest mean selection is the dev choice; the validation figures are
written to the JSON but not printed, so that the choice is made on dev alone.

Several results trees of one setting (comma-separated: the same settings with other `seed`s) are averaged:
the selection is the mean over every tree's folds, a setting is ranked only when each tree has all its
folds, and the table shows each tree's own mean selection beside it (how far one seed's dev figure moves).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def fold_rows(results: Path, model: str) -> list[dict]:
    """Each finished fold's dev and val figures, best epoch, epochs run and wall time."""
    rows = []
    for path in sorted((results / "train" / "symbolic" / model).glob("fold_*/metrics.json")):
        m = json.loads(path.read_text())
        rows.append(
            {
                "fold": int(m["fold"]),
                "dev": [float(m["dev"]["pairwise_acc"]), float(m["dev"]["r2"])],
                "val": [float(m["pairwise_acc"]), float(m["r2"])],
                "best_epoch": m.get("best_epoch"),
                "epochs_run": m.get("epochs_run"),
                "wall_s": float(m.get("wall_s", 0.0)),
                "cpu_s": _cpu_seconds(results.parent / "benchmarks" / "train" / "symbolic" / model, m["fold"]),
                "n_parameters": m.get("n_parameters"),
            }
        )
    return rows


def _cpu_seconds(folder: Path, fold: int) -> float | None:
    """The train job's CPU time (user + system) from Snakemake's benchmark file, when there is one."""
    tsv = folder / f"fold_{fold}.tsv"
    if not tsv.exists():
        return None
    header, values = tsv.read_text().splitlines()[:2]
    return float(dict(zip(header.split("\t"), values.split("\t"), strict=True))["cpu_time"])


def summary(rows: list[dict], split: str) -> dict[str, list[float]]:
    """Mean and std over folds of `split`'s pairwise accuracy, R² and selection number."""
    pw = np.array([r[split][0] for r in rows])
    r2 = np.array([r[split][1] for r in rows])
    sel = pw + 0.5 * r2
    return {k: [float(v.mean()), float(v.std())] for k, v in (("pairwise_acc", pw), ("r2", r2), ("selection", sel))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tree", action="append", required=True, help="NAME=RESULTS_DIR")
    parser.add_argument("--folds", type=int, default=4, help="a setting is ranked only with this many folds")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    settings = {}
    for spec in args.tree:
        name, _, folders = spec.partition("=")
        per_tree = [fold_rows(Path(folder), args.model) for folder in folders.split(",")]
        rows = [r for tree in per_tree for r in tree]
        if rows:
            settings[name] = {
                "results": folders,
                "folds": rows,
                "dev": summary(rows, "dev"),
                "val": summary(rows, "val"),
                "per_tree_selection": [summary(t, "dev")["selection"][0] if t else None for t in per_tree],
                "complete": all(len(t) == args.folds for t in per_tree),
            }
    complete = {n: s for n, s in settings.items() if s["complete"]}
    choice = max(complete, key=lambda n: complete[n]["dev"]["selection"][0]) if complete else None
    columns = ["setting", "dev pairwise", "dev R²", "dev selection", "per tree", "folds", "best epochs"]
    columns += ["wall (s)", "CPU (s)", "params"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for name, s in sorted(settings.items(), key=lambda kv: -kv[1]["dev"]["selection"][0]):
        d = s["dev"]
        cells = [
            f"**{name}**" if name == choice else name,
            "{:.3f} ± {:.3f}".format(*d["pairwise_acc"]),
            "{:.3f} ± {:.3f}".format(*d["r2"]),
            "{:.3f}".format(d["selection"][0]),
            ", ".join("-" if v is None else f"{v:.3f}" for v in s["per_tree_selection"]),
            len(s["folds"]),
            ", ".join(str(r["best_epoch"]) for r in s["folds"]),
            f"{sum(r['wall_s'] for r in s['folds']):.0f}",
            f"{sum(r['cpu_s'] for r in s['folds']):.0f}" if all(r["cpu_s"] for r in s["folds"]) else "",
            s["folds"][0]["n_parameters"],
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    out = {
        "model": args.model,
        "choice_on_dev": choice,
        "rule": "max mean dev (pairwise + 0.5 R2), over the folds of every tree of a setting",
        "settings": settings,
    }
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"dev choice: {choice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
