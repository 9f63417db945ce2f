"""Self-supervised pretraining of a symbolic encoder on one fold's training MIDI (never its val fold)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pianoeval.core.errors import ConfigError

log = logging.getLogger(__name__)


class PretrainModule(L.LightningModule):
    """Wraps a pretraining objective (`objective(batch) -> (loss, logs)`) for Lightning."""

    def __init__(self, objective: nn.Module, lr: float = 5e-4, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["objective"])
        self.objective = objective

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, logs = self.objective(batch)
        bs = int(batch["input_ids"].shape[0]) if "input_ids" in batch else 1
        self.log("pretrain/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in logs.items():
            # On the progress line too: a collapsing objective (perplexity, accuracy) shows in the log.
            self.log(f"pretrain/{name}", value, batch_size=bs, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def pretraining_keys(store: dict[str, Any], manifest: Any, folds: dict[str, Any], fold: int) -> list[str]:
    """Feature keys usable for pretraining on `fold`: every key except those of the validation fold's
    segment groups: their performances, the transcription views of those (`<id>@clean`, `<id>@augmented`:
    the same music, transcribed), unlabelled rows of the same groups and their score MIDIs."""
    from pianoeval.data.leaks import KeyGroups, split_groups

    index = KeyGroups(manifest)
    val_groups = split_groups(folds, fold, index)
    # Each key is judged by the groups it maps to (a view by its segment's, a score MIDI by every
    # group that uses it), not by its name: a key of validation music under another name is still out.
    return sorted(k for k in store["items"] if not index(k) & val_groups)


def build_objective(
    model: str, encoder: nn.Module, meta: dict[str, Any], settings: dict[str, Any] | None = None
) -> nn.Module:
    """The pretraining objective of a symbolic model (masked tokens, link prediction, contrastive);
    `settings`: the config's `symbolic.objective` (the objectives' own defaults when None). S1's
    masking rate is the loader's (build_pretrain_loader)."""
    from pianoeval.symbolic import pretraining

    settings = settings or {}
    if model == "s1":
        return pretraining.MaskedTokenObjective(encoder, vocab_size=meta["vocab_size"])
    if model == "s2":
        return pretraining.LinkPredictionObjective(encoder, **_picked(settings, ("holdout_fraction",)))
    if model == "s3":
        keys = ("diversity_weight", "max_temp", "min_temp", "temp_decay")
        return pretraining.ContrastiveCurveObjective(encoder, **_picked(settings, keys))
    raise ConfigError(f"model {model!r} has no pretraining stage")


def _picked(settings: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The entries of `settings` among `keys` (absent ones keep the objective's default)."""
    return {k: settings[k] for k in keys if k in settings}


class CurveCrops(torch.utils.data.Dataset):
    """Feature items whose `curves [T, C]` are cut to a random window of at most `max_len` frames.

    Why: pretraining also reads unlabelled whole pieces (ASAP performances last up to 15 min, 9,000
    frames at 10 frames/s), and S3's Transformer needs memory quadratic in T: one such batch took
    16 GB. The windows are drawn from one seeded generator, so a run is repeatable.
    """

    def __init__(self, items: list[dict[str, Any]], max_len: int, seed: int) -> None:
        self.items = items
        self.max_len = int(max_len)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        n = int(item["curves"].shape[0])
        if n <= self.max_len:
            return item
        start = int(self.rng.integers(0, n - self.max_len + 1))
        return {**item, "curves": item["curves"][start : start + self.max_len]}


def build_pretrain_loader(
    model: str,
    items: list[dict[str, Any]],
    meta: dict[str, Any],
    batch_size: int,
    seed: int,
    max_len: int | None = None,
    mask_prob: float = 0.15,
) -> DataLoader:
    """A shuffled loader of pretraining batches: BERT-style masked sequences for s1 (`meta`'s length,
    `mask_prob` of the tokens masked), curves cut to random windows of `max_len` frames for s3
    (CurveCrops), graphs as they are for s2."""
    from pianoeval.data.datasets import MIDIPretrainingDataset, multi_task_collate_fn

    generator = torch.Generator().manual_seed(seed)
    if model == "s1":
        specials = sorted({meta["pad_token_id"], meta["mask_token_id"], *meta.get("special_ids", [])})
        dataset: Any = MIDIPretrainingDataset(
            [it["input_ids"].tolist() for it in items],
            vocab_size=meta["vocab_size"],
            mask_token_id=meta["mask_token_id"],
            pad_token_id=meta["pad_token_id"],
            special_ids=specials,
            mask_prob=mask_prob,
            max_len=meta["max_seq_len"],
            seed=seed,
        )
    elif model == "s3" and max_len:
        dataset = CurveCrops(items, max_len, seed)
    else:
        dataset = items
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=multi_task_collate_fn
    )
