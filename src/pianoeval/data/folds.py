"""Group-disjoint cross-validation folds (by musical segment or by performer) and their leak check.

Layout (docs/architecture.md): `{"protocol", "k", "seed", "dev_fraction", "folds": [{"fold", "train",
"dev", "val"}, ...]}`. `val` is the held-out fold; `dev` is a slice of the training part, disjoint
from the rest of it by `segment_group`, used for early stopping so nothing is tuned on `val`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd

from pianoeval.core.constants import DEFAULT_SEED
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.data.manifest import labelled_mask

PROTOCOLS: tuple[str, ...] = ("segment", "performer")
# Deadpan renditions are one "performer" whatever the variant: no fold trains on one and tests the other.
_SCORE_PERFORMERS = frozenset({"Score", "Score2"})
_MAX_LISTED = 5


class FoldLeakError(InputError):
    """A fold puts the same musical segment (or performer) on both sides of a split."""


def performer_group(source: str, piece_id: str, performer: str) -> str:
    """The identity a performer protocol groups by: `score` for Score/Score2, else `<source>:<person>`."""
    if performer in _SCORE_PERFORMERS:
        return "score"
    if source == "percepiano":
        from pianoeval.data.percepiano import performer_fold_key

        # PercePiano numbers Beethoven pianists differently; the repo's key maps them to one person id.
        return f"percepiano:{performer_fold_key(piece_id, performer)}"
    return f"{source}:{performer}"


def fold_groups(df: pd.DataFrame, protocol: str) -> pd.Series:
    """The group key of every row of `df` under `protocol` (index aligned with df)."""
    if protocol == "segment":
        return df["segment_group"].astype(str)
    if protocol == "performer":
        keys = [performer_group(s, p, q) for s, p, q in zip(df["source"], df["piece_id"], df["performer"], strict=True)]
        return pd.Series(keys, index=df.index)
    raise InputError(f"unknown fold protocol {protocol!r}; use one of {list(PROTOCOLS)}")


def make_folds(
    df: pd.DataFrame,
    k: int,
    protocol: str = "segment",
    seed: int = DEFAULT_SEED,
    dev_fraction: float = 0.15,
) -> dict[str, Any]:
    """Split the labelled rows of manifest `df` into k group-disjoint folds, each with train/dev/val ids."""
    if not 0.0 <= dev_fraction < 1.0:
        raise InputError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    data = df[labelled_mask(df)]
    groups = fold_groups(data, protocol)
    sizes = groups.value_counts()
    if k < 2 or k > len(sizes):
        raise InputError(f"cannot make k={k} folds from {len(sizes)} {protocol} group(s) of labelled segments")
    fold_of = assign_groups({str(g): int(n) for g, n in sizes.items()}, k, seed)
    fold_index = groups.map(fold_of)
    out = []
    for f in range(k):
        val = sorted(data["segment_id"][fold_index == f])
        train_part = data[fold_index != f]
        dev_groups = _pick_dev_groups(train_part["segment_group"], dev_fraction, random.Random(seed * 1000 + f))
        is_dev = train_part["segment_group"].isin(dev_groups)
        out.append(
            {
                "fold": f,
                "train": sorted(train_part["segment_id"][~is_dev]),
                "dev": sorted(train_part["segment_id"][is_dev]),
                "val": val,
            }
        )
    return {"protocol": protocol, "k": k, "seed": seed, "dev_fraction": dev_fraction, "folds": out}


def assign_groups(sizes: dict[str, int], k: int, seed: int) -> dict[str, int]:
    """{group: part 0..k-1} for groups of `sizes` rows: seeded, balanced by rows (make_folds, and the
    inner folds of stacking)."""
    rng = random.Random(seed)
    order = sorted(sizes)
    rng.shuffle(order)
    # Largest groups first (a stable sort keeps the seeded order among equal sizes), each to the
    # currently smallest fold: balances fold sizes even with one very large merged group.
    order.sort(key=lambda g: -sizes[g])
    load = [0] * k
    part: dict[str, int] = {}
    for g in order:
        f = min(range(k), key=lambda i: (load[i], i))
        part[g] = f
        load[f] += sizes[g]
    return part


def check_folds(folds: dict[str, Any], df: pd.DataFrame, path: str | Path | None = None) -> None:
    """Raise InputError (FoldLeakError for leaks) if `folds` is malformed or leaks groups across splits."""
    _check_layout(folds, path)
    protocol = folds["protocol"]
    by_id = df.set_index("segment_id", drop=False)
    labelled = set(df["segment_id"][labelled_mask(df)])
    seen_val: dict[str, int] = {}
    key = by_id["segment_group"] if protocol == "segment" else fold_groups(by_id, protocol)
    for spec in folds["folds"]:
        f = spec["fold"]
        ids = [*spec["train"], *spec["dev"], *spec["val"]]
        unknown = [i for i in dict.fromkeys(ids) if i not in by_id.index]
        if unknown:
            raise InputError(f"fold {f}: id(s) not in the manifest: {_listed(unknown)}", path)
        twice = [i for i, n in pd.Series(ids).value_counts().items() if n > 1]
        if twice:
            raise InputError(f"fold {f}: id(s) listed more than once: {_listed(sorted(twice))}", path)
        unlabelled = [i for i in ids if i not in labelled]
        if unlabelled:
            raise InputError(f"fold {f}: unlabelled segment(s) in the folds: {_listed(unlabelled)}", path)
        if not spec["val"]:
            raise InputError(f"fold {f}: val is empty", path)
        for i in spec["val"]:
            if i in seen_val:
                raise InputError(f"id {i} is in val of folds {seen_val[i]} and {f}", path)
            seen_val[i] = f

        # The protocol's key (segment group or performer) must not cross val; dev and train must
        # not share a segment group under either protocol, or early stopping sees training music.
        train, dev, val = (set(key.loc[spec[s]]) for s in ("train", "dev", "val"))
        leak = val & (train | dev)
        if leak:
            what = "segment_group" if protocol == "segment" else "performer"
            raise FoldLeakError(f"fold {f}: {what}(s) in both val and train/dev: {_listed(sorted(leak))}", path)
        dev_leak = set(by_id["segment_group"].loc[spec["dev"]]) & set(by_id["segment_group"].loc[spec["train"]])
        if dev_leak:
            raise FoldLeakError(f"fold {f}: segment_group(s) in both dev and train: {_listed(sorted(dev_leak))}", path)


def write_folds(folds: dict[str, Any], path: str | Path) -> Path:
    """Write folds as JSON atomically; return the path."""
    _check_layout(folds, path)
    return write_json(folds, path)


def read_folds(path: str | Path) -> dict[str, Any]:
    """Read a folds JSON, checking its layout; InputError naming the file if it is invalid."""
    folds = read_json(path)
    _check_layout(folds, path)
    return folds


def _pick_dev_groups(segment_groups: pd.Series, fraction: float, rng: random.Random) -> set[str]:
    """Seeded pick of whole segment groups holding about `fraction` of the rows, never all of them."""
    sizes = segment_groups.value_counts()
    target = fraction * len(segment_groups)
    if target <= 0 or len(sizes) < 2:
        return set()
    order = sorted(sizes.index)
    rng.shuffle(order)
    picked: set[str] = set()
    n = 0
    for g in order:
        if n >= target:
            break
        # Skip groups that would overshoot: one big merged group must not swallow the training set.
        if n + int(sizes[g]) <= target * 1.25 and len(picked) < len(sizes) - 1:
            picked.add(g)
            n += int(sizes[g])
    if not picked:  # every group exceeds the target: take the smallest
        picked.add(min(order, key=lambda g: (int(sizes[g]), g)))
    return picked


def _check_layout(folds: Any, path: str | Path | None) -> None:
    """Raise InputError unless `folds` has the documented keys and k fold entries 0..k-1."""
    if not isinstance(folds, dict) or not {"protocol", "k", "folds"} <= set(folds):
        raise InputError("folds must be an object with 'protocol', 'k' and 'folds'", path)
    if folds["protocol"] not in PROTOCOLS:
        raise InputError(f"unknown fold protocol {folds['protocol']!r}", path)
    specs = folds["folds"]
    if not isinstance(specs, list) or [s.get("fold") for s in specs if isinstance(s, dict)] != list(
        range(int(folds["k"]))
    ):
        raise InputError(f"expected {folds['k']} fold entries numbered 0..{int(folds['k']) - 1}", path)
    for s in specs:
        for split in ("train", "dev", "val"):
            if not isinstance(s.get(split), list):
                raise InputError(f"fold {s['fold']}: {split!r} must be a list of segment ids", path)


def _listed(items: list[Any]) -> str:
    """The first few items joined for an error message."""
    shown = ", ".join(str(x) for x in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")
