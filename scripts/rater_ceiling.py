"""How well can anything predict PercePiano's labels? The raters' own agreement, as pairwise accuracy and R².

Usage: python scripts/rater_ceiling.py [--percepiano ../shared/data/percepiano] [--splits 50] [--out ceiling.json]

PercePiano's label is the mean of 5-19 ratings per segment, and the raters disagree (per-segment rater
std about 0.17, larger than the labels' own spread). Two references for the scores models reach
against such labels, with the project's own metrics (within-segment pairwise accuracy with ambiguous
pairs excluded, R² averaged over the 19 dimensions):

- **split-half**: the raters of each segment are split at random into two halves; the mean of one half
  "predicts" the mean of the other. A lower bound of the ceiling (each half has half the raters).
- **reliability of the full label** (Spearman-Brown from the halves' correlation, per dimension): the
  share of the label's variance that is not rater noise, i.e. the R² of a perfect model of the raters'
  true mean, measured against these labels. An estimate of the R² ceiling.

The raw ratings (`labels/total_2rounds.csv`) are rebuilt into the canonical labels first; segments
whose rebuilt mean differs from their label (the Score/Score2 renaming) are left out and counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from pianoeval.metrics import pairwise_accuracy, r2_scores


def load_ratings(root: Path) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """({segment id: per-rater rating vectors [19] on the /7 scale, NaN = missing}, canonical labels)."""
    names = list(csv.DictReader((root / "labels" / "label_names.csv").open()))
    columns = [row["raw_csv_column"] for row in names]
    labels = json.loads((root / "labels" / "label_2round_mean_reg_19_with0_rm_highstd0.json").read_text())
    canonical = {k: np.array(v[:19], dtype=float) for k, v in labels.items()}
    ratings: dict[str, list[np.ndarray]] = {}
    with (root / "labels" / "total_2rounds.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            values = np.array([float(row[c]) if row[c] not in ("", None) else np.nan for c in columns])
            if np.nanmax(values, initial=0) > 7:
                continue  # the label script drops a rater row with any value above 7
            values[values == 0] = np.nan
            sid = row["filename"].strip().removesuffix(".wav")
            if sid in canonical:
                ratings.setdefault(sid, []).append(values / 7.0)
    return ratings, canonical


def _mean_or(ratings: np.ndarray, fill: float) -> np.ndarray:
    """Mean over raters [R, 19] ignoring NaN, `fill` where a dimension has no rating in this half."""
    counts = (~np.isnan(ratings)).sum(axis=0)
    sums = np.nansum(ratings, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--percepiano", type=Path, default=Path("../shared/data/percepiano"))
    parser.add_argument("--splits", type=int, default=50, help="random rater splits (and noise draws)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    ratings, canonical = load_ratings(args.percepiano)
    group_of = {}
    with (args.percepiano / "index.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            group_of[row["id"]] = row["segment_group"]
    candidates = sorted(s for s in ratings if s in group_of and len(ratings[s]) >= 2)
    # Keep the segments whose ratings rebuild their canonical label: the label script renames some
    # Score rows to Score2 (percepiano README), whose raw rows here would mix two renditions.
    ids = [s for s in candidates if np.allclose(np.nanmean(np.stack(ratings[s]), axis=0), canonical[s], atol=1e-4)]
    groups = np.unique([group_of[s] for s in ids], return_inverse=True)[1]
    mats = [np.stack(ratings[s]) for s in ids]

    rng = np.random.default_rng(args.seed)
    half_pw, half_r2, half_r = [], [], []
    for _ in range(args.splits):
        a, b = [], []
        for m in mats:
            order = rng.permutation(len(m))
            cut = len(m) // 2
            a.append(_mean_or(m[order[:cut]], 0.5))
            b.append(_mean_or(m[order[cut:]], 0.5))
        a, b = np.stack(a), np.stack(b)
        half_pw.append(pairwise_accuracy(a, b, groups)["overall"])
        half_r2.append(r2_scores(a, b)["mean"])

        r = [np.corrcoef(a[:, d], b[:, d])[0, 1] for d in range(a.shape[1])]
        half_r.append(r)
    # Spearman-Brown: the reliability of the full mean from the halves' correlation, per dimension.
    r_half = np.mean(half_r, axis=0)
    reliability = 2 * r_half / (1 + r_half)

    result = {
        "n_segments": len(ids),
        "n_ratings_median": float(np.median([len(m) for m in mats])),
        "n_not_rebuilt": len(candidates) - len(ids),
        "split_half": {
            "pairwise_acc": [float(np.mean(half_pw)), float(np.std(half_pw))],
            "r2": [float(np.mean(half_r2)), float(np.std(half_r2))],
        },
        "full_mean_reliability": {
            "mean": float(reliability.mean()),
            "per_dimension": [float(x) for x in reliability],
        },
        "splits": args.splits,
        "seed": args.seed,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
