"""Model names → networks: the one place that knows which encoder and features a model uses."""

from __future__ import annotations

from typing import Any

from torch import nn

from pianoeval.errors import ConfigError

SYMBOLIC_MODELS = ("s1", "s2", "s3")
AUDIO_MODELS = ("probe",)
BASELINES = ("baseline_mean", "baseline_ridge", "baseline_segment_mean")


def build_network(model: str, meta: dict[str, Any], config: dict[str, Any]) -> nn.Module:
    """Build the encoder of `model` sized by the feature store's `meta` and the config."""
    sym = config["symbolic"]
    if model == "s1":
        from pianoeval.symbolic.networks import REMITransformer

        return REMITransformer(
            vocab_size=meta["vocab_size"],
            pad_token_id=meta["pad_token_id"],
            hidden=sym["hidden"],
            layers=sym["layers"],
            heads=sym["heads"],
            ff=2 * sym["hidden"],
            dropout=sym["dropout"],
            max_len=meta["max_seq_len"] + 8,
        )
    if model == "s2":
        from pianoeval.symbolic.networks import NoteGAT

        return NoteGAT(
            in_features=len(meta["node_features"]),
            edge_dim=len(meta["edge_types"]),
            hidden=sym["hidden"],
            layers=sym["layers"],
            heads=sym["heads"],
            dropout=sym["dropout"],
        )
    if model == "s3":
        from pianoeval.symbolic.networks import MultiScaleCurveEncoder

        return MultiScaleCurveEncoder(
            in_channels=meta["n_features"],
            hidden=sym["hidden"],
            layers=max(1, sym["layers"] - 1),
            heads=sym["heads"],
            dropout=sym["dropout"],
        )
    if model in AUDIO_MODELS:
        from pianoeval.audio.models import EmbeddingSequenceEncoder

        return EmbeddingSequenceEncoder(in_dim=meta["dim"], hidden=config["audio"]["hidden"])
    raise ConfigError(f"unknown model {model!r}; known: {', '.join(SYMBOLIC_MODELS + AUDIO_MODELS + BASELINES)}")
