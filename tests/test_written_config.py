"""core.config.written_config: a config the pipeline wrote is read back with its defaults, without re-validation."""

import pytest
import yaml

from pianoeval.core.config import load_schema, validate_config, written_config
from pianoeval.core.errors import ConfigError


def test_written_config_equals_the_validated_one() -> None:
    config = validate_config({"symbolic": {"hidden": 32}, "training": {"max_epochs": 2}})
    assert written_config(yaml.safe_dump(config), "fold/config.yaml") == config
    partial = written_config("symbolic: {hidden: 32}\n", "fold/config.yaml")  # older file: defaults filled
    assert partial == validate_config({"symbolic": {"hidden": 32}})


@pytest.mark.parametrize("text", ["- a list\n", "key: [unclosed\n"])
def test_written_config_that_is_not_a_mapping_names_the_file(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        written_config(text, "fold_0/config.yaml")
    assert exc.value.path == "fold_0/config.yaml"


def test_schema_is_read_once() -> None:
    assert load_schema() is load_schema()
