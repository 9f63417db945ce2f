"""Turn a feature store, the manifest and one fold into labelled items, splits and DataLoaders."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from pianoeval.core.errors import InputError

if TYPE_CHECKING:
    from pianoeval.training.audio_data import WaveformSpec

log = logging.getLogger(__name__)


@dataclass
class FoldData:
    """Labelled items of one fold: `splits[name]` lists indices into `items` (train/dev/val, and
    val_transcribed: the validation segments' clean transcriptions, only with transcription views;
    train then also holds the training segments' transcriptions)."""

    items: list[dict[str, Any]]
    splits: dict[str, list[int]]
    meta: dict[str, Any]
    missing: list[str]
    # Set for audio models that run their backbone live: items then get waveforms on access.
    waveforms: WaveformSpec | None = None

    def subset(self, split: str) -> list[dict[str, Any]]:
        """The items of one split."""
        return [self.items[i] for i in self.splits[split]]

    def dataset(self, split: str, train: bool = False) -> Sequence[dict[str, Any]]:
        """What a loader of one split reads: the items, or a `WaveformDataset` over them (random
        windows and augmented views when `train`)."""
        if self.waveforms is None:
            return self.subset(split)
        from pianoeval.training.audio_data import WaveformDataset

        return WaveformDataset(self.subset(split), self.waveforms, train=train)

    def labels(self, split: str) -> np.ndarray:
        """Labels [N, 19] of one split."""
        return np.stack([self.items[i]["labels"].numpy() for i in self.splits[split]])

    def groups(self, split: str) -> np.ndarray:
        """Segment-group indices [N] of one split."""
        return np.array([int(self.items[i]["group"]) for i in self.splits[split]])


def load_feature_store(path: Path) -> dict[str, Any]:
    """Read a feature/embedding store written by `featurize` or `embed`."""
    if not path.is_file():
        raise InputError("feature file not found; run its featurize/embed rule first", path)
    store = torch.load(path, weights_only=False)
    if not isinstance(store, dict) or "items" not in store:
        raise InputError("not a pianoeval feature store (no 'items')", path)
    return store


def load_fold_data(
    store: dict[str, Any],
    manifest: pd.DataFrame,
    folds: dict[str, Any],
    fold: int,
    manifest_path: Path | None = None,
) -> FoldData:
    """Join features with labels and groups for the train/dev/val ids of `fold` (`manifest_path` names
    the manifest in errors)."""
    from pianoeval.data.manifest import label_matrix
    from pianoeval.networks.side_input import pooled_statistics

    spec = next((f for f in folds["folds"] if int(f["fold"]) == fold), None)
    if spec is None:
        raise InputError(f"fold {fold} is not in the folds file (k={folds.get('k')})")
    labels = label_matrix(manifest)
    by_id = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    group_index = {g: i for i, g in enumerate(sorted(manifest["segment_group"].unique()))}
    items: list[dict[str, Any]] = []
    splits: dict[str, list[int]] = {}
    missing: list[str] = []
    views = transcription_views(store["items"])

    def add(key: str, sid: str, split: str) -> None:
        """Append the store's item `key` with the labels and group of manifest segment `sid`."""
        row = by_id.get(sid)
        if row is None or np.isnan(labels[row]).any():
            raise InputError(
                f"segment {sid} of fold {fold} has no labels in the manifest; rebuild the folds from it",
                manifest_path,
            )
        item = dict(store["items"][key])
        if "audio_emb" in item and "stats" not in item:
            # The audio track's statistics: the frames pooled (baselines, wide part of the probe).
            item["stats"] = pooled_statistics(item["audio_emb"])
        item.update(
            labels=torch.tensor(labels[row], dtype=torch.float32),
            group=torch.tensor(group_index[manifest["segment_group"].iloc[row]], dtype=torch.long),
            segment_id=key,
            split=split,
        )
        if views:
            # 1 for a transcription, 0 for the ground-truth MIDI (side_input.WithStatistics).
            item["transcribed"] = torch.tensor(float(key != sid))
        items.append(item)
        splits[split].append(len(items) - 1)

    for split in ("train", "dev", "val"):
        splits[split] = []
        for sid in spec[split]:
            if sid not in store["items"]:
                missing.append(sid)  # featurizing it failed; reported, not fatal
                continue
            add(sid, sid, split)
            if split == "train":
                # The training segments' transcriptions: same labels, same group (steps/transcribe.py).
                for key in views.get(sid, {}).values():
                    add(key, sid, split)
    # The validation segments as a recording would reach the model: their clean transcriptions.
    if any("clean" in views.get(sid, {}) for sid in spec["val"]):
        splits["val_transcribed"] = []
        for sid in spec["val"]:
            if "clean" in views.get(sid, {}):
                add(views[sid]["clean"], sid, "val_transcribed")
    if missing:
        log.warning("%d segments of fold %d have no features (skipped during featurizing)", len(missing), fold)
    for split in ("train", "val"):
        if not splits[split]:
            raise InputError(f"fold {fold} has no usable {split} segments")
    meta = dict(store.get("meta", {}))
    if views:
        # The networks then read each item's transcription flag (training/registry.py).
        meta["transcribed_views"] = True
    if items and "audio_emb" in items[0]:
        meta["n_stats"] = int(items[0]["stats"].shape[0])
    return FoldData(items, splits, meta, missing)


def transcription_views(keys: Any) -> dict[str, dict[str, str]]:
    """{segment id: {view: store key}} of the transcription views among a store's keys (`<id>@<view>`)."""
    from pianoeval.data.manifest import split_view_id

    out: dict[str, dict[str, str]] = {}
    for key in keys:
        sid, view = split_view_id(str(key))
        if view is not None:
            out.setdefault(sid, {})[view] = key
    return out


class GroupBatchSampler(Sampler[list[int]]):
    """Batches of indices where performances of one musical segment sit together (for ranking pairs).

    Each epoch shuffles the groups and the members within each group, concatenates them and cuts
    the sequence into batches, so most batches contain whole groups.

    With `shard`, under an initialised torch.distributed process group (Lightning DDP), each rank
    takes every world-size-th batch of the same seeded order; the first batches are repeated so
    that every rank has as many batches (each DDP step waits for all ranks).
    """

    def __init__(
        self, groups: list[int], batch_size: int, shuffle: bool = True, seed: int = 0, shard: bool = False
    ) -> None:
        self.groups = np.asarray(groups)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s order next (training sets it each epoch, so a run resumed from a
        checkpoint sees the batches the uninterrupted run would have)."""
        self.epoch = epoch

    def _replicas(self) -> tuple[int, int]:
        """(rank, world size) to shard over: the process group's when sharding under DDP, else (0, 1)."""
        import torch.distributed as dist

        if self.shard and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._replicas()
        batches = list(self._all_batches())
        if world > 1:
            padded = [batches[i % len(batches)] for i in range(len(self) * world)]
            batches = padded[rank::world]
        yield from batches

    def _all_batches(self) -> Iterator[list[int]]:
        """This epoch's batches over all items (the same on every rank: seeded by seed and epoch)."""
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        unique = np.unique(self.groups)
        if self.shuffle:
            rng.shuffle(unique)
        order: list[int] = []
        for g in unique:
            members = np.flatnonzero(self.groups == g)
            if self.shuffle:
                rng.shuffle(members)
            order.extend(members.tolist())
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        n_batches = (len(self.groups) + self.batch_size - 1) // self.batch_size
        world = self._replicas()[1]
        return (n_batches + world - 1) // world


def make_loader(
    items: list[dict[str, Any]],
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    dataset: Sequence[dict[str, Any]] | None = None,
    shard: bool = False,
) -> DataLoader:
    """A DataLoader over items (or `dataset`, indexed like them) with group-aware batching and the
    multi-task collate; `shard`: split the batches across DDP ranks (GroupBatchSampler)."""
    from pianoeval.data.datasets import multi_task_collate_fn

    groups = [int(it["group"]) for it in items]
    sampler = GroupBatchSampler(groups, batch_size, shuffle=shuffle, seed=seed, shard=shard)
    return DataLoader(
        items if dataset is None else dataset,  # a list is a valid map-style dataset
        batch_sampler=sampler,
        collate_fn=multi_task_collate_fn,
        num_workers=num_workers,
        # Its own generator: starting an epoch's iterator then leaves the global RNG (dropout) alone,
        # so each epoch's randomness depends only on the per-epoch seed (train.py, _epoch_seed).
        generator=torch.Generator().manual_seed(seed),
    )
