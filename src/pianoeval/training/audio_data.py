"""Waveform items for the audio models that run their backbone live (A1/A2 with LoRA, A3).

Each item is a fold item (labels, group, ids) plus `wave [S]` and `wave_mask [S]` (True = real
sample), S = `clip_seconds * sample_rate`; with augmentation also `wave_aug [S]` + `wave_aug_mask [S]`,
the same window degraded by `AudioAugmentor` (the invariance term's second view). Fixed-length
windows collate into `wave [B, S]` with `multi_task_collate_fn`.

`UnlabelledClips`: A2's unlabelled music (ASAP performances rendered like PercePiano), cut into
beat-aligned windows so that one window of all performances of a piece is a segment group, as
PercePiano's segments are: the cross-performer contrastive term then compares the same bars.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pianoeval.core.errors import ConfigError, InputError
from pianoeval.core.settings import AudioSettings, FitSettings

if TYPE_CHECKING:  # annotations only: pandas costs 0.5 s to import, and `pianoeval score` reaches crop_or_pad
    import pandas as pd

log = logging.getLogger(__name__)

# ASAP piece folders that are PercePiano pieces (asap_full/README.md, "Overlap with PercePiano"), so
# that a fold whose dev or val segments come from that PercePiano piece also excludes the ASAP piece.
PIECE_ALIASES: dict[str, str] = {"Schubert/Impromptu_op142/3": "Schubert_D935_no.3"}
# Windows shorter than this share of clip_seconds (a piece's last bars) are dropped.
MIN_WINDOW_SHARE = 0.5


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
        self.augmentor = make_augmentor(spec, train)

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
            rng = _train_rng(self.spec.seed, index)
            if wave.size > n:
                offset = int(rng.integers(0, wave.size - n + 1))
        window, mask = crop_or_pad(wave, n, offset)
        return with_views(item, window, mask, self.augmentor, rng)


def make_augmentor(spec: WaveformSpec, train: bool) -> Any:
    """The AudioAugmentor of training items with an augmented view, else None."""
    if not (train and spec.augment):
        return None
    from pianoeval.audio.augmentation import AudioAugmentor

    return AudioAugmentor(augment_prob=spec.augment_prob, seed=spec.seed, sample_rate=spec.sample_rate)


def with_views(
    item: dict[str, Any], window: np.ndarray, mask: np.ndarray, augmentor: Any, rng: np.random.Generator | None
) -> dict[str, Any]:
    """`item` + wave [S], wave_mask [S] (tensors) and, with an augmentor, wave_aug + wave_aug_mask."""
    item["wave"], item["wave_mask"] = torch.from_numpy(window), torch.from_numpy(mask)
    if augmentor is not None:
        real = window[mask]
        aug = np.asarray(augmentor(real, rng=rng), dtype=np.float32)[: real.size]
        item["wave_aug"] = torch.from_numpy(crop_or_pad(aug, window.size)[0])
        item["wave_aug_mask"] = torch.from_numpy(mask.copy())
    return item


def _train_rng(seed: int, index: int) -> np.random.Generator:
    """A training item's generator: drawn from torch's global one (seeded by seed_everything, and per
    worker by Lightning's worker init), so runs repeat and workers do not repeat each other."""
    draw = int(torch.randint(0, 2**31 - 1, ()).item())
    return np.random.default_rng([seed, draw, index])


def train_loader_options(model: str | None, aud: AudioSettings | None, data: Any, batch_size: int) -> dict[str, Any]:
    """make_loader options of `model`'s training batches: P x K for A1-A3 (`audio.performances_per_group`),
    and for A2 the unlabelled clips (`data.unlabelled`) mixed into its self-supervised epochs."""
    from pianoeval.training.registry import AUDIO_TRACK_MODELS

    if model not in AUDIO_TRACK_MODELS:
        return {}
    if aud is None:
        raise ConfigError(f"{model}: the audio section is not among this step's settings")
    k = int(aud.performances_per_group)
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
            "extra_epochs": int(aud.self_supervised_epochs),
            "extra_fraction": float(aud.unlabelled_fraction),
        }
    return options


# --- A2's unlabelled music ------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One window of one unlabelled performance: its rendered audio from start_s to end_s, and the
    segment group it shares with the same beats of the piece's other performances."""

    audio_path: str
    start_s: float
    end_s: float
    group: str
    segment_id: str


