"""Fit a network on one fold with Lightning: seeding, the wide part's start, early stopping, checkpoints,
resume, devices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pianoeval.core.io import read_json, write_json
from pianoeval.core.layout import FoldDir
from pianoeval.core.settings import LIVE_BACKBONE_MODELS, FitSettings, TrainingSettings
from pianoeval.training.baselines import stats_matrix, transcription_flags
from pianoeval.training.data import FoldData, make_loader
from pianoeval.training.start_weights import StartWeights

log = logging.getLogger(__name__)


def fold_seed(seed: int, fold: int) -> int:
    """The seed of one fold's run: the global `seed` offset by the fold (recorded in provenance)."""
    return int(seed) + 1000 * fold


def train_network(
    model: str,
    settings: FitSettings,
    data: FoldData,
    out_dir: Path,
    seed: int,
    pretrained: Path | StartWeights | None,
    devices: int = 1,
    checkpoint_dir: Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build `model`'s encoder (loading a start state if given: its path, or its weights as read by
    start_weights.read_start) and fit it; see fit_module."""
    from pianoeval.training.registry import build_network

    net = build_network(model, data.meta, settings)
    write_json({"kind": "network", "model": model, "meta": data.meta}, FoldDir(out_dir).model_spec)
    if pretrained is not None:
        from pianoeval.training.start_weights import as_start, load_start

        start = as_start(pretrained)
        # A side-input wrapper holds the encoder as `.base`: a pretrained one, or the fold's deep-only model's.
        missing, unexpected = load_start(net, start)
        log.info("started the encoder from %s (missing %d, unexpected %d keys)", start.path, missing, unexpected)
    return fit_module(net, settings, data, out_dir, seed, model=model, devices=devices, checkpoint_dir=checkpoint_dir)


def batch_settings(model: str | None, settings: FitSettings) -> tuple[int, int]:
    """(batch size, batches per optimiser step): the audio section's for a live backbone, else training's."""
    training: TrainingSettings = settings.need("training")
    if model in LIVE_BACKBONE_MODELS:
        return settings.need("audio").batches(model, training)
    return int(training.batch_size), 1


def init_wide_part(module: Any, data: FoldData, mode: str) -> dict[str, Any]:
    """Start a wide & deep encoder from the fit of its statistics (side_input.WithStatistics): ridge,
    trees or their blend (`mode`, config `training.wide_part`), every choice made on the dev split.

    The regression head's last layer is zeroed so that the first prediction is the wide part's; the
    deep part then learns residuals (its gradients are not zero: the hidden layer is not). The trees'
    out-of-fold predictions of the training rows are attached to those items (`wide_prior`), which
    their batches carry. Returns the choices (for metrics.json).
    """
    init = getattr(module.encoder, "init_wide", None)
    if init is None or not data.splits["train"]:
        return {}
    dev = data.splits["dev"]
    x_train, y_train = torch.from_numpy(stats_matrix(data, "train")), torch.from_numpy(data.labels("train"))
    x_dev = torch.from_numpy(stats_matrix(data, "dev")) if dev else None
    y_dev = torch.from_numpy(data.labels("dev")) if dev else None
    t_train, t_dev = transcription_flags(data, "train"), transcription_flags(data, "dev") if dev else None
    flags = {
        "t_train": None if t_train is None else torch.from_numpy(t_train),
        "t_dev": None if t_dev is None else torch.from_numpy(t_dev),
    }
    alpha = init(x_train, y_train, x_dev, y_dev, **flags)
    choices, priors = module.encoder.init_trees(
        mode, x_train, y_train, torch.from_numpy(data.groups("train")), x_dev, y_dev, **flags
    )
    for key, values in (priors or {}).items():
        for row, i in enumerate(data.splits["train"]):
            data.items[i][key] = values[row]
    with torch.no_grad():
        module.heads.regression[-1].weight.zero_()
    choices["ridge_alpha"] = alpha
    log.info("wide part initialised on the training split, chosen on dev: %s", choices)
    return choices


def wide_part_baseline(track: str, data: FoldData, settings: FitSettings) -> tuple[Any, dict[str, Any]]:
    """`baseline_blend`: the wide part alone, fitted exactly as a wide & deep encoder's start
    (`init_wide_part` with `training.wide_part` on a `registry.build_wide_part` network) and not
    trained further; returns (module, choices). Its scores are the encoders' epoch-0 scores, so an
    encoder minus this baseline is what its training added to the wide part."""
    from pianoeval.training.registry import build_module, build_wide_part

    net = build_wide_part(track, data.meta, settings)
    module = build_module("baseline_blend", net, settings, label_mean=data.labels("train").mean(axis=0).tolist())
    choices = init_wide_part(module, data, settings.need("training").wide_part)
    return module, {"wide": choices, "n_parameters": int(sum(p.numel() for p in module.parameters()))}


def _supervised(trainer: Any) -> bool:
    """False while a staged module (A2) is in its label-free stage, where dev scores mean nothing."""
    return getattr(trainer.lightning_module, "stage", "supervised") == "supervised"


def _epoch_seed(seed: int) -> Any:
    """A callback that, at each epoch start, reseeds every RNG (dropout, augmentation) from (`seed`,
    epoch) and sets the epoch of the training batch order: a run resumed from `last.ckpt` then
    continues exactly as the uninterrupted run would."""
    import lightning as L

    class EpochSeed(L.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            L.seed_everything(seed + trainer.current_epoch, workers=True, verbose=False)
            # Lightning sets the epoch of a loader's sampler, not of its batch sampler (ours).
            batches = getattr(trainer.train_dataloader, "batch_sampler", None)
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(trainer.current_epoch)

    return EpochSeed()


def _selection_callbacks(ckpt_dir: Path, patience: int) -> tuple[Any, Any]:
    """Early stopping and best-checkpoint selection on dev/selection, both blind to A2's label-free
    stage: its score heads are not trained yet, so patience counts from the switch and the best
    checkpoint is always a supervised one."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    class StageAwareEarlyStopping(EarlyStopping):
        def _should_skip_check(self, trainer: Any) -> bool:
            return super()._should_skip_check(trainer) or not _supervised(trainer)

    class StageAwareCheckpoint(ModelCheckpoint):
        def _save_topk_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
            if _supervised(trainer):  # `last.ckpt` is still written every epoch (resuming)
                super()._save_topk_checkpoint(trainer, monitor_candidates)

        # Lightning (2.5+) refreshes last.ckpt only in epochs that save a best checkpoint; a killed
        # run must resume from its latest epoch, so it is written, at the same point of the epoch
        # as Lightning's own saves, whenever nothing else was saved.
        def _refresh_last(self, trainer: Any, at_train_epoch_end: bool) -> None:
            due = self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
            if due and not self._should_skip_saving_checkpoint(trainer):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            super().on_train_epoch_end(trainer, pl_module)
            self._refresh_last(trainer, at_train_epoch_end=True)

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            super().on_validation_end(trainer, pl_module)
            self._refresh_last(trainer, at_train_epoch_end=False)

    stopping = StageAwareEarlyStopping(monitor="dev/selection", mode="max", patience=patience)
    checkpoint = StageAwareCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="dev/selection", mode="max", save_last=True
    )
    return stopping, checkpoint


