"""Typed settings: one frozen dataclass per config section, built and checked once from a validated config.

The config file is validated against `config/config.schema.yaml` (types, ranges, defaults) by
`core/config.py`; a section's dataclass then names its keys, so code reads `training.batch_size` rather
than `config["training"]["batch_size"]`, and a question asked of a section is answered in one place
(`AudioSettings.live_backbone(model)`). `from_config` reads the section through the rule's config, so a
section the rule was not given is the usual one-line ConfigError (`RuleConfig`); a section given by a
few keys only (`config_for("audio.backbone", ...)`) has no full settings: its backbone keys have their own
slice, `BackboneSettings`.

A step builds its settings once from its rule's config and passes the typed objects down: fitting
and the model registry receive a `FitSettings` (seed + the sections a fold's fitting reads), a frozen
backbone a `BackboneSettings` (the few audio keys the embed rule is given). The data-side steps read
`DataSettings`, `FoldsSettings`, `TranscriptionSettings`, `UnlabelledAudioSettings` and `PersistSettings`
the same way. What still reads the dict: docs/architecture.md, "Settings".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar

from pianoeval.core.config import RuleSection, budget_key
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
    lr_schedule: str
    warmup_epochs: float
    weight_decay: float
    ema_decay: float  # 0 = off; else dev selection and checkpoints use an EMA of the weights (averaging.py)
    patience: int
    precision: str
    wide_part: str
    num_workers: int
    loss_weights: dict[str, float]
    by_model: dict[str, dict[str, Any]]  # per-model overrides of the keys above (for_model)

    def for_model(self, model: str | None) -> TrainingSettings:
        """The settings `model` trains with: its `by_model` entry (config.budget_key) over the shared keys."""
        if model is None or not self.by_model:
            return self
        return replace(self, **copy.deepcopy(self.by_model.get(budget_key(model), {})), by_model={})


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
    deep_start: bool  # wide & deep encoders start from the fold's deep-only model (rules: train_inputs)
    pooling: str  # attention (weighted mean) or attention_stats (mean and deviation): networks/heads.py


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
class FeaturesSettings(Section):
    """`features`: how MIDI becomes the symbolic models' inputs (sequence length, curve frame rate)."""

    NAME: ClassVar[str] = "features"

    max_seq_len: int
    frame_rate: int


@dataclass(frozen=True)
class CompareSettings(Section):
    """`compare`: the paired bootstrap of the comparisons."""

    NAME: ClassVar[str] = "compare"

    resamples: int


@dataclass(frozen=True)
class RobustnessSettings(Section):
    """`robustness`: the recording conditions' check of the audio models and the final model."""

    NAME: ClassVar[str] = "robustness"

    veto_drop_pct: float
    snr_db: list[float]
    audio_per_fold: int
    transcribe_conditions: list[str]
    transcribe_per_fold: int


@dataclass(frozen=True)
class BackboneSettings:
    """The audio keys that decide a backbone's weights and frames, and the seed of MuQ's small random
    weights: all the embed rule is given of the audio section (`config_for("audio.backbone", ...)`)."""

    KEYS: ClassVar[tuple[str, ...]] = ("backbone", "muq_pretrained", "muq_name_or_path", "muq_small", "hidden_layers")

    backbone: str
    muq_pretrained: bool
    muq_name_or_path: str
    muq_small: dict[str, Any]
    hidden_layers: list[int] | None
    seed: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BackboneSettings:
        """The backbone keys of `config["audio"]` (the whole section or the embed rule's few keys) and the seed."""
        audio = config["audio"]
        return cls(**{k: copy.deepcopy(audio[k]) for k in cls.KEYS}, seed=int(config["seed"]))


@dataclass(frozen=True)
class EmbedSettings:
    """What the embed rule is given (`config_for("render.sample_rate", "audio.backbone", ...)`): the
    backbone's keys, how many labelled performances of each segment group it embeds
    (`audio.embed_per_group`; None: all) and the rate the WAVs are read at (`render.sample_rate`)."""

    backbone: BackboneSettings
    per_group: int | None
    sample_rate: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EmbedSettings:
        """The embed keys of `config` (whole sections or the embed rule's few keys) and the seed."""
        per_group = config["audio"]["embed_per_group"]
        return cls(BackboneSettings.from_config(config), per_group, int(config["render"]["sample_rate"]))


