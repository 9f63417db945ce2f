"""Train one model on one fold and write metrics, predictions, embeddings and provenance."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pianoeval.constants import DIMENSIONS
from pianoeval.io import atomic_path, read_json, write_json
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


def _baseline_predict(model: str, data: FoldData) -> dict[str, np.ndarray]:
    """Predictions of a baseline for every split (fitted on train, alpha chosen on dev)."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

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

        def x(split: str) -> np.ndarray:
            return np.stack([data.items[i]["stats"].numpy() for i in data.splits[split]])

        scaler = StandardScaler().fit(x("train"))
        best = None
        for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0):
            reg = Ridge(alpha=alpha).fit(scaler.transform(x("train")), y_train)
            if data.splits["dev"]:
                score = -np.mean((reg.predict(scaler.transform(x("dev"))) - data.labels("dev")) ** 2)
            else:
                score = -alpha  # no dev split: prefer the strongest regularisation tried
            if best is None or score > best[0]:
                best = (score, alpha, reg)
        _, alpha, reg = best
        log.info("ridge alpha chosen on dev: %s", alpha)
        for split in data.splits:
            out[split] = np.clip(reg.predict(scaler.transform(x(split))), 0.0, 1.0)
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
    """Scores and embeddings of every split from a trained PerformanceModule (eval mode)."""
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

            p, e = [], []
            for start in range(0, len(items), batch_size):
                batch = multi_task_collate_fn(items[start : start + batch_size])
                z = module.encoder(batch)
                p.append(module.scores_from(z, batch).numpy())
                e.append(z.numpy())
            preds[split], embs[split] = np.concatenate(p), np.concatenate(e)
    return preds, embs


def train_network(
    model: str, config: dict[str, Any], data: FoldData, out_dir: Path, seed: int, pretrained: Path | None
) -> tuple[Any, dict[str, Any]]:
    """Build `model`'s encoder (loading a pretrained state if given) and fit it; see fit_module."""
    from pianoeval.training.registry import build_network

    net = build_network(model, data.meta, config)
    write_json({"kind": "network", "model": model, "meta": data.meta}, out_dir / "model_spec.json")
    if pretrained is not None:
        state = torch.load(pretrained, weights_only=False)
        missing, unexpected = net.load_state_dict(state["encoder"], strict=False)
        log.info(
            "loaded pretrained encoder %s (missing %d, unexpected %d keys)",
            pretrained,
            len(missing),
            len(unexpected),
        )
    return fit_module(net, config, data, out_dir, seed)


def fit_module(
    net: torch.nn.Module, config: dict[str, Any], data: FoldData, out_dir: Path, seed: int
) -> tuple[Any, dict[str, Any]]:
    """Fit a PerformanceModule around `net` with early stopping on the dev split; return (best module, info)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from pianoeval.training.module import PerformanceModule

    tcfg = config["training"]
    module = PerformanceModule(
        net,
        lr=tcfg["lr"],
        weight_decay=tcfg["weight_decay"],
        loss_weights=tcfg["loss_weights"],
        max_epochs=tcfg["max_epochs"],
        label_mean=data.labels("train").mean(axis=0).tolist(),
    )
    train_loader = make_loader(data.subset("train"), tcfg["batch_size"], True, seed, tcfg["num_workers"])
    dev_split = "dev" if data.splits["dev"] else "train"
    dev_loader = make_loader(data.subset(dev_split), tcfg["batch_size"], False, seed)
    ckpt_dir = out_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="dev/selection", mode="max", save_last=True)
    trainer = L.Trainer(
        max_epochs=tcfg["max_epochs"],
        accelerator="auto",
        devices=1,
        precision=tcfg["precision"],
        callbacks=[EarlyStopping(monitor="dev/selection", mode="max", patience=tcfg["patience"]), checkpoint],
        logger=CSVLogger(out_dir, name="logs", version=""),
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.exists() else None  # a killed run continues from its last epoch
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(module, train_loader, dev_loader, ckpt_path=resume)
    best_path = checkpoint.best_model_path or str(last)
    best = torch.load(best_path, weights_only=False)
    module.load_state_dict(best["state_dict"])
    info = {
        "best_epoch": int(best.get("epoch", -1)),
        "epochs_run": int(trainer.current_epoch),
        "best_dev_selection": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "n_parameters": int(sum(p.numel() for p in module.parameters())),
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
    metrics.update(
        {
            "n_train": len(data.splits["train"]),
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
    with atomic_path(out_dir / "embeddings.pt") as tmp:
        torch.save(payload, tmp)
    metrics["wall_s"] = round(time.perf_counter() - start, 2)
    write_json(metrics, out_dir / "metrics.json")  # last: its presence means the fold is complete
    return metrics


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
) -> dict[str, Any]:
    """Train `model` on fold `fold`; write metrics.json, predictions.csv, embeddings.pt, provenance."""
    import lightning as L

    from pianoeval.data.manifest import read_manifest
    from pianoeval.provenance import write_provenance

    start = time.perf_counter()
    seed = fold_seed(config, fold)
    L.seed_everything(seed, workers=True, verbose=False)
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
    store = load_feature_store(features_path)
    data = load_fold_data(store, read_manifest(manifest_path), read_json(folds_path), fold)
    info: dict[str, Any] = {}
    if model.startswith("baseline_"):
        preds = _baseline_predict(model, data)
        embs = None
    else:
        module, info = train_network(model, config, data, out_dir, seed, pretrained)
        preds, embs = _predict_network(module, data, config["training"]["batch_size"])
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
    """Rebuild a trained PerformanceModule from a train/fuse fold folder (spec, config, best checkpoint)."""
    import yaml

    from pianoeval.config import validate_config
    from pianoeval.training.module import PerformanceModule

    spec = read_json(fold_dir / "model_spec.json")
    config = validate_config(yaml.safe_load((fold_dir / "config.yaml").read_text()), fold_dir / "config.yaml")
    if spec["kind"] == "network":
        from pianoeval.training.registry import build_network

        net = build_network(spec["model"], spec["meta"], config)
    else:
        from pianoeval.fusion import build_fusion

        net = build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    module = PerformanceModule(net)
    ckpt = fold_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        ckpt = fold_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        from pianoeval.errors import InputError

        raise InputError("no checkpoint in this training folder; rerun its rule", fold_dir)
    module.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    module.eval()
    return module
