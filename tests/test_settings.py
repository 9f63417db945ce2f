"""core.settings: each typed section has exactly the keys its schema section has."""

import dataclasses
from pathlib import Path

import pytest

from pianoeval.core import settings
from pianoeval.core.config import load_config, load_schema, validate_config, write_resolved
from pianoeval.core.errors import ConfigError

SECTIONS = [
    cls
    for cls in vars(settings).values()
    if isinstance(cls, type) and issubclass(cls, settings.Section) and cls is not settings.Section
]


def test_every_typed_section_is_found() -> None:
    assert {cls.NAME for cls in SECTIONS} >= {
        "training",
        "symbolic",
        "audio",
        "fusion",
        "stacking",
        "features",
        "compare",
        "robustness",
        "render",
        "data",
        "transcription",
        "folds",
        "unlabelled_audio",
        "persist",
    }


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda cls: cls.NAME)
def test_section_fields_are_the_schema_keys(cls: type) -> None:
    """A key added to the schema without its field (or the reverse) would make every run fail here."""
    schema_keys = set(load_schema()["properties"][cls.NAME]["properties"])
    assert {f.name for f in dataclasses.fields(cls)} == schema_keys
    cls.from_config(validate_config({}))  # the defaults build


def test_render_settings_read_the_render_rules_slice(tmp_path: Path) -> None:
    """The render rules' config slice reads into RenderSettings; another rule's slice, or a key the schema
    does not have, is a one-line ConfigError."""
    config = validate_config({"render": {"sample_rate": 16_000, "max_seconds": 2.5}})
    rule = load_config(write_resolved(config, tmp_path, ("render", "max_skipped_fraction")))
    render = settings.RenderSettings.from_config(rule)
    assert (render.sample_rate, render.max_seconds, render.soundfont, render.enabled) == (16_000, 2.5, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        render.sample_rate = 44_100  # type: ignore[misc]
    other = load_config(write_resolved(config, tmp_path, ("features",)))
    with pytest.raises(ConfigError, match="config section 'render' is not among"):
        settings.RenderSettings.from_config(other)
    with pytest.raises(ConfigError, match="config section render: unknown rate"):
        settings.RenderSettings.from_config({"render": {**config["render"], "rate": 16_000}})


def test_embed_settings_read_the_embed_rules_keys(tmp_path: Path) -> None:
    """The embed rule is given a few keys of render and audio: EmbedSettings reads exactly those (another
    audio key is not needed), and a slice without them is a one-line ConfigError."""
    config = validate_config(
        {"audio": {"embed_per_group": 3, "backbone": "logmel"}, "render": {"sample_rate": 16_000}, "seed": 7}
    )
    keys = ("render.sample_rate", "audio.embed_per_group", *(f"audio.{k}" for k in settings.BackboneSettings.KEYS))
    rule = load_config(write_resolved(config, tmp_path, (*keys, "seed")))
    embed = settings.EmbedSettings.from_config(rule)
    assert (embed.per_group, embed.sample_rate, embed.backbone.backbone, embed.backbone.seed) == (
        3,
        16_000,
        "logmel",
        7,
    )
    no_render = load_config(write_resolved(config, tmp_path, (*keys[1:], "seed")))
    with pytest.raises(ConfigError, match="'render' is not among"):
        settings.EmbedSettings.from_config(no_render)
