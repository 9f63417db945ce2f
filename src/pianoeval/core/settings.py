"""Typed settings: one frozen dataclass per config section, built and checked once from a validated config.

The config file is validated against `config/config.schema.yaml` (types, ranges, defaults) by
`core/config.py`; a section's dataclass then names its keys, so code reads `training.batch_size` rather
than `config["training"]["batch_size"]`, and a question asked of a section is answered in one place
(`AudioSettings.live_backbone(model)`). `from_config` reads the section through the rule's config, so a
section the rule was not given is the usual one-line ConfigError (`RuleConfig`); a section given by a
few keys only (`config_for("audio.backbone", ...)`) has no full settings and stays a dict.

Migrated so far: the training section (fit, the model registry, pretraining's batch size stays a dict
read) and the audio questions of the training steps (live backbone, batch and accumulation). What
remains reads the dict (docs/architecture.md, "Settings").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from pianoeval.core.errors import ConfigError

S = TypeVar("S", bound="Section")

# The audio models that run a backbone on waveforms when configured to (a3 always does).
LIVE_BACKBONE_MODELS = ("a1", "a2", "a3")


@dataclass(frozen=True)
class Section:
    """A config section as a dataclass; subclasses name the section (`NAME`) and its keys (fields)."""

    NAME: ClassVar[str] = ""

    @classmethod
    def from_config(cls: type[S], config: dict[str, Any]) -> S:
        """The section `NAME` of a validated config; ConfigError naming a missing or unknown key."""
        section = config[cls.NAME]
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in section]
        unknown = sorted(set(section) - set(names))
        if missing or unknown:
            what = ", ".join([*(f"missing {k}" for k in missing), *(f"unknown {k}" for k in unknown)])
            raise ConfigError(f"config section {cls.NAME}: {what} (validate the config against its schema)")
        return cls(**{k: copy.deepcopy(section[k]) for k in names})


@dataclass(frozen=True)
class TrainingSettings(Section):
    """`training`: supervised fitting of every network (epochs, batches, optimiser, losses)."""

    NAME: ClassVar[str] = "training"

    max_epochs: int
    pretrain_epochs: int
    encoder_lr_scale: float
    encoder_frozen_epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    precision: str
    wide_part: str
    num_workers: int
    loss_weights: dict[str, float]


@dataclass(frozen=True)
class SymbolicSettings(Section):
    """`symbolic`: the symbolic models, their width and depth, pretraining and the side input."""

    NAME: ClassVar[str] = "symbolic"

    models: list[str]
    baselines: list[str]
    hidden: int
    layers: int
    heads: int
    dropout: float
    score_dropout: float
    pretrain: bool
    corpus: dict[str, Any]
    objective: dict[str, Any]  # the self-supervised objectives' settings (symbolic/pretraining.py)
    stats_side_input: bool


@dataclass(frozen=True)
class AudioSettings(Section):
    """`audio`: the audio models, their backbone, width, batches and A1-A3's training."""

    NAME: ClassVar[str] = "audio"

    models: list[str]
    baselines: list[str]
    stats_side_input: bool
    dropout: float
    backbone: str
    muq_pretrained: bool
    muq_name_or_path: str
    muq_small: dict[str, Any]
    hidden: int
    context_layers: int
    heads: int
    hidden_layers: list[int] | None
    clip_seconds: float
    gradient_checkpointing: bool
    batch_size: int | None
    performances_per_group: int
    accumulate_grad_batches: int
    unlabelled_fraction: float
    unlabelled_exclude_pieces: list[str]
    augment_prob: float
    backbone_lr: float | None
    lora_rank: int
    lora_alpha: int
    lora_layers: list[int] | None
    self_supervised_epochs: int
    unfreeze_schedule: dict[Any, list[int]] | None
    layer_lr_decay: float
    embed_per_group: int | None
    loss_weights: dict[str, float]

    def live_backbone(self, model: str) -> bool:
        """Whether `model` runs the backbone on waveforms (a1/a2 with LoRA, a3) rather than on cached frames."""
        if model == "a3":
            return True
        return model in LIVE_BACKBONE_MODELS and int(self.lora_rank) > 0

    def batches(self, model: str, training: TrainingSettings) -> tuple[int, int]:
        """(batch size, batches per optimiser step) of `model`: this section's for a live backbone, else
        training's batch size, one batch per step."""
        if self.live_backbone(model):
            return int(self.batch_size or training.batch_size), int(self.accumulate_grad_batches)
        return int(training.batch_size), 1


@dataclass(frozen=True)
class FusionSettings(Section):
    """`fusion`: the fusion variants and their width."""

    NAME: ClassVar[str] = "fusion"

    models: list[str]
    score_conditioning: list[bool]
    hidden: int


@dataclass(frozen=True)
class StackingSettings(Section):
    """`stacking`: the inner folds that give the fusion its out-of-fold training rows."""

    NAME: ClassVar[str] = "stacking"

    inner_folds: int


@dataclass(frozen=True)
class RenderSettings(Section):
    """`render`: MIDI to audio with FluidSynth (the render rules, steps/render.py)."""

    NAME: ClassVar[str] = "render"

    enabled: bool
    soundfont: str | None  # an SF2 path; None: the Debian GM SoundFont (audio/render.py: find_soundfont)
    sample_rate: int
    max_seconds: float | None  # only the first N seconds of each rendering; None: the whole performance
