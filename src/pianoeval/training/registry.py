"""Model names → networks: the one place that knows which encoder and features a model uses."""

from __future__ import annotations

from typing import Any

from torch import nn

from pianoeval.core.constants import SYMBOLIC_ENCODERS
from pianoeval.core.errors import ConfigError
from pianoeval.core.settings import AudioSettings, BackboneSettings, FitSettings, SymbolicSettings, TrainingSettings

# The ablations: each encoder without its wide part and side input (`<encoder>_deep`), so that a
# comparison shows what the deep part learns on its own.
DEEP_SUFFIX = "_deep"
SYMBOLIC_MODELS = SYMBOLIC_ENCODERS + tuple(f"{m}{DEEP_SUFFIX}" for m in SYMBOLIC_ENCODERS)
# Frozen-backbone probes on a named backbone, beside `probe` on `audio.backbone`: several frozen
# backbones are compared in one run, each from its own embed output (results/embed/<backbone>.pt).
PROBE_BACKBONES = {"probe_logmel": "logmel", "probe_muq": "muq", "probe_transkun": "transkun"}
AUDIO_MODELS = ("probe", *PROBE_BACKBONES, "a1", "a2", "a3")
# The audio models whose LightningModule is not PerformanceModule (see build_module).
AUDIO_TRACK_MODELS = ("a1", "a2", "a3")
# baseline_blend: exactly the wide part the wide & deep encoders start from (build_wide_part).
BASELINES = ("baseline_mean", "baseline_ridge", "baseline_trees", "baseline_segment_mean", "baseline_blend")
# The feature kind (featurize output) each symbolic model reads.
_ENCODER_FEATURES = {"s1": "tokens", "s2": "graphs", "s3": "curves"}
FEATURE_KIND = {m: _ENCODER_FEATURES[m.removesuffix(DEEP_SUFFIX)] for m in SYMBOLIC_MODELS}


def encoder_of(model: str) -> str:
    """The encoder a model is built on (and pretrained as): `s1_deep` -> `s1`; other names unchanged."""
    return model.removesuffix(DEEP_SUFFIX) if model in SYMBOLIC_MODELS else model


def build_network(model: str, meta: dict[str, Any], settings: FitSettings) -> nn.Module:
    """Build the encoder of `model` sized by the feature store's `meta` and the settings.

    Symbolic encoders are wrapped in `WithStatistics` when `symbolic.stats_side_input` is set and
    the feature store carries statistics (pretrained weights then load into `.base`); the audio
    probe likewise with `audio.stats_side_input`, on its frames' pooled statistics.
    """
    if model == "baseline_blend":
        raise ConfigError("baseline_blend is built by build_wide_part (it has no encoder)")
    net = build_encoder(encoder_of(model), meta, settings)
    if model in SYMBOLIC_ENCODERS and settings.need("symbolic").stats_side_input and meta.get("n_stats"):
        net = _with_statistics(net, "symbolic", meta, settings)
    elif is_probe(model) and settings.need("audio").stats_side_input and meta.get("n_stats"):
        # The frames' pooled statistics (training/data.py): the probe starts from the ridge probe.
        net = _with_statistics(net, "audio", meta, settings)
    return net


def _with_statistics(base: nn.Module, track: str, meta: dict[str, Any], settings: FitSettings) -> nn.Module:
    """`base` wrapped in the wide & deep side input of `track` (networks/side_input.WithStatistics)."""
    from pianoeval.networks.side_input import WithStatistics

    if track == "audio":
        # The audio rule is not given the symbolic section.
        return WithStatistics(base, int(meta["n_stats"]), dropout=settings.need("audio").dropout)
    from pianoeval.core.constants import ALL_STAT_NAMES, SCORE_COLUMNS

    sym: SymbolicSettings = settings.need("symbolic")
    full = int(meta["n_stats"]) == len(ALL_STAT_NAMES)
    return WithStatistics(
        base,
        int(meta["n_stats"]),
        dropout=sym.dropout,
        score_columns=SCORE_COLUMNS if full else None,
        score_dropout=sym.score_dropout,
        transcribed_flag=bool(meta.get("transcribed_views")),
    )


def build_wide_part(track: str, meta: dict[str, Any], settings: FitSettings) -> nn.Module:
    """`baseline_blend`'s network: the wide & deep side input of `track` around no encoder, so that
    once `fit.init_wide_part` has fitted it, its scores are exactly the wide part the encoders start
    from (same class, same fit, same dev-chosen ridge/trees blend)."""
    if not meta.get("n_stats"):
        raise ConfigError("baseline_blend needs statistics: train it on the stats features (symbolic) or frames")
    from pianoeval.networks.side_input import NoEncoder

    return _with_statistics(NoEncoder(), track, meta, settings)


