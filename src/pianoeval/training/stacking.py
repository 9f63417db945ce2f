"""Stacking without in-sample rows: nested, group-disjoint inner folds inside an outer fold's training
split, and the out-of-fold predictions the fusion learns from.

Why: a track winner's predictions on its own training rows are in-sample (fitted, often almost
exactly); a fusion fitted on them learns to trust the track that overfits most. Instead each outer
fold's training segment groups are cut into `stacking.inner_folds` parts (K, seeded, balanced by
rows); for each part j the winner is retrained on the other parts (early stopping on the outer dev
slice, as the outer model) and predicts part j, ground truth and transcription views alike. The K
parts' predictions are the training rows' out-of-fold embeddings and scores (`oof.pt`), which
replace the in-sample ones before the fusion is fitted (`stack_out_of_fold`). Dev and validation
rows keep the outer model's predictions (it never trained on them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.errors import InputError
from pianoeval.data.leaks import KeyGroups, check_no_leak, groups_of_keys, recorded_groups
from pianoeval.training.data import FoldData


def inner_seed(seed: int, fold: int, inner: int) -> int:
    """The seed of inner fold `inner` of outer fold `fold` from the global `seed` (distinct from every
    outer fold's)."""
    return int(seed) + 1000 * fold + 100 * (inner + 1)


def inner_parts(data: FoldData, index: KeyGroups, k: int, seed: int) -> dict[str, int]:
    """{segment group: inner part 0..k-1} over the outer training rows' groups (balanced by rows)."""
    from pianoeval.data.folds import assign_groups

    sizes: dict[str, int] = {}
    for i in data.splits["train"]:
        for group in index(data.items[i]["segment_id"]):
            sizes[group] = sizes.get(group, 0) + 1
    if len(sizes) < k:
        raise InputError(f"stacking.inner_folds = {k}, but the training split has only {len(sizes)} segment groups")
    return assign_groups(sizes, k, seed)


def inner_fold_data(data: FoldData, index: KeyGroups, k: int, inner: int, seed: int) -> tuple[FoldData, set[str]]:
    """Inner fold `inner` of `k` of an outer fold's data: train = the training rows of the other parts,
    dev = the outer dev rows, val = this part's training rows (with their transcription views, which
    the fusion also learns from). Returns the data and the held-out groups."""
    part = inner_parts(data, index, k, seed)
    held = {g for g, p in part.items() if p == inner}
    splits: dict[str, list[int]] = {"train": [], "dev": list(data.splits["dev"]), "val": []}
    for i in data.splits["train"]:
        splits["val" if index(data.items[i]["segment_id"]) & held else "train"].append(i)
    return FoldData(data.items, splits, data.meta, data.missing, data.waveforms, data.unlabelled), held


def oof_payload(
    data: FoldData,
    preds: dict[str, np.ndarray],
    embs: dict[str, np.ndarray] | None,
    record: dict[str, Any],
) -> dict[str, Any]:
    """What `oof.pt` holds: the inner-val rows' ids, scores [N, 19] and embeddings [N, H] (None for a
    model without), plus the record (`fold`, `inner`, `held_out_groups`, learned-from groups...)."""
    idx = data.splits["val"]
    return {
        "ids": [data.items[i]["segment_id"] for i in idx],
        "scores": torch.from_numpy(np.asarray(preds["val"], dtype=np.float32)),
        "z": None if embs is None else torch.from_numpy(np.asarray(embs["val"], dtype=np.float32)),
        **record,
    }


def stack_out_of_fold(
    payload: dict[str, Any], oof_paths: list[Path], index: KeyGroups, fold: int, model: str
) -> dict[str, Any]:
    """The outer fold's embeddings payload (`embeddings.pt`) with each training row's `z` and `scores`
    replaced by its out-of-fold prediction from the `oof.pt` files of `model`'s inner folds;
    `learned_from_groups` then covers the fold model's and every inner model's.

    InputError when a file is of another fold or model, predicts a row twice, or leaves a training
    row without an out-of-fold prediction; ArtifactLeakError when a file's model learned labels of
    the very rows it predicts.
    """
    if not oof_paths:
        raise InputError(f"{model}: no out-of-fold predictions given; fusion never learns from in-sample rows")
    oof: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    learned_from = set(recorded_groups(payload, "the fold model's embeddings"))
    for path in oof_paths:
        part = torch.load(path, weights_only=False)
        if int(part.get("fold", -1)) != fold or part.get("model") != model:
            what = f"{part.get('model')} fold {part.get('fold')}"
            raise InputError(f"out-of-fold predictions of {what}, not of {model} fold {fold}", path)
        labels_from = recorded_groups(part, path, "labels_from_groups")
        learned_from |= set(recorded_groups(part, path))
        check_no_leak(path, f"{fold}/inner {part.get('inner')}", labels_from, groups_of_keys(part["ids"], index),
                      what="its own out-of-fold")  # fmt: skip
        for k, sid in enumerate(part["ids"]):
            if sid in oof:
                raise InputError(f"row {sid} is predicted by two inner folds", path)
            oof[sid] = (part["scores"][k], None if part["z"] is None else part["z"][k])
    out = dict(payload)
    scores, z = payload["scores"].clone(), None if payload["z"] is None else payload["z"].clone()
    for row, (sid, split) in enumerate(zip(payload["ids"], payload["split"], strict=True)):
        if split != "train":
            continue
        if sid not in oof:
            raise InputError(f"training row {sid} of fold {fold} has no out-of-fold prediction; rerun train_inner")
        scores[row] = oof[sid][0]
        if z is not None:
            if oof[sid][1] is None or oof[sid][1].shape != z[row].shape:
                raise InputError(f"{model}: out-of-fold embeddings of {sid} do not match the fold model's")
            z[row] = oof[sid][1]
    # What the stacked rows came from: the fold model and every inner model.
    out.update(scores=scores, z=z, stacking="out_of_fold", learned_from_groups=sorted(learned_from))
    return out
