"""One MIDI file to the feature item of a model family (tokens, graphs, curves, statistics), and what a
model needs to know about each feature kind."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pianoeval.core.errors import InputError

if TYPE_CHECKING:
    from pianoeval.core.settings import FeaturesSettings

log = logging.getLogger(__name__)


# Bump when a featurizer changes its output, so stale cache entries are not reused.
# 2: every kind also carries `stats` (the side input of the symbolic encoders).
# 3: `stats` adds the score-relative statistics (symbolic/score_stats.py) and their flag.
# 4: graphs are `symbolic.graph.NoteGraph`s (plain tensors), not torch_geometric `Data`.
FEATURIZER_VERSION = 4
# A kind whose own output changes from now on gets its own entry here (from FEATURIZER_VERSION + 1): its
# cache entries are rebuilt, the other kinds' are kept. (Curves 5, two voicing curves, was tried in issue
# 15's ninth pass and taken back: the 12 curves of version 4 are the current output again.)
# Curves 6: the score-aligned curves (features.SCORE_CURVE_NAMES), zeros without a score.
_KIND_VERSIONS: dict[str, int] = {"curves": 6}


def featurizer_version(kind: str) -> int:
    """The version of `kind`'s featurizer output (the cache keys of the feature and corpus stores)."""
    return _KIND_VERSIONS.get(kind, FEATURIZER_VERSION)


_TOKENIZER = None


def _tokenizer(max_seq_len: int):  # -> PianoTokenizer
    """One tokenizer per worker process (building the vocabulary is not free)."""
    global _TOKENIZER
    if _TOKENIZER is None or _TOKENIZER.max_seq_len != max_seq_len:
        from pianoeval.symbolic.tokenizer import PianoTokenizer

        _TOKENIZER = PianoTokenizer(max_seq_len=max_seq_len)
    return _TOKENIZER


def featurize_file(kind: str, path: str, features: FeaturesSettings, score_path: str | None = None) -> dict[str, Any]:
    """Compute the feature item of one MIDI file for `kind`; InputError if the file is unusable.

    `score_path`, the score MIDI the performance plays, adds the score-relative statistics (and, for
    curves, the score-aligned curves); a score that cannot be read or aligned leaves them at zero (with
    a warning), the performance is kept.
    """
    from pianoeval.data.midi import load_performance
    from pianoeval.symbolic.score_stats import match_score
    from pianoeval.symbolic.stats import performance_statistics

    if kind not in ("tokens", "graphs", "curves", "stats"):
        raise ValueError(f"unknown feature kind {kind!r}")
    perf = load_performance(path)
    score = None
    if score_path:
        try:
            score = load_performance(score_path)
        except InputError as exc:
            # The score is auxiliary: without it the performance keeps its own statistics and the
            # score part stays at zero (flag 0), as for a manifest row with no score.
            log.warning("%s: score statistics skipped: %s", path, exc)
    match = None
    if score is not None:
        try:
            match = match_score(perf, score)  # aligned once, for the statistics and the curves
        except InputError as exc:
            log.warning("%s: score statistics and curves skipped: %s", path, exc)
            score = None
    # Every kind carries the statistics: the ridge baseline's input and the encoders' side input.
    item: dict[str, Any] = {"stats": torch.from_numpy(performance_statistics(perf, score, match))}
    if kind == "tokens":
        ids = _tokenizer(features.max_seq_len).encode(path)
        item["input_ids"] = torch.tensor(ids, dtype=torch.long)
    elif kind == "graphs":
        from pianoeval.symbolic.graph import build_note_graph

        item["graph"] = build_note_graph(perf)
    elif kind == "curves":
        from pianoeval.symbolic.features import extract_continuous_features

        curves = extract_continuous_features(perf, features.frame_rate, score, match)
        item["curves"] = torch.from_numpy(np.ascontiguousarray(curves, dtype=np.float32))
    return item


def featurize_performance(kind: str, perf: Any, features: FeaturesSettings) -> dict[str, Any]:
    """The encoder input of a `Performance` for `kind` (tokens, graphs, curves), without statistics:
    what self-supervised pretraining reads (a corpus window, augmented in memory)."""
    if kind == "tokens":
        ids = _tokenizer(features.max_seq_len).encode(perf)
        return {"input_ids": torch.tensor(ids, dtype=torch.long)}
    if kind == "graphs":
        from pianoeval.symbolic.graph import build_note_graph

        return {"graph": build_note_graph(perf)}
    if kind == "curves":
        from pianoeval.symbolic.features import extract_continuous_features

        curves = extract_continuous_features(perf, frame_rate=features.frame_rate)
        return {"curves": torch.from_numpy(np.ascontiguousarray(curves, dtype=np.float32))}
    raise ValueError(f"feature kind {kind!r} has no encoder input")


def curves_for(curves: torch.Tensor, trained_names: list[str] | tuple[str, ...], model: str) -> torch.Tensor:
    """`curves [T, len(FEATURE_NAMES)]` cut to the curves a model was trained on, in its order (its
    meta's `feature_names`): a model trained before curves were added still scores with this version.
    ConfigError, naming `model`, if it needs a curve this version does not compute."""
    from pianoeval.core.errors import ConfigError
    from pianoeval.symbolic.features import FEATURE_NAMES

    if tuple(trained_names) == FEATURE_NAMES:
        return curves
    missing = [n for n in trained_names if n not in FEATURE_NAMES]
    if missing:
        raise ConfigError(
            f"{model} was trained on curves this version does not compute ({', '.join(missing)}); retrain it"
        )
    return curves[:, [FEATURE_NAMES.index(n) for n in trained_names]]


def kind_meta(kind: str, features: FeaturesSettings) -> dict[str, Any]:
    """Facts a model needs about a feature kind (vocabulary, channel count, statistics count)."""
    from pianoeval.core.constants import ALL_STAT_NAMES

    return {**_kind_meta(kind, features), "n_stats": len(ALL_STAT_NAMES), "stat_names": list(ALL_STAT_NAMES)}


def _kind_meta(kind: str, features: FeaturesSettings) -> dict[str, Any]:
    """The kind-specific part of kind_meta."""
    if kind == "tokens":
        tok = _tokenizer(features.max_seq_len)
        return {
            "vocab_size": tok.vocab_size,
            "pad_token_id": tok.pad_token_id,
            "mask_token_id": tok.mask_token_id,
            "max_seq_len": features.max_seq_len,
        }
    if kind == "curves":
        from pianoeval.symbolic.features import FEATURE_NAMES, SCORE_CURVE_NAMES

        start = FEATURE_NAMES.index(SCORE_CURVE_NAMES[0])
        return {
            "feature_names": list(FEATURE_NAMES),
            "n_features": len(FEATURE_NAMES),
            "score_channels": [start, start + len(SCORE_CURVE_NAMES)],
        }
    if kind == "graphs":
        from pianoeval.symbolic.graph import EDGE_TYPES, NODE_FEATURES

        return {"node_features": list(NODE_FEATURES), "edge_types": list(EDGE_TYPES)}
    from pianoeval.core.constants import ALL_STAT_NAMES

    return {"feature_names": list(ALL_STAT_NAMES), "n_features": len(ALL_STAT_NAMES)}
