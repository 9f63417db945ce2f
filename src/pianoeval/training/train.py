"""Train one model on one fold and write metrics, predictions, embeddings and provenance."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pianoeval.constants import DIMENSIONS
from pianoeval.io import atomic_path, read_json, save_torch, write_json
from pianoeval.pipeline.transcribe_corpus import split_view_id
from pianoeval.training.data import FoldData, load_feature_store, load_fold_data, make_loader

log = logging.getLogger(__name__)


def fold_seed(config: dict[str, Any], fold: int) -> int:
    """The seed of one fold's run: the global seed offset by the fold (recorded in provenance)."""
    return int(config["seed"]) + 1000 * fold


def evaluate(pred: np.ndarray, data: FoldData, split: str, threshold: float | None = None) -> dict[str, Any]:
    """The output-contract metrics of predictions [N, 19] on one split."""
    from pianoeval.metrics import MetricsSuite

    suite = MetricsSuite() if threshold is None else MetricsSuite(ambiguous_threshold=threshold)
    return suite.compute(pred, data.labels(split), data.groups(split))


def _stats_matrix(data: FoldData, split: str) -> np.ndarray:
    """The hand-made statistics of a split's items as [N, S] (the baselines' input)."""
    return np.stack([data.items[i]["stats"].numpy() for i in data.splits[split]])


def _flags(data: FoldData, split: str) -> np.ndarray | None:
    """Transcription flags [N, 1] of a split's items (1 = TransKun transcription); None without views."""
    if not data.meta.get("transcribed_views"):
        return None
    return np.array([[float(data.items[i].get("transcribed", 0.0))] for i in data.splits[split]])


def _trees_input(data: FoldData, split: str) -> np.ndarray:
    """The trees baseline's input [N, S(+1)] of a split: the statistics and, with transcription views,
    the flag (the trees can split on it)."""
    x, t = _stats_matrix(data, split), _flags(data, split)
    return x if t is None else np.concatenate([x, t], axis=1)


