"""core.settings: each typed section has exactly the keys its schema section has."""

import dataclasses

import pytest

from pianoeval.core import settings
from pianoeval.core.config import load_schema, validate_config

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
    }


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda cls: cls.NAME)
def test_section_fields_are_the_schema_keys(cls: type) -> None:
    """A key added to the schema without its field (or the reverse) would make every run fail here."""
    schema_keys = set(load_schema()["properties"][cls.NAME]["properties"])
    assert {f.name for f in dataclasses.fields(cls)} == schema_keys
    cls.from_config(validate_config({}))  # the defaults build