def _same_run(
    ckpt_dir: Path, settings: Any, net: torch.nn.Module, seed: int, rows: dict[str, list[str]] | None = None
) -> bool:
    """True when `ckpt_dir` holds checkpoints of this very run (its settings: a `FitSettings`, or any
    JSON-able record of what it depends on; network shape, seed, and the ids of the rows it learns from,
    `rows` {split: ids}).

    Anything else there is stale (an earlier config of the same model and fold, or the same fold
    number cut from other folds): it is removed, so a rerun starts afresh instead of resuming a
    different model, or one that trained on what is now this fold's validation music.
    """
    import dataclasses
    import hashlib
    import json
    import shutil

    from pianoeval.training.module import STATE_LAYOUT

    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    if dataclasses.is_dataclass(settings):
        settings = dataclasses.asdict(settings)
    what = [settings, shapes, seed, STATE_LAYOUT]
    what += [{k: sorted(v) for k, v in rows.items()}] if rows is not None else []
    key = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    stamp = ckpt_dir / "run.json"
    same = stamp.is_file() and read_json(stamp).get("key") == key
    if not same:
        if ckpt_dir.exists():
            log.info("removing checkpoints of an earlier run in %s", ckpt_dir)
            shutil.rmtree(ckpt_dir)
        write_json({"key": key}, stamp)
    return same


def finished_run(last: Path, max_epochs: int) -> dict[str, Any] | None:
    """{epochs_run, best_score} when `last` (a fold's last.ckpt) is the end of a run that had stopped (early
    stopping fired, or max_epochs reached) and its best checkpoint lies beside it; None when the run has
    epochs left to train (resume it) or its state cannot tell."""
    # Memory-mapped: only the few entries read here leave the disk (an A1 checkpoint holds MuQ).
    ckpt = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    epochs_run = int(ckpt.get("epoch", -1)) + 1
    states = ckpt.get("callbacks", {})
    stopped = any("EarlyStopping" in key and int(state.get("stopped_epoch", 0)) > 0 for key, state in states.items())
    scores = [state.get("best_model_score") for key, state in states.items() if "Checkpoint" in key]
    if not (stopped or epochs_run >= max_epochs) or not scores or scores[0] is None:
        return None
    if not (last.parent / "best.ckpt").is_file():
        return None
    return {"epochs_run": epochs_run, "best_score": float(scores[0])}