def annotation_path(midi_path: str | Path) -> Path:
    """The ASAP beat annotations of a performance MIDI: `<stem>_annotations.txt` beside it."""
    midi_path = Path(midi_path)
    return midi_path.with_name(f"{midi_path.stem}_annotations.txt")


def beat_windows(beats: np.ndarray, clip_seconds: float) -> list[tuple[int, int]]:
    """Consecutive (first, last) beat indices of windows about `clip_seconds` long in the median
    performance; beats [P, N] holds the same N score beats in each of P performances (seconds)."""
    median = np.median(beats, axis=0)
    windows: list[tuple[int, int]] = []
    first = 0
    while first < len(median) - 1:
        last = int(np.searchsorted(median, median[first] + clip_seconds))
        last = min(max(last, first + 1), len(median) - 1)
        if median[last] - median[first] >= MIN_WINDOW_SHARE * clip_seconds:
            windows.append((first, last))
        first = last
    return windows


def fold_music(manifest: pd.DataFrame, folds: dict[str, Any], fold: int) -> tuple[set[str], set[str]]:
    """(pieces, segment groups) of fold `fold`'s dev and val segments: music A2 must never read unlabelled."""
    spec = next((f for f in folds["folds"] if int(f["fold"]) == fold), None)
    if spec is None:
        raise InputError(f"fold {fold} is not in the folds file (k={folds.get('k')})")
    rows = manifest[manifest["segment_id"].isin(set(spec["dev"]) | set(spec["val"]))]
    return set(rows["piece_id"].dropna().astype(str)), set(rows["segment_group"].dropna().astype(str))


def is_excluded(piece: str, group: str, pieces: set[str], groups: set[str]) -> bool:
    """Whether a performance of `piece` / `group` is music of `pieces` / `groups` (aliases included)."""
    return piece in pieces or PIECE_ALIASES.get(piece, piece) in pieces or group in groups


def _piece_clips(piece: str, rows: pd.DataFrame, clip_seconds: float) -> list[Clip]:
    """Beat-aligned clips of one piece's performances (those with the same beat count go together)."""
    from pianoeval.data.asap import load_beat_annotations

    by_count: dict[int, list[tuple[Any, np.ndarray]]] = {}
    for row in rows.itertuples(index=False):
        times, _ = load_beat_annotations(annotation_path(row.midi_path))
        by_count.setdefault(len(times), []).append((row, times))
    clips = []
    for count, members in sorted(by_count.items()):
        beats = np.stack([times for _, times in members])
        for first, last in beat_windows(beats, clip_seconds):
            group = f"{piece}#{count}@{first}"
            for row, times in members:
                clip_id = f"{row.segment_id}@{first}"
                clips.append(Clip(str(row.audio_path), float(times[first]), float(times[last]), group, clip_id))
    return clips


def unlabelled_clips(
    manifest: pd.DataFrame, clip_seconds: float, pieces: Iterable[str] = (), groups: Iterable[str] = ()
) -> tuple[list[Clip], dict[str, Any]]:
    """Clips of the manifest's unlabelled rendered performances with beat annotations, except music of
    `pieces` / `groups`; and counts of what was left out (for the log)."""
    from pianoeval.data.manifest import labelled_mask

    pieces, groups = set(pieces), set(groups)
    rows = manifest[manifest["audio_path"].notna() & ~labelled_mask(manifest)]
    excluded = rows.apply(lambda r: is_excluded(str(r["piece_id"]), str(r["segment_group"]), pieces, groups), axis=1)
    kept = rows[~excluded.astype(bool)] if len(rows) else rows
    annotated = kept["midi_path"].map(lambda p: isinstance(p, str) and annotation_path(p).is_file())
    usable = kept[annotated.astype(bool)] if len(kept) else kept
    clips = [
        clip
        for piece, part in usable.groupby("piece_id", sort=True)
        for clip in _piece_clips(piece, part, clip_seconds)
    ]
    stats = {
        "n_unlabelled_rendered": len(rows),
        "n_excluded": int(excluded.sum()) if len(rows) else 0,
        "excluded_pieces": sorted(set(rows.loc[excluded.astype(bool), "piece_id"])) if len(rows) else [],
        "n_without_beats": int((~annotated.astype(bool)).sum()) if len(kept) else 0,
        "n_performances": len(usable),
        "n_clips": len(clips),
        "n_groups": len({c.group for c in clips}),
    }
    return clips, stats