def build_encoder(model: str, meta: dict[str, Any], settings: FitSettings) -> nn.Module:
    """The bare encoder of `model`, without side inputs (what pretraining objectives wrap)."""
    if model in SYMBOLIC_MODELS:
        return _symbolic_encoder(model, meta, settings.need("symbolic"))
    if model in AUDIO_TRACK_MODELS:
        from pianoeval.audio.models import AudioScoreNetwork

        aud: AudioSettings = settings.need("audio")
        common = {"hidden": aud.hidden, "context_layers": aud.context_layers, "heads": aud.heads}
        if not aud.live_backbone(model):
            # A frozen backbone is cheapest run once by the embed rule: train on its cached frames.
            return AudioScoreNetwork(in_dim=meta["dim"], **common)
        return AudioScoreNetwork(
            backbone=build_audio_backbone(aud.backbone, settings.backbone),
            hidden_layers=aud.hidden_layers,
            gradient_checkpointing=aud.gradient_checkpointing,
            **common,
        )
    if model in AUDIO_MODELS:
        from pianoeval.audio.encoders import EmbeddingSequenceEncoder

        return EmbeddingSequenceEncoder(in_dim=meta["dim"], hidden=settings.need("audio").hidden)
    raise ConfigError(f"unknown model {model!r}; known: {', '.join(SYMBOLIC_MODELS + AUDIO_MODELS + BASELINES)}")


def _symbolic_encoder(model: str, meta: dict[str, Any], sym: SymbolicSettings) -> nn.Module:
    """The bare symbolic encoder `model` (s1-s3), sized by the feature store's `meta` and `symbolic`."""
    if model == "s1":
        from pianoeval.symbolic.networks import REMITransformer

        return REMITransformer(
            vocab_size=meta["vocab_size"],
            pad_token_id=meta["pad_token_id"],
            hidden=sym.hidden,
            layers=sym.layers,
            heads=sym.heads,
            ff=2 * sym.hidden,
            dropout=sym.dropout,
            max_len=meta["max_seq_len"] + 8,
            pooling=sym.pooling,
        )
    if model == "s2":
        from pianoeval.symbolic.networks import NoteGAT

        return NoteGAT(
            in_features=len(meta["node_features"]),
            edge_dim=len(meta["edge_types"]),
            hidden=sym.hidden,
            layers=sym.layers,
            heads=sym.heads,
            dropout=sym.dropout,
            pooling=sym.pooling,
        )
    if model == "s3":
        from pianoeval.symbolic.networks import MultiScaleCurveEncoder

        return MultiScaleCurveEncoder(
            in_channels=meta["n_features"],
            hidden=sym.hidden,
            layers=max(1, sym.layers - 1),
            heads=sym.heads,
            dropout=sym.dropout,
            pooling=sym.pooling,
            score_channels=meta.get("score_channels"),
            score_dropout=sym.score_dropout,
        )
    raise ConfigError(f"unknown symbolic model {model!r}; known: {', '.join(SYMBOLIC_MODELS)}")


def is_probe(model: str) -> bool:
    """Whether `model` is an attention-pooled probe on a frozen backbone's cached frames."""
    return model == "probe" or model in PROBE_BACKBONES


def audio_backbone(model: str, configured: str) -> str:
    """The backbone whose frames `model` reads: its own for `probe_<backbone>`, else `configured`
    (`audio.backbone`: the probe, the audio baselines, and a1-a3, live or on cached frames)."""
    return PROBE_BACKBONES.get(model, configured)


def build_audio_backbone(name: str, settings: BackboneSettings) -> nn.Module:
    """Backbone `name` as the settings ask (MuQ: released weights, or the small random-weight one),
    averaging `audio.hidden_layers` (numbers 1..N; null = its default, MuQ: the top 4) by default."""
    from pianoeval.audio.backbones import build_backbone, muq_small_config

    if name != "muq":
        backbone = build_backbone(name)
    elif settings.muq_pretrained:
        backbone = build_backbone("muq", name_or_path=settings.muq_name_or_path)
    else:
        # Seeded by the global seed so the embed rule and every fold build the same random weights.
        backbone = build_backbone("muq", config=muq_small_config(**settings.muq_small), seed=settings.seed)
    # The embed rule, the robustness check and the live networks then all read the same layers;
    # audio.hidden_layers names layers of audio.backbone, another backbone (probe_<name>) keeps its default.
    backbone.set_probe_layers(settings.hidden_layers if name == settings.backbone else None)
    return backbone


