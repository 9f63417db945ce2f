"""Train one model on one fold and write metrics, predictions, embeddings and provenance."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pianoeval.core.device import resolve_device
from pianoeval.core.io import read_json
from pianoeval.training.baselines import baseline_predict
from pianoeval.training.data import load_feature_store, load_fold_data
from pianoeval.training.fit import batch_settings, fold_seed, train_network
from pianoeval.training.outputs import write_fold_outputs
from pianoeval.training.predict import predict_network

log = logging.getLogger(__name__)


def waveform_spec(model: str, config: dict[str, Any], manifest: pd.DataFrame, seed: int) -> Any:
    """How `model` reads waveforms (`WaveformSpec`), or None when it trains on cached frames."""
    from pianoeval.training.audio_data import WaveformSpec
    from pianoeval.training.registry import uses_live_backbone

    if not uses_live_backbone(model, config):
        return None
    aud = config["audio"]
    w = aud["loss_weights"]
    # The augmented view costs a second backbone pass: only when a loss term reads it.
    augment = w["invariance"] > 0 or (model == "a2" and w["ssl_invariance"] > 0)
    rows = manifest[manifest["audio_path"].notna()]
    return WaveformSpec(
        audio_paths=dict(zip(rows["segment_id"], rows["audio_path"], strict=True)),
        sample_rate=int(config["render"]["sample_rate"]),
        clip_seconds=float(aud["clip_seconds"]),
        augment=bool(augment),
        augment_prob=float(aud["augment_prob"]),
        seed=seed,
    )


def run_train(
    track: str,
    model: str,
    config: dict[str, Any],
    fold: int,
    manifest_path: Path,
    folds_path: Path,
    features_path: Path,
    out_dir: Path,
    pretrained: Path | None = None,
    devices: int = 1,
    unlabelled_manifest: Path | None = None,
) -> dict[str, Any]:
    """Train `model` on fold `fold` on `devices` devices (DDP when more than 1); write metrics.json,
    predictions.csv, embeddings.pt, provenance. A DDP worker process returns {} and writes nothing.
    `unlabelled_manifest` (a2 only): rendered unlabelled performances for its self-supervised stage."""
    import lightning as L

    from pianoeval.core.errors import ConfigError
    from pianoeval.core.provenance import write_provenance
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.registry import AUDIO_MODELS, BASELINES, SYMBOLIC_MODELS

    start = time.perf_counter()
    # Baselines run on either track: the symbolic statistics, or the audio frames' pooled statistics.
    known = (SYMBOLIC_MODELS if track == "symbolic" else AUDIO_MODELS) + BASELINES
    if model not in known:
        raise ConfigError(f"unknown {track} model {model!r}; known: {', '.join(known)}")
    seed = fold_seed(config, fold)
    L.seed_everything(seed, workers=True, verbose=False)
    # Inputs are read and checked before anything is written: bad input leaves no output folder.
    store = load_feature_store(features_path)
    manifest = read_manifest(manifest_path)
    data = load_fold_data(store, manifest, read_json(folds_path), fold, manifest_path=manifest_path)
    if track == "audio":
        data.waveforms = waveform_spec(model, config, manifest, seed)
    if unlabelled_manifest is not None:
        from pianoeval.training.audio_data import load_unlabelled

        folds = read_json(folds_path)
        data.unlabelled = load_unlabelled(model, config, unlabelled_manifest, manifest, folds, fold, data.waveforms)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(
        out_dir,
        config,
        seed,
        track=track,
        model=model,
        fold=fold,
        pretrained=str(pretrained) if pretrained else None,
    )
    info: dict[str, Any] = {}
    if model.startswith("baseline_"):
        preds = baseline_predict(model, data)
        embs = None
    else:
        module, info = train_network(model, config, data, out_dir, seed, pretrained, devices)
        if module is None:
            return {}
        if data.unlabelled is not None:
            info["unlabelled"] = data.unlabelled.stats
        # On the device the job reserved (the GPU it trained on), in bounded batches.
        preds, embs = predict_network(module, data, batch_settings(model, config)[0], resolve_device(devices))
    metrics = write_fold_outputs(
        data,
        preds,
        embs,
        out_dir,
        {"track": track, "model": model, "fold": fold, "seed": seed, **info},
        start,
    )
    log.info(
        "%s/%s fold %d: pairwise %.3f, R2 %.3f (%.0f s)",
        track,
        model,
        fold,
        metrics["pairwise_acc"] or float("nan"),
        metrics["r2"],
        metrics["wall_s"],
    )
    return metrics
