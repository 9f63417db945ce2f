"""The pretrain rule: self-supervised pretraining of a symbolic encoder on one fold's training MIDI
(never its validation music)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pianoeval.core.io import save_torch
from pianoeval.core.settings import FitSettings
from pianoeval.training.pretrain import PretrainModule, build_objective, build_pretrain_loader, pretraining_keys

log = logging.getLogger(__name__)


def load_corpus_encoder(encoder: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load the corpus-pretrained weights of pretrain_corpus into `encoder` (every key must match:
    the same model and width); return their record (path, windows, epochs)."""
    from pianoeval.core.errors import InputError

    state = torch.load(path, weights_only=False)
    try:
        encoder.load_state_dict(state["encoder"])
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"corpus encoder does not fit this model ({str(exc).splitlines()[0]})", path) from exc
    info = state.get("info", {})
    log.info("starting from the corpus encoder %s (%s windows)", path, info.get("n_windows"))
    return {"path": str(path), **{k: info.get(k) for k in ("n_windows", "n_files", "epochs_run", "excluded")}}


def run_pretrain(
    model: str,
    config: dict[str, Any],
    fold: int,
    manifest_path: Path,
    folds_path: Path,
    features_path: Path,
    out: Path,
    devices: int = 1,
    corpus: Path | None = None,
) -> dict[str, Any]:
    """Pretrain `model`'s encoder for `training.pretrain_epochs` epochs on `devices` devices (DDP when
    more than 1, see train.device_settings); save `{"encoder": state_dict}`. With `corpus` (the
    pretrain_corpus output) the encoder starts from those weights, and 0 epochs passes them on as they
    are. A DDP worker process (rank > 0) saves nothing."""
    from pianoeval.data.folds import read_folds
    from pianoeval.data.leaks import KeyGroups, check_no_leak, groups_of_keys, split_groups
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.data import load_feature_store
    from pianoeval.training.fit import device_settings, fold_seed
    from pianoeval.training.progress import EpochLog
    from pianoeval.training.registry import build_encoder

    start = time.perf_counter()
    settings = FitSettings.from_config(config).for_model(model)  # features, symbolic, its training, seed
    training, sym = settings.need("training"), settings.need("symbolic")
    seed = fold_seed(settings.seed, fold)
    L.seed_everything(seed, workers=True, verbose=False)
    store = load_feature_store(features_path)
    manifest = read_manifest(manifest_path)
    folds = read_folds(folds_path)
    keys = pretraining_keys(store, manifest, folds, fold)
    # The guard: the groups of the keys actually read, checked against the fold's validation groups.
    index = KeyGroups(manifest)
    learned_from = sorted(groups_of_keys(keys, index))
    check_no_leak(out, fold, learned_from, split_groups(folds, fold, index))
    items = [store["items"][k] for k in keys]
    encoder = build_encoder(model, store["meta"], settings)
    corpus_info = load_corpus_encoder(encoder, corpus) if corpus is not None else None
    objective = build_objective(model, encoder, store["meta"], sym.objective)
    epochs = training.pretrain_epochs
    info: dict[str, Any] = {
        "model": model,
        "fold": fold,
        "n_items": len(items),
        "epochs": epochs,
        "seed": seed,
        "learned_from_groups": learned_from,
        "corpus": corpus_info,
    }
    if epochs > 0:
        module = PretrainModule(objective)
        loader = build_pretrain_loader(
            model,
            items,
            store["meta"],
            training.batch_size,
            seed,
            max_len=settings.need("features").max_seq_len,
            mask_prob=sym.objective["mask_prob"],
        )
        trainer = L.Trainer(
            max_epochs=epochs,
            **device_settings(devices),
            precision=training.precision,
            logger=False,
            enable_checkpointing=False,
            callbacks=[EpochLog(f"pretrain {model}")],
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
        )
        trainer.fit(module, loader)  # under DDP, Lightning gives each rank a share of the loader
        if not trainer.is_global_zero:
            return info
        info["final_loss"] = float(trainer.callback_metrics.get("pretrain/loss", torch.tensor(float("nan"))))
    info["wall_s"] = round(time.perf_counter() - start, 2)
    save_torch({"encoder": encoder.state_dict(), "info": info}, out)
    log.info("pretrained %s fold %d on %d files: %s", model, fold, len(items), info)
    return info
