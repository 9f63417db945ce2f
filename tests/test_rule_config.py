"""A rule can be given some keys of a section: its digest then follows only those keys, and reading any
other key of that section is a one-line ConfigError, like reading a section it was not given."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from pianoeval.core.config import RuleSection, load_config, plain_config, validate_config, write_resolved
from pianoeval.core.errors import ConfigError

EMBED = ("render.sample_rate", "audio.backbone", "audio.hidden_layers", "seed")


def test_a_key_level_config_follows_only_its_keys(tmp_path: Path) -> None:
    config = validate_config({"audio": {"backbone": "logmel", "hidden": 16}})
    path = write_resolved(config, tmp_path, EMBED)
    # Another key of the section: the same file (nothing reruns); a given key: another file.
    assert write_resolved(validate_config({"audio": {"backbone": "logmel", "hidden": 24}}), tmp_path, EMBED) == path
    assert write_resolved(validate_config({"audio": {"backbone": "muq", "hidden": 16}}), tmp_path, EMBED) != path
    written = yaml.safe_load(path.read_text())
    assert set(written["audio"]) == {"backbone", "hidden_layers"} and set(written["render"]) == {"sample_rate"}


def test_a_whole_section_keeps_its_digest_and_covers_every_key(tmp_path: Path) -> None:
    config = validate_config({})
    whole = write_resolved(config, tmp_path, ("audio", "seed"))
    # Naming a key of a section given whole changes nothing that is read.
    assert yaml.safe_load(whole.read_text())["audio"] == config["audio"]
    loaded = load_config(write_resolved(config, tmp_path, ("audio", "audio.backbone", "seed")))
    assert not isinstance(loaded["audio"], RuleSection) and loaded["audio"] == config["audio"]


def test_reading_a_key_not_given_fails_in_one_line(tmp_path: Path) -> None:
    config = validate_config({"audio": {"backbone": "logmel"}})
    loaded = load_config(write_resolved(config, tmp_path, EMBED))
    assert (
        loaded["audio"]["backbone"] == "logmel" and loaded["render"]["sample_rate"] == config["render"]["sample_rate"]
    )
    for read in (lambda: loaded["audio"]["hidden"], lambda: loaded["audio"].get("hidden", 8)):
        with pytest.raises(ConfigError) as err:
            read()
        message = str(err.value)
        assert "config key audio.hidden is not among this rule's (backbone, hidden_layers)" in message
        assert "\n" not in message
    assert loaded["audio"].get("hidden_layers", "x") == config["audio"]["hidden_layers"]
    with pytest.raises(ConfigError, match="config section 'training' is not among"):
        loaded["training"]
    # Workers (DDP, process pools) get the same guard; provenance gets plain dicts.
    again = pickle.loads(pickle.dumps(loaded["audio"]))
    assert isinstance(again, RuleSection) and dict(again) == dict(loaded["audio"])
    with pytest.raises(ConfigError):
        again["hidden"]
    plain = plain_config(loaded)
    assert type(plain["audio"]) is dict and yaml.safe_load(yaml.safe_dump(plain)) == plain
