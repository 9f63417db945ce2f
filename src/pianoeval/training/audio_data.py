"""Waveform items for the audio models that run their backbone live (A1/A2 with LoRA, A3).

Each item is a fold item (labels, group, ids) plus `wave [S]` and `wave_mask [S]` (True = real
sample), S = `clip_seconds * sample_rate`; with augmentation also `wave_aug [S]` + `wave_aug_mask [S]`,
the same window degraded by `AudioAugmentor` (the invariance term's second view). Fixed-length
windows collate into `wave [B, S]` with `multi_task_collate_fn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pianoeval.errors import ConfigError, InputError


@dataclass(frozen=True)
class WaveformSpec:
    """Where each segment's audio is and how to cut it (the same for every split of a fold)."""

    audio_paths: dict[str, str]
    sample_rate: int
    clip_seconds: float
    augment: bool = False
    augment_prob: float = 0.5
    seed: int = 0

    @property
    def n_samples(self) -> int:
        """Samples per window."""
        return round(self.clip_seconds * self.sample_rate)


def crop_or_pad(wave: np.ndarray, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Window wave[offset : offset + n] zero-padded to n samples → (wave [n] float32, mask [n] bool)."""
    piece = wave[offset : offset + n]
    out = np.zeros(n, dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    out[: piece.size] = piece
    mask[: piece.size] = True
    return out, mask


class WaveformDataset(Dataset):
    """Fold items with their audio loaded on access; random windows (+ augmented view) when training."""

    def __init__(self, items: list[dict[str, Any]], spec: WaveformSpec, train: bool = False) -> None:
        missing = [it["segment_id"] for it in items if it["segment_id"] not in spec.audio_paths]
        if missing:
            raise InputError(
                f"{len(missing)} segments have no audio_path in the manifest (e.g. {missing[0]}); run the render rule"
            )
        self.items = items
        self.spec = spec
        self.train = train
        self.augmentor = None
        if train and spec.augment:
            from pianoeval.audio.augmentation import AudioAugmentor

            self.augmentor = AudioAugmentor(
                augment_prob=spec.augment_prob, seed=spec.seed, sample_rate=spec.sample_rate
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from pianoeval.audio.io import load_audio

        item = {k: v for k, v in self.items[index].items() if k not in ("audio_emb", "audio_mask")}
        wave = load_audio(self.spec.audio_paths[item["segment_id"]], sample_rate=self.spec.sample_rate)
        n = self.spec.n_samples
        offset = 0
        rng = None
        if self.train:
            # Drawn from torch's global generator: seeded by seed_everything, and per worker by
            # Lightning's worker init, so runs repeat and workers do not repeat each other.
            draw = int(torch.randint(0, 2**31 - 1, ()).item())
            rng = np.random.default_rng([self.spec.seed, draw, index])
            if wave.size > n:
                offset = int(rng.integers(0, wave.size - n + 1))
        item["wave"], mask = crop_or_pad(wave, n, offset)
        item["wave_mask"] = mask
        if self.augmentor is not None:
            real = item["wave"][mask]
            aug = np.asarray(self.augmentor(real, rng=rng), dtype=np.float32)[: real.size]
            item["wave_aug"], _ = crop_or_pad(aug, n)
            item["wave_aug_mask"] = mask.copy()
        item["wave"] = torch.from_numpy(item["wave"])
        item["wave_mask"] = torch.from_numpy(item["wave_mask"])
        if "wave_aug" in item:
            item["wave_aug"] = torch.from_numpy(item["wave_aug"])
            item["wave_aug_mask"] = torch.from_numpy(item["wave_aug_mask"])
        return item


def train_loader_options(model: str | None, config: dict[str, Any], data: Any, batch_size: int) -> dict[str, Any]:
    """make_loader options of `model`'s training batches: P x K for A1-A3 (`audio.performances_per_group`),
    and for A2 the unlabelled clips (`data.unlabelled`) mixed into its self-supervised epochs."""
    from pianoeval.training.registry import AUDIO_TRACK_MODELS

    if model not in AUDIO_TRACK_MODELS:
        return {}
    aud = config["audio"]
    k = int(aud["performances_per_group"])
    if batch_size // k < 2:
        raise ConfigError(
            f"{model}: a batch of {batch_size} cannot hold 2 segment groups of audio.performances_per_group={k}; "
            "the contrastive term needs negatives from other groups: lower it or raise the batch size"
        )
    options: dict[str, Any] = {"per_group": k}
    unlabelled = getattr(data, "unlabelled", None)
    if unlabelled is not None:
        options |= {
            "extra": unlabelled,
            "extra_epochs": int(aud["self_supervised_epochs"]),
            "extra_fraction": float(aud["unlabelled_fraction"]),
        }
    return options