def backbone_fingerprint(name: str, settings: BackboneSettings) -> str:
    """The backbone settings that change its embeddings (for cache keys); empty for fixed backbones."""
    if name != "muq":
        return ""
    if settings.muq_pretrained:
        return f"pretrained={settings.muq_name_or_path}"
    small = ",".join(f"{k}={v}" for k, v in sorted(settings.muq_small.items()))
    return f"small({small}),seed={settings.seed}"


def build_module(
    model: str,
    net: nn.Module,
    settings: FitSettings,
    label_mean: list[float] | None,
    stats_scale: tuple[list[float], list[float]] | None = None,
) -> Any:
    """The LightningModule that trains `net` for `model`: A1-A3's own modules, else PerformanceModule.

    Built before any state is loaded: A1/A2 add LoRA adapters to the backbone in their constructor.
    """
    training: TrainingSettings = settings.need("training")
    if model in AUDIO_TRACK_MODELS:
        if training.lr_schedule != "epoch_cosine":
            # A1-A3's modules keep their own per-epoch cosine (A2 restarts it after its self-supervised stage).
            raise ConfigError(
                f"{model}: training.lr_schedule {training.lr_schedule!r} applies to the other models only"
            )
        return _audio_module(model, net, training, settings.need("audio"), label_mean)
    from pianoeval.training.module import PerformanceModule

    return PerformanceModule(
        net,
        lr=training.lr,
        weight_decay=training.weight_decay,
        loss_weights=training.loss_weights,
        max_epochs=training.max_epochs,
        label_mean=label_mean,
        encoder_lr_scale=training.encoder_lr_scale,
        encoder_frozen_epochs=training.encoder_frozen_epochs,
        lr_schedule=training.lr_schedule,
        warmup_epochs=training.warmup_epochs,
        stats_scale=stats_scale if training.loss_weights.get("statistics", 0.0) > 0 else None,
    )


def _audio_module(
    model: str, net: nn.Module, training: TrainingSettings, aud: AudioSettings, label_mean: list[float] | None
) -> Any:
    """A1-A3's LightningModule around `net`, from the training and audio settings."""
    from pianoeval.training.audio_modules import MuQFullUnfreezeModel, MuQLoRAModel, MuQStagedModel

    w = aud.loss_weights
    shared: dict[str, Any] = {
        "lr": training.lr,
        "backbone_lr": aud.backbone_lr,
        "weight_decay": training.weight_decay,
        "w_rank": w["ranking"],
        "w_contrastive": w["contrastive"],
        "w_reg": w["regression"],
        "w_inv": w["invariance"],
        "max_epochs": training.max_epochs,
        "label_mean": label_mean,
    }
    lora = {
        "lora_rank": aud.lora_rank if aud.live_backbone(model) else 0,
        "lora_alpha": aud.lora_alpha,
        "lora_layers": aud.lora_layers,
    }
    if model == "a1":
        return MuQLoRAModel(net, **lora, **shared)
    if model == "a2":
        if aud.self_supervised_epochs >= training.max_epochs:
            raise ConfigError(
                f"a2: audio.self_supervised_epochs ({aud.self_supervised_epochs}) leaves no supervised epoch "
                f"within training.max_epochs ({training.max_epochs}); lower it or raise max_epochs"
            )
        return MuQStagedModel(
            net,
            self_supervised_epochs=aud.self_supervised_epochs,
            ssl_w_contrastive=w["ssl_contrastive"],
            ssl_w_inv=w["ssl_invariance"],
            **lora,
            **shared,
        )
    schedule = aud.unfreeze_schedule
    return MuQFullUnfreezeModel(
        net,
        unfreeze_schedule={int(k): list(v) for k, v in schedule.items()} if schedule is not None else None,
        layer_lr_decay=aud.layer_lr_decay,
        **shared,
    )


def build_frozen_backbone(name: str, settings: BackboneSettings) -> Any:
    """The frozen backbone `name` in eval mode, as `settings` ask (MuQ: released or small random
    weights; its frames the mean of `audio.hidden_layers`, MuQ's default layers 9-12 of 12)."""
    backbone = build_audio_backbone(name, settings)
    backbone.eval()
    backbone.requires_grad_(False)
    return backbone