class UnlabelledClips(Dataset):
    """Unlabelled clips as training items: wave [S] (+ mask, + augmented view), `group` (offset past the
    fold's labelled groups), `unlabelled` = 1, no labels. `groups` lists every item's group (the sampler's)."""

    def __init__(
        self, clips: list[Clip], spec: WaveformSpec, group_offset: int, stats: dict[str, Any] | None = None
    ) -> None:
        keys = sorted({c.group for c in clips})
        self.stats = dict(stats or {})  # what unlabelled_clips kept and left out (metrics.json)
        index = {key: group_offset + i for i, key in enumerate(keys)}
        self.clips = clips
        self.spec = spec
        self.groups = [index[c.group] for c in clips]
        self.augmentor = make_augmentor(spec, train=True)

    def __len__(self) -> int:
        return len(self.clips)

    def read(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        """The clip's window [S] from its start (masked after its end), read without loading the whole file."""
        import soundfile as sf

        from pianoeval.audio.io import load_audio

        n, sr = self.spec.n_samples, self.spec.sample_rate
        real = min(n, round((clip.end_s - clip.start_s) * sr))
        info = sf.info(clip.audio_path)
        if info.samplerate == sr:
            wave, _ = sf.read(
                clip.audio_path, start=round(clip.start_s * sr), frames=real, dtype="float32", always_2d=True
            )
            wave = wave.mean(axis=1)
        else:  # another rate than the renderings': decode and resample the whole file
            wave = load_audio(clip.audio_path, sample_rate=sr)[round(clip.start_s * sr) :][:real]
        return crop_or_pad(wave, n)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        window, mask = self.read(clip)
        item = {
            "group": torch.tensor(self.groups[index]),
            "segment_id": clip.segment_id,
            "unlabelled": torch.tensor(1.0),
        }
        return with_views(item, window, mask, self.augmentor, _train_rng(self.spec.seed, index))


def load_unlabelled(
    model: str,
    aud: AudioSettings,
    path: Path,
    manifest: pd.DataFrame,
    folds: dict[str, Any],
    fold: int,
    spec: WaveformSpec | None,
) -> UnlabelledClips:
    """A2's unlabelled clips from the rendered manifest `path`: beat-aligned windows of its unlabelled
    performances, without `audio.unlabelled_exclude_pieces` and without the fold's dev and val music."""
    from pianoeval.data.manifest import read_manifest

    if model != "a2":
        raise ConfigError(f"{model}: only a2's self-supervised stage reads unlabelled audio (--unlabelled-manifest)")
    if spec is None:
        raise ConfigError(
            "a2 with unlabelled audio needs a live backbone (audio.lora_rank > 0): clips are not embedded"
        )
    pieces, groups = fold_music(manifest, folds, fold)
    pieces |= set(aud.unlabelled_exclude_pieces)
    clips, stats = unlabelled_clips(read_manifest(path), spec.clip_seconds, pieces, groups)
    if not clips:
        raise InputError(
            f"no usable unlabelled clips ({stats['n_unlabelled_rendered']} unlabelled rendered performances, "
            f"{stats['n_excluded']} excluded as this fold's dev/val music or by audio.unlabelled_exclude_pieces, "
            f"{stats['n_without_beats']} without beat annotations); render the ASAP performances first",
            path,
        )
    log.info("unlabelled audio for a2's self-supervised stage: %s", stats)
    # Past every labelled group index (load_fold_data numbers the manifest's unique groups).
    offset = len(manifest["segment_group"].unique())
    return UnlabelledClips(clips, spec, group_offset=offset, stats={"manifest": str(path), **stats})


def waveform_spec(model: str, settings: FitSettings, manifest: pd.DataFrame, seed: int) -> Any:
    """How `model` reads waveforms (`WaveformSpec`), or None when it trains on cached frames."""
    aud: AudioSettings = settings.need("audio")
    if not aud.live_backbone(model):
        return None
    w = aud.loss_weights
    # The augmented view costs a second backbone pass: only when a loss term reads it.
    augment = w["invariance"] > 0 or (model == "a2" and w["ssl_invariance"] > 0)
    rows = manifest[manifest["audio_path"].notna()]
    return WaveformSpec(
        audio_paths=dict(zip(rows["segment_id"], rows["audio_path"], strict=True)),
        sample_rate=int(settings.need("sample_rate")),
        clip_seconds=float(aud.clip_seconds),
        augment=bool(augment),
        augment_prob=float(aud.augment_prob),
        seed=seed,
    )
