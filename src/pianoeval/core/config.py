"""Load, validate and resolve the pipeline configuration against its JSON schema (with defaults)."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from pianoeval.core.constants import SCORE_SUFFIX, SYMBOLIC_ENCODERS
from pianoeval.core.errors import ConfigError

_SCHEMA_NAME = "config.schema.yaml"
# The list of sections in a rule's resolved config (write_resolved); not a config key.
SECTIONS_KEY = "_sections"


def schema_path() -> Path:
    """Return the config schema: shipped in the package (wheel) or in the repo's config/ folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here / _SCHEMA_NAME, here.parents[2] / "config" / _SCHEMA_NAME):
        if candidate.is_file():
            return candidate
    raise ConfigError("config schema not found; reinstall pianoeval", here / _SCHEMA_NAME)


def safe_yaml(text: str) -> Any:
    """`yaml.safe_load` through libyaml's C parser when PyYAML has it (several times faster on the
    schema: part of `pianoeval score`'s start-up), else the pure-Python one."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON schema (YAML) as a dict, read once per process (read-only: callers copy what they change)."""
    return safe_yaml(schema_path().read_text())


def fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `config` with every missing key set to its schema default, recursively."""
    out = copy.deepcopy(config) if config is not None else {}
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and sub.get("type") == "object":
            out[key] = fill_defaults(out[key], sub)
    return out


def validate_config(config: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """Fill defaults and validate; raise ConfigError naming the file and the first bad key."""
    import jsonschema

    schema = load_schema()
    resolved = fill_defaults(config or {}, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"config key {where}: {err.message}", source)
    return resolved


def written_config(text: str, source: str | Path) -> dict[str, Any]:
    """A config the pipeline wrote after validating it (a fold's config.yaml): parsed, defaults filled,
    not validated again. Spares `pianoeval score` jsonschema's import (0.1 s of a 2 s MIDI score); a
    bundle's files are checksummed (evaluation/bundle.py), and a checkpoint that does not fit its config
    fails on loading. ConfigError if it is not a YAML mapping."""
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML ({exc})", source) from exc
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of keys to values", source)
    return fill_defaults(data, load_schema())


def load_config(*paths: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge YAML config files (later wins) and overrides, then validate; return the resolved dict.

    A rule's config (written by `write_resolved`, with its `_sections` list) comes back as a
    `RuleConfig` holding only those sections: reading any other is a ConfigError, not a silent default.
    """
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config file not found", path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML ({exc})", path) from exc
        if not isinstance(data, dict):
            raise ConfigError("config must be a mapping of keys to values", path)
        merged = deep_merge(merged, data)
    if overrides:
        merged = deep_merge(merged, overrides)
    sections = merged.pop(SECTIONS_KEY, None)
    resolved = validate_config(merged, paths[-1] if paths else None)
    if sections is None:
        return resolved
    source = str(paths[-1]) if paths else None
    given: dict[str, Any] = {}
    for name, keys in _parse_sections(sections).items():
        if name not in resolved:
            continue
        given[name] = resolved[name] if keys is None else RuleSection(name, resolved[name], keys, source)
    return RuleConfig(given, source)


def _parse_sections(specs: list[str] | tuple[str, ...]) -> dict[str, list[str] | None]:
    """{section: None (the whole section) or the keys given} from specs like "seed", "audio.backbone"."""
    out: dict[str, list[str] | None] = {}
    for spec in specs:
        name, _, key = spec.partition(".")
        if not key or out.get(name, []) is None:
            out[name] = None  # a whole section covers any of its keys
        else:
            out.setdefault(name, []).append(key)
    return out


class RuleConfig(dict):
    """The config sections one rule was given: reading a section it was not given raises ConfigError.

    Each rule's content-addressed config holds only the sections it reads, so that a change elsewhere
    reruns nothing; a step that reads more would silently get defaults. This makes that an error.
    """

    def __init__(self, sections: dict[str, Any], source: str | None = None) -> None:
        super().__init__(sections)
        self.source = source

    def __missing__(self, key: str) -> Any:
        raise ConfigError(
            f"config section {key!r} is not among this rule's ({', '.join(self) or 'none'}); "
            "add it to the rule's config_for(...) in rules/",
            self.source,
        )

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any], str | None]]:
        return type(self), (dict(self), self.source)