def _ridge_baseline(data: FoldData) -> dict[str, np.ndarray]:
    """Ridge on the standardised statistics, alpha chosen on dev; predictions [N, 19] of every split.

    With transcription views, the transcriptions get a ridge of their own (same alpha, their own
    standardisation), so the fit to the ground-truth MIDI is the one without them; transcriptions without
    any in training (only val_transcribed) are scored by the ground-truth fit."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    def rows(split: str, transcribed: bool) -> np.ndarray:
        t = _flags(data, split)
        flag = np.zeros(len(data.splits[split]), dtype=bool) if t is None else t[:, 0] > 0.5
        return flag == transcribed

    x_all = {split: _stats_matrix(data, split) for split in data.splits}
    y_train = data.labels("train")
    gt = rows("train", False)
    scaler = StandardScaler().fit(x_all["train"][gt])
    x_fit = scaler.transform(x_all["train"][gt])
    if data.splits["dev"]:
        dev = rows("dev", False)
        x_dev, y_dev = scaler.transform(x_all["dev"][dev]), data.labels("dev")[dev]
    best = None
    for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0):
        reg = Ridge(alpha=alpha).fit(x_fit, y_train[gt])
        # No dev split: prefer the strongest regularisation tried.
        score = -np.mean((reg.predict(x_dev) - y_dev) ** 2) if data.splits["dev"] else -alpha
        if best is None or score > best[0]:
            best = (score, alpha, reg)
    _, alpha, reg = best
    log.info("ridge alpha chosen on dev: %s", alpha)
    models = {False: (scaler, reg)}
    tr = rows("train", True)
    models[True] = models[False]  # no transcription among the training rows: the ground-truth fit
    if tr.any():
        t_scaler = StandardScaler().fit(x_all["train"][tr])
        models[True] = (t_scaler, Ridge(alpha=alpha).fit(t_scaler.transform(x_all["train"][tr]), y_train[tr]))
    out: dict[str, np.ndarray] = {}
    for split in data.splits:
        pred = np.zeros((len(data.splits[split]), y_train.shape[1]))
        for transcribed, (sc, model) in models.items():
            sel = rows(split, transcribed)
            if sel.any():
                pred[sel] = model.predict(sc.transform(x_all[split][sel]))
        out[split] = np.clip(pred, 0.0, 1.0)
    return out


def _baseline_predict(model: str, data: FoldData) -> dict[str, np.ndarray]:
    """Predictions of a baseline for every split (fitted on train, alpha chosen on dev)."""

    y_train = data.labels("train")
    out: dict[str, np.ndarray] = {}
    if model == "baseline_mean":
        for split in data.splits:
            out[split] = np.tile(y_train.mean(axis=0), (len(data.splits[split]), 1))
    elif model == "baseline_segment_mean":
        # Mean of the training performances of the same musical segment (global mean if none):
        # the "no performance information" reference of the performer-disjoint protocol.
        g_train = data.groups("train")
        means = {g: y_train[g_train == g].mean(axis=0) for g in np.unique(g_train)}
        for split in data.splits:
            out[split] = np.stack([means.get(g, y_train.mean(axis=0)) for g in data.groups(split)])
    elif model == "baseline_ridge":
        out = _ridge_baseline(data)
    elif model == "baseline_trees":
        # Extremely randomised trees on the same statistics: the non-linear, non-deep reference
        # (interactions such as "fast and loud" that a linear model cannot express).
        from pianoeval.side_input import TREES_MIN_LEAF, make_trees

        x_train, y_mean = _trees_input(data, "train"), y_train.mean(axis=0)
        x_dev = _trees_input(data, "dev") if data.splits["dev"] else None
        best = None
        for leaf in TREES_MIN_LEAF:
            reg = make_trees(leaf).fit(x_train, y_train - y_mean)
            # No dev split: prefer the smoothest trees tried.
            score = -np.mean((reg.predict(x_dev) + y_mean - data.labels("dev")) ** 2) if x_dev is not None else -leaf
            if best is None or score > best[0]:
                best = (score, leaf, reg)
        _, leaf, reg = best
        log.info("trees min_samples_leaf chosen on dev: %s", leaf)
        for split in data.splits:
            out[split] = np.clip(reg.predict(_trees_input(data, split)) + y_mean, 0.0, 1.0)
    else:
        from pianoeval.errors import ConfigError

        raise ConfigError(f"unknown baseline {model!r}")
    return out


def _write_predictions(data: FoldData, preds: dict[str, np.ndarray], path: Path) -> None:
    """Write a CSV with one row per segment: id, split, group, 19 predictions and 19 labels."""
    rows = []
    for split, idx in data.splits.items():
        for k, i in enumerate(idx):
            item = data.items[i]
            row = {"segment_id": item["segment_id"], "split": split, "group": int(item["group"])}
            row.update({f"pred_{d}": float(v) for d, v in zip(DIMENSIONS, preds[split][k], strict=True)})
            row.update({f"label_{d}": float(v) for d, v in zip(DIMENSIONS, item["labels"].numpy(), strict=True)})
            rows.append(row)
    with atomic_path(path, suffix=".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _predict_network(
    module: Any, data: FoldData, batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scores and embeddings of every split from a trained module (PerformanceModule or an audio
    track module: both have `encoder` and `scores_from`), in eval mode."""
    module.eval()
    preds: dict[str, np.ndarray] = {}
    embs: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for split in data.splits:
            items = data.subset(split)
            if not items:
                preds[split] = np.zeros((0, len(DIMENSIONS)))
                embs[split] = np.zeros((0, module.encoder.hidden_size))
                continue
            from pianoeval.data.datasets import multi_task_collate_fn

            dataset = data.dataset(split)  # the items, or their waveforms (first window, no augmentation)
            p, e = [], []
            for start in range(0, len(items), batch_size):
                batch = multi_task_collate_fn([dataset[i] for i in range(start, min(start + batch_size, len(items)))])
                z = module.encoder(batch)
                p.append(module.scores_from(z, batch).numpy())
                e.append(z.numpy())
            preds[split], embs[split] = np.concatenate(p), np.concatenate(e)
    return preds, embs


