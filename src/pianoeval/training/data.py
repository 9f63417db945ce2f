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
    # A2 with --unlabelled-manifest: unlabelled rendered clips (training.audio_data.UnlabelledClips)
    # for its self-supervised stage, none of them music of this fold's dev or val segments.
    unlabelled: Any = None

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
        if world > 1 or len(batches) != self._n_batches():
            # Exactly len(self) batches per rank (DDP waits for all; Lightning counts them once per
            # fit): the first batches repeat to fill, any surplus of a mixed epoch is dropped.
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

    def _n_batches(self) -> int:
        """Batches of one epoch over all ranks (before sharding)."""
        return (len(self.groups) + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        world = self._replicas()[1]
        return (self._n_batches() + world - 1) // world


class PKBatchSampler(GroupBatchSampler):
    """Batches of P segment groups x K performances (A1-A3): K = `per_group`, P = batch_size // K.

    Each epoch every group's members are shuffled and cut into chunks of K (the last may be smaller);
    each batch takes one chunk from each of the P groups with the most chunks left (ties broken at
    random), so a batch holds as many groups as it can (negatives for the contrastive term) and each
    group K performances (ranking pairs), and every item is used once per epoch. The batch order is
    then shuffled. Sharding across DDP ranks is GroupBatchSampler's.

    With `extra_groups` (the segment groups of further items, indices len(groups) onwards: unlabelled
    clips), epochs below `extra_epochs` (A2's self-supervised stage) draw their batches from a pool
    of random whole groups: labelled ones for about (1 - extra_fraction) of an epoch's items and extra
    ones for the rest, with the same number of batches as a labelled epoch.
    """

    def __init__(
        self,
        groups: list[int],
        batch_size: int,
        per_group: int,
        shuffle: bool = True,
        seed: int = 0,
        shard: bool = False,
        extra_groups: Sequence[int] = (),
        extra_epochs: int = 0,
        extra_fraction: float = 0.5,
    ) -> None:
        super().__init__(groups, batch_size, shuffle=shuffle, seed=seed, shard=shard)
        if per_group < 1 or batch_size // per_group < 1:
            raise ValueError(f"batch size {batch_size} cannot hold a group of {per_group}")
        self.per_group = per_group
        self.n_groups_per_batch = batch_size // per_group
        self.extra_groups = np.asarray(extra_groups, dtype=np.int64)
        self.extra_epochs = extra_epochs if len(self.extra_groups) else 0
        self.extra_fraction = extra_fraction

    def _members(self, groups: np.ndarray, offset: int = 0) -> dict[int, list[int]]:
        """{group: its item indices (+ offset)} in index order."""
        out: dict[int, list[int]] = {}
        for i, g in enumerate(groups.tolist()):
            out.setdefault(int(g), []).append(i + offset)
        return out

    def _draw(self, members: dict[int, list[int]], n_items: int, rng: np.random.Generator) -> dict[int, list[int]]:
        """Random whole groups of `members` until they hold at least `n_items` items."""
        keys = list(members)
        rng.shuffle(keys)
        chosen: dict[int, list[int]] = {}
        total = 0
        for g in keys:
            if total >= n_items:
                break
            chosen[g] = members[g]
            total += len(members[g])
        return chosen

    def _pool(self, epoch: int, rng: np.random.Generator) -> dict[int, list[int]]:
        """This epoch's groups and members: the labelled ones, or a labelled + extra mix."""
        labelled = self._members(self.groups)
        if epoch >= self.extra_epochs:
            return labelled
        n = len(self.groups)
        n_extra = round(self.extra_fraction * n)
        pool = self._draw(labelled, n - n_extra, rng) if n_extra < n else {}
        pool.update(self._draw(self._members(self.extra_groups, offset=n), n_extra, rng))
        return pool

    def pk_batches(self, members: dict[int, list[int]], rng: np.random.Generator | None) -> list[list[int]]:
        """P x K batches over `members` (rng None: no shuffling, the count is the same)."""
        queues: dict[int, list[list[int]]] = {}
        for g, idx in members.items():
            idx = list(idx)
            if rng is not None:
                rng.shuffle(idx)
            queues[g] = [idx[i : i + self.per_group] for i in range(0, len(idx), self.per_group)]
        batches: list[list[int]] = []
        while queues:
            tie = rng.random(len(queues)) if rng is not None else np.zeros(len(queues))
            order = sorted(zip(queues, tie, strict=True), key=lambda gt: (-len(queues[gt[0]]), gt[1]))
            batch: list[int] = []
            for g, _ in order[: self.n_groups_per_batch]:
                batch.extend(queues[g].pop(0))
                if not queues[g]:
                    del queues[g]
            batches.append(batch)
        if rng is not None:
            rng.shuffle(batches)
        return batches

    def _all_batches(self) -> Iterator[list[int]]:
        """This epoch's P x K batches (the same on every rank: seeded by seed and epoch)."""
        epoch = self.epoch
        rng = np.random.default_rng(self.seed + epoch)
        self.epoch += 1
        yield from self.pk_batches(self._pool(epoch, rng), rng if self.shuffle else None)

    def _n_batches(self) -> int:
        """Batches of a labelled epoch (largest-first filling needs max(ceil(chunks / P), most chunks))."""
        return len(self.pk_batches(self._members(self.groups), None))


def make_loader(
    items: list[dict[str, Any]],
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    dataset: Sequence[dict[str, Any]] | None = None,
    shard: bool = False,
    per_group: int | None = None,
    extra: Any = None,
    extra_epochs: int = 0,
    extra_fraction: float = 0.5,
) -> DataLoader:
    """A DataLoader over items (or `dataset`, indexed like them) with group-aware batching and the
    multi-task collate; `shard`: split the batches across DDP ranks. `per_group` K: P x K batches
    (PKBatchSampler); `extra`: a dataset with `.groups` (unlabelled clips) mixed into the epochs below
    `extra_epochs` for `extra_fraction` of their items."""
    from torch.utils.data import ConcatDataset

    from pianoeval.data.datasets import multi_task_collate_fn

    groups = [int(it["group"]) for it in items]
    dataset = items if dataset is None else dataset  # a list is a valid map-style dataset
    sampler: GroupBatchSampler
    if per_group is None:
        sampler = GroupBatchSampler(groups, batch_size, shuffle=shuffle, seed=seed, shard=shard)
    else:
        extra_groups = list(extra.groups) if extra is not None and extra_epochs > 0 else []
        sampler = PKBatchSampler(
            groups,
            batch_size,
            per_group,
            shuffle=shuffle,
            seed=seed,
            shard=shard,
            extra_groups=extra_groups,
            extra_epochs=extra_epochs,
            extra_fraction=extra_fraction,
        )
        if extra_groups:
            dataset = ConcatDataset([dataset, extra])  # extra items follow the fold's: index len(items) on
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=multi_task_collate_fn,
        num_workers=num_workers,
        # Its own generator: starting an epoch's iterator then leaves the global RNG (dropout) alone,
        # so each epoch's randomness depends only on the per-epoch seed (train.py, _epoch_seed).
        generator=torch.Generator().manual_seed(seed),
    )