def device_settings(devices: int) -> dict[str, Any]:
    """Trainer arguments for `devices` devices (a rule's `resources.gpu`): one device, GPU if there is
    one; or, for more than one, Lightning DDP with one process per device (CPU processes where there
    is no GPU, which is how the tests run it)."""
    if devices <= 1:
        return {"accelerator": "auto", "devices": 1}
    from lightning.pytorch.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    # LightningEnvironment: Lightning starts the other ranks itself, on this machine, also inside a
    # SLURM job (whose variables would otherwise make it wait for one srun task per device).
    # Unused parameters are allowed: the contrastive projection has none when its weight is 0.
    strategy = DDPStrategy(cluster_environment=LightningEnvironment(), find_unused_parameters=True)
    return {"accelerator": "auto", "devices": int(devices), "strategy": strategy}


def _trainer(training: TrainingSettings, devices: int, accumulate: int, callbacks: list[Any], out_dir: Path) -> Any:
    """The Lightning trainer of a fold: deterministic, no progress bar, curves in the fold's logs/metrics.csv."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(
        max_epochs=training.max_epochs,
        **device_settings(devices),
        # The group batch sampler shards training batches across DDP ranks itself.
        use_distributed_sampler=False,
        precision=training.precision,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        logger=CSVLogger(out_dir, name="logs", version=""),
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )


def training_stats_scale(data: FoldData) -> tuple[list[float], list[float]] | None:
    """(mean, std) per column of the training rows' statistics (`stats`), or None when items carry none."""
    rows = [data.items[i]["stats"] for i in data.splits["train"] if "stats" in data.items[i]]
    if not rows:
        return None
    stats = torch.stack([torch.as_tensor(r, dtype=torch.float64) for r in rows])
    return stats.mean(dim=0).tolist(), stats.std(dim=0, unbiased=False).tolist()


def _fold_loaders(
    model: str | None, settings: FitSettings, data: FoldData, batch_size: int, seed: int
) -> tuple[Any, Any]:
    """The training loader (shuffled, sharded across DDP ranks) and the dev loader (the training split
    when there is no dev split) of a fold."""
    from pianoeval.training.audio_data import train_loader_options

    training: TrainingSettings = settings.need("training")
    train_loader = make_loader(
        data.subset("train"),
        batch_size,
        True,
        seed,
        training.num_workers,
        dataset=data.dataset("train", train=True),
        shard=True,
        # A1-A3: P segment groups x K performances; A2: unlabelled clips in its self-supervised epochs.
        **train_loader_options(model, settings.audio, data, batch_size),
    )
    dev_split = "dev" if data.splits["dev"] else "train"
    dev_loader = make_loader(data.subset(dev_split), batch_size, False, seed, dataset=data.dataset(dev_split))
    return train_loader, dev_loader