# The sections a fold's fitting can read, in FitSettings' field order.
FIT_SECTIONS: tuple[type[Section], ...] = (
    TrainingSettings,
    FeaturesSettings,
    SymbolicSettings,
    AudioSettings,
    FusionSettings,
)


@dataclass(frozen=True)
class FitSettings:
    """What building and fitting a fold's network reads, built once by the step from its rule's config:
    the global seed and each whole section the rule was given (None: not given, e.g. `symbolic` to the
    audio track's rules). The model registry, fitting and the data modules take this, never the dict;
    the checkpoint cache key hashes it (`fit._same_run`)."""

    seed: int
    training: TrainingSettings | None = None
    features: FeaturesSettings | None = None
    symbolic: SymbolicSettings | None = None
    audio: AudioSettings | None = None
    fusion: FusionSettings | None = None
    sample_rate: int | None = None  # render.sample_rate: the waveforms of the live backbones (A1-A3)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FitSettings:
        """The settings of a validated (rule's) config; a section given by a few keys only is None."""
        given = {
            cls_.NAME: cls_.from_config(config)
            for cls_ in FIT_SECTIONS
            if cls_.NAME in config and not isinstance(config[cls_.NAME], RuleSection)
        }
        render = config.get("render", {})
        rate = int(render["sample_rate"]) if "sample_rate" in render else None
        return cls(seed=int(config["seed"]), sample_rate=rate, **given)

    def for_model(self, model: str | None) -> FitSettings:
        """These settings with `training` as `model` trains with it (TrainingSettings.for_model)."""
        if self.training is None:
            return self
        return replace(self, training=self.training.for_model(model))

    def need(self, name: str) -> Any:
        """The section `name` (or `sample_rate`); ConfigError when the rule's config did not give it whole."""
        section = getattr(self, name)
        if section is None:
            what = "render.sample_rate" if name == "sample_rate" else name
            raise ConfigError(
                f"config section {what!r} is not among this step's settings; add it to its rule's config_for(...)"
            )
        return section

    @property
    def backbone(self) -> BackboneSettings:
        """The audio section's backbone keys with the seed (what `registry.build_audio_backbone` reads)."""
        aud = self.need("audio")
        return BackboneSettings(**{k: copy.deepcopy(getattr(aud, k)) for k in BackboneSettings.KEYS}, seed=self.seed)


@dataclass(frozen=True)
class RenderSettings(Section):
    """`render`: MIDI to audio with FluidSynth (the render rules, steps/render.py)."""

    NAME: ClassVar[str] = "render"

    enabled: bool
    soundfont: str | None  # an SF2 path; None: the Debian GM SoundFont (audio/render.py: find_soundfont)
    sample_rate: int
    max_seconds: float | None  # only the first N seconds of each rendering; None: the whole performance


@dataclass(frozen=True)
class DataSettings(Section):
    """`data`: which corpus the manifest is built from (the demo, fetch and prepare rules)."""

    NAME: ClassVar[str] = "data"

    source: str  # demo | percepiano
    percepiano_root: str
    percepiano_labels: str
    asap_root: str | None
    extra_midi_dirs: list[str]
    limit: int | None
    limit_groups: int | None
    limit_per_group: int | None
    fetch_sources: dict[str, dict[str, str]]  # {percepiano|asap: {url, commit}} (data/fetch.py)
    demo: dict[str, Any]  # the generated corpus's size and seed (data/demo.py)


@dataclass(frozen=True)
class FoldsSettings(Section):
    """`folds`: the cross-validation protocol (the folds rule)."""

    NAME: ClassVar[str] = "folds"

    k: int
    protocol: str  # segment | performer
    dev_fraction: float


@dataclass(frozen=True)
class TranscriptionSettings(Section):
    """`transcription`: the TransKun views of the rendered recordings (the transcribe rule)."""

    NAME: ClassVar[str] = "transcription"

    views: list[str]  # clean | augmented; empty: no transcription
    per_group: int | None  # at most this many recordings per segment group; None: all


@dataclass(frozen=True)
class UnlabelledAudioSettings(Section):
    """`unlabelled_audio`: a2's unlabelled recordings (the render_unlabelled rule)."""

    NAME: ClassVar[str] = "unlabelled_audio"

    root: str | None
    pieces: int | None


@dataclass(frozen=True)
class PersistSettings(Section):
    """`persist`: durable copies of the outputs (pianoeval persist, the workflow's pushes); a machine
    setting that no rule's resolved config includes."""

    NAME: ClassVar[str] = "persist"

    remote: str | None
    include: list[str]
    exclude: list[str]