class RuleSection(dict):
    """The keys of one config section a rule was given (`config_for("audio.backbone", ...)`): reading
    another key of that section raises ConfigError, as reading another section does (RuleConfig)."""

    def __init__(self, name: str, section: dict[str, Any], keys: list[str], source: str | None = None) -> None:
        super().__init__({k: section[k] for k in keys if k in section})
        self.name, self.given, self.source = name, list(keys), source

    def __missing__(self, key: str) -> Any:
        if key in self.given:
            raise KeyError(key)
        raise ConfigError(
            f"config key {self.name}.{key} is not among this rule's ({', '.join(sorted(self.given))}); "
            "add it to the rule's config_for(...) in rules/",
            self.source,
        )

    def get(self, key: str, default: Any = None) -> Any:
        """As dict.get for a key the rule was given; ConfigError for any other (no silent default)."""
        if key not in self.given:
            self.__missing__(key)
        return super().get(key, default)

    def __reduce__(self) -> tuple[type, tuple[str, dict[str, Any], list[str], str | None]]:
        return type(self), (self.name, dict(self), self.given, self.source)


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """A plain dict copy of a config (RuleConfig and RuleSection included), e.g. for yaml.safe_dump."""
    return {k: plain_config(v) if isinstance(v, dict) else copy.deepcopy(v) for k, v in config.items()}


def deep_merge(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `other` into a copy of `base` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_digest(config: dict[str, Any]) -> str:
    """A short stable hash of a config dict (key order independent)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def budget_key(model: str) -> str:
    """`model`'s key in `training.by_model`: itself, or a fusion variant's (`f1` for `f1_score`)."""
    return model.removesuffix(SCORE_SUFFIX)


def for_model(config: dict[str, Any], model: str) -> dict[str, Any]:
    """`config` as `model` trains with it: `training.by_model[model]` merged into `training`, whose
    `by_model` is then empty (so two models with the same budget share a resolved config), and
    `symbolic.deep_start` false where it does not apply (a deep-only model is not rerun when it turns on),
    and `symbolic.pooling` at its default for models that pool nothing (the baselines)."""
    out = dict(config)
    training = config.get("training")
    if isinstance(training, dict) and "by_model" in training:
        merged = {k: v for k, v in training.items() if k != "by_model"}
        merged.update(copy.deepcopy(training["by_model"].get(budget_key(model), {})))
        merged["by_model"] = {}
        out["training"] = merged
    symbolic = config.get("symbolic")
    if isinstance(symbolic, dict) and symbolic.get("deep_start") and model not in SYMBOLIC_ENCODERS:
        out["symbolic"] = {**symbolic, "deep_start": False}
    # Only the encoders pool (s1-s3 and their deep-only forms): a baseline is not rerun when it changes.
    if isinstance(symbolic, dict) and "pooling" in symbolic and model.removesuffix("_deep") not in SYMBOLIC_ENCODERS:
        out["symbolic"] = {**out["symbolic"], "pooling": "attention"}
    return out


def write_resolved(
    config: dict[str, Any], folder: str | Path, sections: tuple[str, ...], model: str | None = None
) -> Path:
    """Write `sections` of a resolved config to `folder/<digest>.yaml` (idempotent); return the path.

    A section is named whole (`"audio"`) or by the keys a rule reads (`"audio.backbone"`): a rule that
    reads three keys of a section then reruns when one of those changes, not when any of the section does.

    The file name is content-addressed so a rule that receives it as a parameter reruns exactly
    when the sections it depends on change. The file lists its sections (`_sections`): `load_config`
    then refuses any other section (RuleConfig), so a rule cannot read a setting its digest misses.
    With `model`, `training` is that model's (`for_model`): another model's budget is not in its digest.
    """
    from pianoeval.core.io import atomic_path

    if model is not None:
        config = for_model(config, model)
    subset: dict[str, Any] = {}
    for name, keys in _parse_sections(sections).items():
        if name in config:
            subset[name] = config[name] if keys is None else {k: config[name][k] for k in keys if k in config[name]}
    subset[SECTIONS_KEY] = sorted(sections)
    target = Path(folder) / f"{config_digest(subset)}.yaml"
    if not target.exists():
        with atomic_path(target) as tmp:
            tmp.write_text(yaml.safe_dump(subset, sort_keys=False))
    return target