def fit_module(
    net: torch.nn.Module,
    settings: FitSettings,
    data: FoldData,
    out_dir: Path,
    seed: int,
    model: str | None = None,
    devices: int = 1,
    callbacks: Sequence[Any] = (),
    checkpoint_dir: Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fit `model`'s LightningModule (`registry.build_module`; PerformanceModule unless an audio model
    a1-a3) around `net` with early stopping on the dev split; return (best module, info).

    With `devices` > 1 (DDP, see device_settings) Lightning reruns the calling command once per
    extra device; in those worker processes (rank > 0) the module returned is None and the caller
    writes nothing. Each rank trains on its share of the training batches (`GroupBatchSampler`
    shards them) and evaluates the whole dev split, so all ranks select the same epoch.
    `callbacks` are added to the trainer's own (early stopping, checkpoints, progress lines).
    Lightning's checkpoints (best, last: what a killed run resumes from) go to `checkpoint_dir` (the
    rules: a cache under results/cache), by default the fold folder's `checkpoints/`; the chosen
    epoch's weights are written to the fold folder's `model.ckpt`.
    """
    from pianoeval.training.registry import build_module

    training: TrainingSettings = settings.need("training")
    module = build_module(
        model or "",
        net,
        settings,
        label_mean=data.labels("train").mean(axis=0).tolist(),
        stats_scale=training_stats_scale(data),
    )
    wide = init_wide_part(module, data, training.wide_part)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else FoldDir(out_dir).checkpoints
    last = ckpt_dir / "last.ckpt"
    # The checkpoint folder is a per-fold cache: keyed by the rows it learns from too.
    rows = {split: [data.items[i]["segment_id"] for i in data.splits[split]] for split in ("train", "dev")}
    resume = str(last) if _same_run(ckpt_dir, settings, net, seed, rows) and last.exists() else None
    done = finished_run(last, training.max_epochs) if resume else None
    if done is not None:
        # Its outputs were lost after training ended (a kill while predicting, results deleted): Lightning
        # would train one more epoch before its early stopping fires again. No loader or trainer is built.
        log.info("the run in %s had finished (%d epochs): its chosen epoch is reused", ckpt_dir, done["epochs_run"])
        best_path, epochs_run, best_score = str(ckpt_dir / "best.ckpt"), done["epochs_run"], done["best_score"]
    else:
        if resume:
            log.info("resuming from %s", resume)  # a killed run continues from its last epoch
        fitted = _run_trainer(module, model, settings, data, seed, devices, ckpt_dir, out_dir, resume, callbacks)
        if fitted is None:
            return None, {}  # a DDP worker: rank 0 loads the best checkpoint and writes the outputs
        best_path, epochs_run, best_score = fitted
    return module, _take_chosen(module, Path(best_path), out_dir, epochs_run, best_score, wide)


def _run_trainer(
    module: Any,
    model: str | None,
    settings: FitSettings,
    data: FoldData,
    seed: int,
    devices: int,
    ckpt_dir: Path,
    out_dir: Path,
    resume: str | None,
    extra: Sequence[Any],
) -> tuple[str, int, float | None] | None:
    """Train `module` with early stopping and checkpoints in `ckpt_dir` (resuming from `resume`);
    (best checkpoint, epochs run, best dev selection), or None in a DDP worker (rank > 0)."""
    from pianoeval.training.averaging import WeightEMA
    from pianoeval.training.progress import EpochLog

    training: TrainingSettings = settings.need("training")
    batch_size, accumulate = batch_settings(model, settings)
    train_loader, dev_loader = _fold_loaders(model, settings, data, batch_size, seed)
    stopping, checkpoint = _selection_callbacks(ckpt_dir, training.patience)
    # WeightEMA swaps the average in for each dev evaluation, so selection and checkpoints see it.
    averaging = [WeightEMA(training.ema_decay)] if training.ema_decay > 0 else []
    callbacks = [stopping, checkpoint, _epoch_seed(seed), *averaging, EpochLog(f"train {model or 'network'}"), *extra]
    trainer = _trainer(training, devices, accumulate, callbacks, out_dir)
    trainer.fit(module, train_loader, dev_loader, ckpt_path=resume)
    if not trainer.is_global_zero:
        return None
    last = str(ckpt_dir / "last.ckpt")
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    return checkpoint.best_model_path or last, int(trainer.current_epoch), best_score


def _take_chosen(
    module: Any, best_path: Path, out_dir: Path, epochs_run: int, best_score: float | None, wide: dict[str, Any]
) -> dict[str, Any]:
    """Load the chosen epoch's weights into `module`, write them as the fold's `model.ckpt`; the run's info."""
    from pianoeval.training.checkpoints import write_model

    # Read once, onto the CPU: the module copies the weights to its device, model.ckpt keeps them portable.
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    module.load_state_dict(best["state_dict"])
    write_model(best, out_dir)
    return {
        "best_epoch": int(best.get("epoch", -1)),
        "epochs_run": epochs_run,
        "best_dev_selection": best_score,
        "n_parameters": int(sum(p.numel() for p in module.parameters())),
        **({"wide": wide} if wide else {}),
    }


def fit_predict(
    track: str,
    model: str,
    settings: FitSettings,
    data: FoldData,
    out_dir: Path,
    seed: int,
    pretrained: Path | StartWeights | None = None,
    devices: int = 1,
    checkpoint_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]] | None:
    """Fit `model` on `data` (a baseline, the wide part alone, or a network) and predict every split:
    (predictions, embeddings or None, info). None in a DDP worker process (rank > 0)."""
    from pianoeval.training.baselines import baseline_predict
    from pianoeval.training.predict import predict_network

    if model == "baseline_blend":
        module, info = wide_part_baseline(track, data, settings)
        preds, _ = predict_network(module, data, batch_settings(model, settings)[0])
        return preds, None, info
    if model.startswith("baseline_"):
        return baseline_predict(model, data), None, {}
    module, info = train_network(model, settings, data, out_dir, seed, pretrained, devices, checkpoint_dir)
    if module is None:
        return None
    if data.unlabelled is not None:
        info["unlabelled"] = data.unlabelled.stats
    # On the device the job reserved (the GPU it trained on), in bounded batches.
    from pianoeval.core.device import resolve_device

    preds, embs = predict_network(module, data, batch_settings(model, settings)[0], resolve_device(devices))
    return preds, embs, info
