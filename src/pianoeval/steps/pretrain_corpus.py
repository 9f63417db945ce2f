"""The pretrain_corpus rule: self-supervised pretraining of a symbolic encoder, once per model, on the
unlabelled corpus (ASAP performances, PercePiano's one shared piece left out); the per-fold pretrain
starts from its weights."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L

from pianoeval.core.io import save_torch
from pianoeval.core.settings import FitSettings

log = logging.getLogger(__name__)

# The feature kind each pretrainable encoder reads.
KIND = {"s1": "tokens", "s2": "graphs", "s3": "curves"}


def _trainer(epochs: int, minutes: float, ckpt_dir: Path, precision: str, devices: int, what: str) -> Any:
    """A Lightning trainer that stops after `epochs` or `minutes` (the budget) and writes last.ckpt
    every epoch (a killed run resumes from it)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pianoeval.training.fit import device_settings
    from pianoeval.training.progress import EpochLog

    # save_top_k=1 (no monitor: the latest epoch): with save_top_k=0 Lightning 2.6 writes last.ckpt only
    # when another checkpoint was saved at that step, i.e. never at an epoch's end (a killed run lost
    # every epoch since its start; found when a resumed S3 run wrote none after its epoch 2).
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=1, every_n_epochs=1)
    return L.Trainer(
        max_epochs=epochs,
        max_time={"minutes": minutes} if minutes > 0 else None,
        **device_settings(devices),
        precision=precision,
        logger=False,
        callbacks=[checkpoint, EpochLog(what)],
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )


def run_pretrain_corpus(
    model: str,
    config: dict[str, Any],
    out: Path,
    checkpoint_dir: Path,
    cache_dir: Path | None = None,
    devices: int = 1,
    threads: int = 1,
) -> dict[str, Any]:
    """Pretrain `model`'s encoder on the corpus of `symbolic.corpus` for at most `epochs` epochs or
    `minutes`; save `{"encoder": state_dict, "info": ...}` to `out`. Lightning's checkpoints go to
    `checkpoint_dir` (a cache: the rule's is under results/cache/), and a rerun with the same settings
    resumes from its `last.ckpt`. `cache_dir`: the corpus feature stores. A DDP worker (rank > 0)
    saves nothing."""
    from pianoeval.core.errors import ConfigError
    from pianoeval.data.corpus import CorpusSettings
    from pianoeval.symbolic.augmentation import AugmentSettings
    from pianoeval.training.corpus import build_corpus_store
    from pianoeval.training.fit import _same_run
    from pianoeval.training.pretrain import PretrainModule, build_objective, build_pretrain_loader
    from pianoeval.training.registry import build_encoder

    if model not in KIND:
        raise ConfigError(f"model {model!r} has no corpus pretraining; known: {', '.join(KIND)}")
    start = time.perf_counter()
    settings = FitSettings.from_config(config)  # features, symbolic and seed, built once
    sym, features = settings.need("symbolic"), settings.need("features")
    section, seed = sym.corpus, settings.seed
    L.seed_everything(seed, workers=True, verbose=False)
    corpus, aug = CorpusSettings.from_config(section), AugmentSettings.from_config(section["augment"])
    store = build_corpus_store(KIND[model], corpus, aug, features, seed, threads, cache_dir)
    items = [store["items"][k] for k in sorted(store["items"])]
    encoder = build_encoder(model, store["meta"], settings)
    objective = sym.objective
    module = PretrainModule(build_objective(model, encoder, store["meta"], objective), lr=section["lr"])
    loader = build_pretrain_loader(
        model,
        items,
        store["meta"],
        section["batch_size"],
        seed,
        max_len=features.max_seq_len,
        mask_prob=objective["mask_prob"],
    )
    last = checkpoint_dir / "last.ckpt"
    # Resume only a run of these very settings and this network shape (anything else there is removed);
    # the budget (epochs, minutes) is not part of it, so a larger one continues the run.
    run = {k: v for k, v in section.items() if k not in ("epochs", "model_epochs", "minutes")}
    what = {"corpus": run, "objective": objective, "features": dataclasses.asdict(features)}
    resume = _same_run(checkpoint_dir, what, module, seed) and last.exists()
    epochs = int(section["model_epochs"].get(model, section["epochs"]))
    trainer = _trainer(
        epochs, section["minutes"], checkpoint_dir, section["precision"], devices, f"pretrain_corpus {model}"
    )
    if resume:
        log.info("resuming from %s", last)
    trainer.fit(module, loader, ckpt_path=str(last) if resume else None)
    info: dict[str, Any] = {
        "model": model,
        "n_windows": len(items),
        "n_files": len(store["files"]),
        "excluded": list(corpus.exclude),
        "epochs_run": int(trainer.current_epoch),
        "seed": seed,
        "resumed": bool(resume),
        # Corpus music is no PercePiano segment group: nothing of any fold's validation split.
        "learned_from_groups": [],
    }
    if not trainer.is_global_zero:
        return info
    info["final"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("pretrain/")}
    info["wall_s"] = round(time.perf_counter() - start, 2)
    save_torch({"encoder": encoder.state_dict(), "info": info}, out)
    log.info("pretrained %s on the corpus: %s", model, info)
    return info
