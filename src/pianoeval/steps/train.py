"""Train one model on one fold and write metrics, predictions, embeddings and provenance."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pianoeval.core.settings import FitSettings
from pianoeval.data.folds import read_folds
from pianoeval.training.audio_data import waveform_spec
from pianoeval.training.data import load_feature_store, load_fold_data
from pianoeval.training.fit import fit_predict, fold_seed
from pianoeval.training.outputs import write_fold_outputs

log = logging.getLogger(__name__)


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
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train `model` on fold `fold` on `devices` devices (DDP when more than 1); write metrics.json,
    predictions.csv, embeddings.pt, provenance. A DDP worker process returns {} and writes nothing.
    `unlabelled_manifest` (a2 only): rendered unlabelled performances for its self-supervised stage.
    `checkpoint_dir`: Lightning's resumable checkpoints (default: `out_dir/checkpoints`)."""
    from pianoeval.core.errors import ConfigError
    from pianoeval.core.provenance import write_provenance
    from pianoeval.core.seed import seed_everything
    from pianoeval.data.leaks import KeyGroups, check_no_leak, groups_of_keys, split_groups
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.leaks import learned_from_record
    from pianoeval.training.registry import AUDIO_MODELS, BASELINES, SYMBOLIC_MODELS
    from pianoeval.training.start_weights import as_start

    start = time.perf_counter()
    # Baselines run on either track: the symbolic statistics, or the audio frames' pooled statistics.
    known = (SYMBOLIC_MODELS if track == "symbolic" else AUDIO_MODELS) + BASELINES
    if model not in known:
        raise ConfigError(f"unknown {track} model {model!r}; known: {', '.join(known)}")
    # The sections fitting reads, built once; training as this model trains (training.by_model).
    settings = FitSettings.from_config(config).for_model(model)
    seed = fold_seed(settings.seed, fold)
    seed_everything(seed)  # Lightning's, call for call: a baseline's job then never imports Lightning
    # Inputs are read and checked before anything is written: bad input leaves no output folder.
    store = load_feature_store(features_path)
    manifest = read_manifest(manifest_path)
    folds = read_folds(folds_path)
    data = load_fold_data(store, manifest, folds, fold, manifest_path=manifest_path)
    if track == "audio":
        data.waveforms = waveform_spec(model, settings, manifest, seed)
    if unlabelled_manifest is not None:
        from pianoeval.training.audio_data import load_unlabelled

        aud = settings.need("audio")
        data.unlabelled = load_unlabelled(model, aud, unlabelled_manifest, manifest, folds, fold, data.waveforms)
    # The guard: what this fold model will learn from (its train and dev rows with their transcription
    # views, its pretrained encoder's music, A2's unlabelled clips) must hold no validation group.
    index = KeyGroups(manifest)
    clips = [c.segment_id for c in data.unlabelled.clips] if data.unlabelled is not None else []
    # The start weights are read once: the fit loads what the guard checked.
    start_from = as_start(pretrained) if pretrained is not None else None
    record = learned_from_record(data, index, start_from, extra=groups_of_keys(clips, index))
    check_no_leak(out_dir, fold, record["learned_from_groups"], split_groups(folds, fold, index))
    out_dir.mkdir(parents=True, exist_ok=True)
    origin = str(pretrained) if pretrained else None
    write_provenance(out_dir, config, seed, track=track, model=model, fold=fold, pretrained=origin)
    fitted = fit_predict(track, model, settings, data, out_dir, seed, start_from, devices, checkpoint_dir)
    if fitted is None:
        return {}  # a DDP worker: rank 0 writes the outputs
    preds, embs, info = fitted
    if "wide" in info:
        # The wide part is fitted on the train rows and chosen on dev: the same groups.
        info["wide"]["learned_from_groups"] = record["labels_from_groups"]
    extra = {"track": track, "model": model, "fold": fold, "seed": seed, **info, **record}
    metrics = write_fold_outputs(data, preds, embs, out_dir, extra, start)
    pairwise, wall = metrics["pairwise_acc"] or float("nan"), metrics["wall_s"]
    log.info("%s/%s fold %d: pairwise %.3f, R2 %.3f (%.0f s)", track, model, fold, pairwise, metrics["r2"], wall)
    return metrics
