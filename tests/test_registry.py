"""The model registry builds every registered model, with its LightningModule, from the settings its rule
gives it: the demo config (config/config.yaml) cut to each train rule's sections, as the workflow runs it.

Why: a merge once left every symbolic model unbuildable (a schema key without its settings field) and no
fast test built one; the training tests each build a few models only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pianoeval.core.config import load_config, write_resolved
from pianoeval.core.errors import ConfigError
from pianoeval.core.settings import FeaturesSettings, FitSettings
from pianoeval.networks.fusion import build_fusion
from pianoeval.networks.side_input import WithStatistics
from pianoeval.symbolic.featurize import kind_meta
from pianoeval.training.registry import (
    AUDIO_MODELS,
    AUDIO_TRACK_MODELS,
    FEATURE_KIND,
    SYMBOLIC_ENCODERS,
    SYMBOLIC_MODELS,
    build_encoder,
    build_module,
    build_network,
    build_wide_part,
    encoder_of,
)

DEMO = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
# The sections each rule is given (rules/common.smk: TRAIN_SECTIONS, and the fuse rule's config_for).
SECTIONS = {
    "symbolic": ("features", "symbolic", "training", "seed"),
    "audio": ("audio", "render", "training", "seed"),
    "fusion": ("fusion", "training", "seed"),
}
# A1-A3 fine-tune a backbone with blocks: the demo's log-mel has none, so a small random MuQ (audio_cpu).
SMALL_MUQ = {"audio": {"backbone": "muq", "muq_pretrained": False}}
MODELS = [("symbolic", m) for m in SYMBOLIC_MODELS] + [("audio", m) for m in AUDIO_MODELS]
FUSIONS = ["f1", "f2", "f3", "f1_score", "f2_score", "f3_score"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FitSettings]:
    """{track: the FitSettings its rule's config gives}, from the demo config."""
    config = load_config(DEMO, overrides=SMALL_MUQ)
    folder = tmp_path_factory.mktemp("rules")
    return {
        track: FitSettings.from_config(load_config(write_resolved(config, folder / track, sections)))
        for track, sections in SECTIONS.items()
    }


def _meta(track: str, model: str, settings: FitSettings) -> dict:
    """What a feature store tells a model of its inputs (a symbolic kind's meta; the audio frames' width)."""
    if track == "symbolic":
        return kind_meta(FEATURE_KIND[model], settings.features)
    return {"dim": 16, "n_stats": 8}


@pytest.mark.parametrize(("track", "model"), MODELS, ids=[m for _, m in MODELS])
def test_every_model_builds_from_its_rules_settings(track: str, model: str, settings: dict[str, FitSettings]) -> None:
    s = settings[track]
    meta = _meta(track, model, s)
    net = build_network(model, meta, s)
    module = build_module(model, net, s, label_mean=None)
    assert module.encoder is net  # the LightningModule trains this very network
    assert (model in SYMBOLIC_ENCODERS or model.startswith("probe")) == isinstance(net, WithStatistics)
    # The bare encoder is as wide as its section says.
    width = s.symbolic.hidden if track == "symbolic" else s.audio.hidden
    assert build_encoder(encoder_of(model), meta, s).hidden_size == width
    if model in AUDIO_TRACK_MODELS:
        assert net.backbone is not None and type(module).__name__.startswith("MuQ")


@pytest.mark.parametrize("track", ["symbolic", "audio"])
def test_the_wide_part_alone_builds(track: str, settings: dict[str, FitSettings]) -> None:
    s = settings[track]
    meta = _meta(track, "s3" if track == "symbolic" else "probe", s)
    module = build_module("baseline_blend", build_wide_part(track, meta, s), s, label_mean=None)
    assert isinstance(module.encoder, WithStatistics)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_builds(fusion: str, settings: dict[str, FitSettings]) -> None:
    s = settings["fusion"]
    net = build_fusion(fusion, audio_dim=16, symbolic_dim=24, hidden=s.fusion.hidden)
    assert build_module(fusion, net, s, label_mean=None).encoder is net


def test_a_section_the_rule_was_not_given_is_a_config_error(settings: dict[str, FitSettings]) -> None:
    audio = settings["audio"]
    assert audio.symbolic is None and audio.features is None
    with pytest.raises(ConfigError, match="'symbolic' is not among"):
        build_network("s3", kind_meta("curves", FeaturesSettings(max_seq_len=64, frame_rate=20)), audio)


def test_s3_knows_its_score_curves(settings: dict[str, FitSettings]) -> None:
    """S3 is built knowing which curves are score-aligned, so that it drops them as the statistics are."""
    from pianoeval.symbolic.features import FEATURE_NAMES, SCORE_CURVE_NAMES

    s = settings["symbolic"]
    encoder = build_encoder("s3", _meta("symbolic", "s3", s), s)
    start, stop = encoder.score_channels
    assert FEATURE_NAMES[start:stop] == SCORE_CURVE_NAMES
    assert encoder.score_dropout == s.symbolic.score_dropout > 0
