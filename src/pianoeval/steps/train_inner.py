"""The train_inner rule: a track winner retrained on one inner fold of an outer fold's training split,
predicting the held-out inner part (the fusion's out-of-fold training rows, training/stacking.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pianoeval.core.io import save_torch, write_json
from pianoeval.core.layout import FoldDir
from pianoeval.core.settings import FitSettings, StackingSettings
from pianoeval.data.folds import read_folds

log = logging.getLogger(__name__)


def run_train_inner(
    track: str,
    model: str,
    config: dict[str, Any],
    fold: int,
    inner: int,
    manifest_path: Path,
    folds_path: Path,
    features_path: Path,
    out_dir: Path,
    pretrained: Path | None = None,
    devices: int = 1,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train `model` on inner fold `inner` of outer fold `fold` and write `oof.pt` (the held-out rows'
    scores and embeddings, with the leak record) and `metrics.json`. A DDP worker writes nothing."""
    import lightning as L

    from pianoeval.core.errors import ConfigError
    from pianoeval.core.provenance import write_provenance
    from pianoeval.data.leaks import KeyGroups, check_no_leak, split_groups
    from pianoeval.data.manifest import read_manifest, split_view_id
    from pianoeval.metrics import MetricsSuite
    from pianoeval.training.audio_data import waveform_spec
    from pianoeval.training.data import load_feature_store, load_fold_data
    from pianoeval.training.fit import fit_predict
    from pianoeval.training.leaks import learned_from_record
    from pianoeval.training.stacking import inner_fold_data, inner_seed, oof_payload
    from pianoeval.training.start_weights import as_start

    start = time.perf_counter()
    k = StackingSettings.from_config(config).inner_folds
    if not 0 <= inner < k:
        raise ConfigError(f"inner fold {inner} does not exist: stacking.inner_folds is {k}")
    if model.startswith("baseline_"):
        raise ConfigError(f"{model} is a baseline: only track winners are stacked")
    # The sections fitting reads, built once; training as this model trains (training.by_model).
    settings = FitSettings.from_config(config).for_model(model)
    seed = inner_seed(settings.seed, fold, inner)
    L.seed_everything(seed, workers=True, verbose=False)
    manifest = read_manifest(manifest_path)
    folds = read_folds(folds_path)
    outer = load_fold_data(load_feature_store(features_path), manifest, folds, fold, manifest_path=manifest_path)
    index = KeyGroups(manifest)
    data, held = inner_fold_data(outer, index, k, inner, settings.seed + fold)
    if track == "audio":
        data.waveforms = waveform_spec(model, settings, manifest, seed)
    # The start weights are read once: the fit loads what the guards checked.
    start_from = as_start(pretrained) if pretrained is not None else None
    record = learned_from_record(data, index, start_from)
    # Two guards: no label of a held-out inner row, and nothing of the outer fold's validation music.
    check_no_leak(out_dir, f"{fold}/inner {inner}", record["labels_from_groups"], held, what="inner held-out")
    check_no_leak(out_dir, fold, record["learned_from_groups"], split_groups(folds, fold, index))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, config, seed, track=track, model=model, fold=fold, inner=inner)
    fitted = fit_predict(track, model, settings, data, out_dir, seed, start_from, devices, checkpoint_dir)
    if fitted is None:
        return {}
    preds, embs, info = fitted
    record = {"track": track, "model": model, "fold": fold, "inner": inner, "k_inner": k,
              "held_out_groups": sorted(held), **record}  # fmt: skip
    save_torch(oof_payload(data, preds, embs, record), out_dir / "oof.pt")
    # Scored on the held-out ground-truth rows (views are fusion rows, not validation material).
    truth = [n for n, i in enumerate(data.splits["val"]) if split_view_id(data.items[i]["segment_id"])[1] is None]
    scored = MetricsSuite().compute(preds["val"][truth], data.labels("val")[truth], data.groups("val")[truth])
    metrics = {
        **{key: record[key] for key in ("track", "model", "fold", "inner", "k_inner")},
        "pairwise_acc": scored["pairwise_acc"],
        "r2": scored["r2"],
        "n_train": len(data.splits["train"]),
        "n_out_of_fold": len(data.splits["val"]),
        "seed": seed,
        **info,
        **{key: record[key] for key in ("held_out_groups", "learned_from_groups", "labels_from_groups")},
        "wall_s": round(time.perf_counter() - start, 2),
    }
    write_json(metrics, FoldDir(out_dir).metrics)
    log.info("%s/%s fold %d inner %d: held-out pairwise %s, R2 %.3f", track, model, fold, inner,
             scored["pairwise_acc"], scored["r2"])  # fmt: skip
    return metrics