def train_network(
    model: str,
    config: dict[str, Any],
    data: FoldData,
    out_dir: Path,
    seed: int,
    pretrained: Path | None,
    devices: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """Build `model`'s encoder (loading a pretrained state if given) and fit it; see fit_module."""
    from pianoeval.training.registry import build_network

    net = build_network(model, data.meta, config)
    write_json({"kind": "network", "model": model, "meta": data.meta}, out_dir / "model_spec.json")
    if pretrained is not None:
        state = torch.load(pretrained, weights_only=False)
        # A side-input wrapper holds the pretrained encoder as `.base`.
        target = getattr(net, "base", net)
        missing, unexpected = target.load_state_dict(state["encoder"], strict=False)
        log.info(
            "loaded pretrained encoder %s (missing %d, unexpected %d keys)",
            pretrained,
            len(missing),
            len(unexpected),
        )
    return fit_module(net, config, data, out_dir, seed, model=model, devices=devices)


def batch_settings(model: str | None, config: dict[str, Any]) -> tuple[int, int]:
    """(batch size, batches per optimiser step): the audio section's for a live backbone, else training's."""
    from pianoeval.training.registry import uses_live_backbone

    size = config["training"]["batch_size"]
    if model and model in ("a1", "a2", "a3") and uses_live_backbone(model, config):
        aud = config["audio"]
        return int(aud["batch_size"] or size), int(aud["accumulate_grad_batches"])
    return int(size), 1


def _init_wide_part(module: Any, data: FoldData, mode: str) -> dict[str, Any]:
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
    x_train, y_train = torch.from_numpy(_stats_matrix(data, "train")), torch.from_numpy(data.labels("train"))
    x_dev = torch.from_numpy(_stats_matrix(data, "dev")) if dev else None
    y_dev = torch.from_numpy(data.labels("dev")) if dev else None
    t_train, t_dev = _flags(data, "train"), _flags(data, "dev") if dev else None
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


def _same_run(ckpt_dir: Path, config: dict[str, Any], net: torch.nn.Module, seed: int) -> bool:
    """True when `ckpt_dir` holds checkpoints of this very run (config, network shape, seed).

    Anything else there is stale (an earlier config of the same model and fold): it is removed,
    so a rerun with new settings starts afresh instead of resuming a different model.
    """
    import hashlib
    import json
    import shutil

    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    key = hashlib.sha1(json.dumps([config, shapes, seed], sort_keys=True, default=str).encode()).hexdigest()
    stamp = ckpt_dir / "run.json"
    same = stamp.is_file() and read_json(stamp).get("key") == key
    if not same:
        if ckpt_dir.exists():
            log.info("removing checkpoints of an earlier run in %s", ckpt_dir)
            shutil.rmtree(ckpt_dir)
        write_json({"key": key}, stamp)
    return same


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


def fit_module(
    net: torch.nn.Module,
    config: dict[str, Any],
    data: FoldData,
    out_dir: Path,
    seed: int,
    model: str | None = None,
    devices: int = 1,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, dict[str, Any]]:
    """Fit `model`'s LightningModule (`registry.build_module`; PerformanceModule unless an audio model
    a1-a3) around `net` with early stopping on the dev split; return (best module, info).

    With `devices` > 1 (DDP, see device_settings) Lightning reruns the calling command once per
    extra device; in those worker processes (rank > 0) the module returned is None and the caller
    writes nothing. Each rank trains on its share of the training batches (`GroupBatchSampler`
    shards them) and evaluates the whole dev split, so all ranks select the same epoch.
    `callbacks` are added to the trainer's own (early stopping, checkpoints, progress lines).
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from pianoeval.training.audio_data import train_loader_options
    from pianoeval.training.progress import EpochLog
    from pianoeval.training.registry import build_module

    tcfg = config["training"]
    module = build_module(model or "", net, config, label_mean=data.labels("train").mean(axis=0).tolist())
    wide = _init_wide_part(module, data, tcfg["wide_part"])
    batch_size, accumulate = batch_settings(model, config)
    train_loader = make_loader(
        data.subset("train"),
        batch_size,
        True,
        seed,
        tcfg["num_workers"],
        dataset=data.dataset("train", train=True),
        shard=True,
        # A1-A3: P segment groups x K performances; A2: unlabelled clips in its self-supervised epochs.
        **train_loader_options(model, config, data, batch_size),
    )
    dev_split = "dev" if data.splits["dev"] else "train"
    dev_loader = make_loader(data.subset(dev_split), batch_size, False, seed, dataset=data.dataset(dev_split))
    ckpt_dir = out_dir / "checkpoints"
    stopping, checkpoint = _selection_callbacks(ckpt_dir, tcfg["patience"])
    trainer = L.Trainer(
        max_epochs=tcfg["max_epochs"],
        **device_settings(devices),
        # The group batch sampler shards training batches across DDP ranks itself.
        use_distributed_sampler=False,
        precision=tcfg["precision"],
        accumulate_grad_batches=accumulate,
        callbacks=[stopping, checkpoint, _epoch_seed(seed), EpochLog(f"train {model or 'network'}"), *callbacks],
        logger=CSVLogger(out_dir, name="logs", version=""),
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if _same_run(ckpt_dir, config, net, seed) and last.exists() else None
    if resume:
        log.info("resuming from %s", resume)  # a killed run continues from its last epoch
    trainer.fit(module, train_loader, dev_loader, ckpt_path=resume)
    if not trainer.is_global_zero:
        return None, {}  # a DDP worker: rank 0 loads the best checkpoint and writes the outputs
    best_path = checkpoint.best_model_path or str(last)
    best = torch.load(best_path, weights_only=False)
    module.load_state_dict(best["state_dict"])
    info = {
        "best_epoch": int(best.get("epoch", -1)),
        "epochs_run": int(trainer.current_epoch),
        "best_dev_selection": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "n_parameters": int(sum(p.numel() for p in module.parameters())),
        **({"wide": wide} if wide else {}),
    }
    return module, info


def write_fold_outputs(
    data: FoldData,
    preds: dict[str, np.ndarray],
    embs: dict[str, np.ndarray] | None,
    out_dir: Path,
    extra: dict[str, Any],
    start: float,
) -> dict[str, Any]:
    """Evaluate on val (and dev), then write predictions.csv, embeddings.pt and, last, metrics.json."""
    metrics = evaluate(preds["val"], data, "val")
    dev_metrics = evaluate(preds["dev"], data, "dev") if data.splits["dev"] else None
    if data.splits.get("val_transcribed"):
        # The validation segments scored from TransKun's transcription of their clean rendering.
        transcribed = evaluate(preds["val_transcribed"], data, "val_transcribed")
        metrics["val_transcribed"] = {
            "pairwise_acc": transcribed["pairwise_acc"],
            "r2": transcribed["r2"],
            "n": len(data.splits["val_transcribed"]),
        }
    metrics.update(
        {
            "n_train": len(data.splits["train"]),
            "n_train_transcribed": sum(
                split_view_id(data.items[i]["segment_id"])[1] is not None for i in data.splits["train"]
            ),
            "n_dev": len(data.splits["dev"]),
            "n_val": len(data.splits["val"]),
            "n_missing_features": len(data.missing),
            "dev": {"pairwise_acc": dev_metrics["pairwise_acc"], "r2": dev_metrics["r2"]} if dev_metrics else None,
            **extra,
        }
    )
    _write_predictions(data, preds, out_dir / "predictions.csv")
    splits = ("train", "dev", "val")
    order = [i for split in splits for i in data.splits[split]]
    payload: dict[str, Any] = {
        "ids": [data.items[i]["segment_id"] for i in order],
        "split": [data.items[i]["split"] for i in order],
        "scores": torch.from_numpy(np.concatenate([preds[s] for s in splits]).astype(np.float32)),
        "z": None,
    }
    if embs is not None:
        payload["z"] = torch.from_numpy(np.concatenate([embs[s] for s in splits]).astype(np.float32))
    save_torch(payload, out_dir / "embeddings.pt")
    metrics["wall_s"] = round(time.perf_counter() - start, 2)
    write_json(metrics, out_dir / "metrics.json")  # last: its presence means the fold is complete
    return metrics


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

    from pianoeval.data.manifest import read_manifest
    from pianoeval.errors import ConfigError
    from pianoeval.provenance import write_provenance
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
        preds = _baseline_predict(model, data)
        embs = None
    else:
        module, info = train_network(model, config, data, out_dir, seed, pretrained, devices)
        if module is None:
            return {}
        if data.unlabelled is not None:
            info["unlabelled"] = data.unlabelled.stats
        preds, embs = _predict_network(module, data, batch_settings(model, config)[0])
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


def load_trained_module(fold_dir: Path) -> Any:
    """Rebuild a trained module (PerformanceModule, or A1-A3's) from a train/fuse fold folder (spec,
    config, best checkpoint)."""
    import yaml

    from pianoeval.config import validate_config
    from pianoeval.training.registry import build_module

    spec = read_json(fold_dir / "model_spec.json")
    config = validate_config(yaml.safe_load((fold_dir / "config.yaml").read_text()), fold_dir / "config.yaml")
    if spec["kind"] == "network":
        from pianoeval.training.registry import build_network

        net = build_network(spec["model"], spec["meta"], config)
    else:
        from pianoeval.fusion import build_fusion

        net = build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    # Built before loading: A1/A2 add their LoRA adapters in the constructor.
    module = build_module(spec["model"], net, config, label_mean=None)
    ckpt = fold_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        ckpt = fold_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        from pianoeval.errors import InputError

        raise InputError("no checkpoint in this training folder; rerun its rule", fold_dir)
    module.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    module.eval()
    return module
