"""Does corpus pretraining (rule pretrain_corpus) help the symbolic encoders? docs/benchmarks.md.

Reads a results folder of a PercePiano experiment that has run featurize and folds (and, for the
pretrained arm, pretrain_corpus): RESULTS/featurize/{tokens,graphs,curves,stats}.pt,
RESULTS/prepare/manifest.parquet, RESULTS/folds/folds.json, RESULTS/pretrain_corpus/<model>/encoder.pt.

    python scripts/bench_pretraining.py probe RESULTS --config EXP.yaml --out probe.json
    python scripts/bench_pretraining.py finetune RESULTS --config EXP.yaml --models s3 s3_deep --out ft.json

`probe`: each encoder frozen (random weights, and the corpus weights), its mean-pooled states and
its local features as inputs of ridge (alpha chosen on dev), alone and beside the statistics, per
fold: train -> dev. `finetune`: each model trained per fold from random weights and from the corpus
encoder (same seed, same settings otherwise); dev and val metrics. Choices are made on dev only.

    python scripts/bench_pretraining.py paired RESULTS --without RESULTS_NO_CORPUS --config EXP.yaml \
        --models s3_deep s3 --out paired.json

`paired`: the pipeline's own fold outputs (results/train/symbolic/<model>/fold_*/) of two results
trees over the same folds, one trained from the corpus encoder and one not (two experiments run with
`snakemake --directory`), through the compare step's paired bootstrap: each arm's interval, the
with - without difference, and each wide & deep arm minus `baseline_blend` (the wide part alone).
`--row NAME=DIR` (repeatable) adds a reference row from any tree over the same folds, e.g.
`--row ridge=<tree>/results/train/symbolic/baseline_ridge`: every arm minus it is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

KIND = {"s1": "tokens", "s2": "graphs", "s3": "curves"}
ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def machine() -> dict[str, Any]:
    """Commit, load and cores: beside every figure."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "load": os.getloadavg(), "cores": os.cpu_count(), "python": platform.python_version()}


def _inputs(results: Path) -> tuple[Any, dict[str, Any]]:
    from pianoeval.core.io import read_json
    from pianoeval.data.manifest import read_manifest

    return read_manifest(results / "prepare" / "manifest.parquet"), read_json(results / "folds" / "folds.json")


@torch.no_grad()
def _embed(encoder: torch.nn.Module, items: list[dict[str, Any]], model: str) -> dict[str, np.ndarray]:
    """{'context': mean-pooled final states [N, H], 'local': mean-pooled first-stage states [N, H]}."""
    from pianoeval.data.datasets import multi_task_collate_fn

    encoder.eval()
    out: dict[str, list[np.ndarray]] = {"context": [], "local": []}
    for start in range(0, len(items), 32):
        batch = multi_task_collate_fn(
            [{k: v for k, v in it.items() if k != "stats"} for it in items[start : start + 32]]
        )
        h, mask = encoder.encode_sequence(batch)
        w = mask.unsqueeze(-1).float()
        out["context"].append(((h * w).sum(1) / w.sum(1).clamp(min=1)).numpy())
        if model == "s3":
            f, m = encoder.local_features(batch["curves"], batch.get("curve_mask"))
        elif model == "s1":
            ids = batch["input_ids"]
            m = batch.get("attention_mask", ids != encoder.pad_token_id).bool()
            f = encoder.token_embedding(ids)
        else:
            f = encoder.input_proj(batch["graph"].x)
            from torch_geometric.utils import to_dense_batch

            f, m = to_dense_batch(f, batch["graph"].batch)
        w = m.unsqueeze(-1).float()
        out["local"].append(((f * w).sum(1) / w.sum(1).clamp(min=1)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _ridge_dev(x: dict[str, np.ndarray], y: dict[str, np.ndarray], g: np.ndarray) -> dict[str, float]:
    """Ridge fitted on train, alpha chosen on dev (pairwise + R²/2, as the training's selection)."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from pianoeval.metrics import MetricsSuite

    scaler = StandardScaler().fit(x["train"])
    best: dict[str, float] = {}
    for alpha in ALPHAS:
        reg = Ridge(alpha=alpha).fit(scaler.transform(x["train"]), y["train"])
        m = MetricsSuite().compute(np.clip(reg.predict(scaler.transform(x["dev"])), 0, 1), y["dev"], g)
        score = m["pairwise_acc"] + 0.5 * m["r2"]
        if not best or score > best["selection"]:
            best = {"pairwise_acc": m["pairwise_acc"], "r2": m["r2"], "alpha": alpha, "selection": score}
    return best


def probe(results: Path, config: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """Frozen encoders (random / corpus) as ridge inputs, per fold, train -> dev."""
    from pianoeval.core.settings import FitSettings
    from pianoeval.steps.pretrain import load_corpus_encoder
    from pianoeval.training.data import load_feature_store, load_fold_data
    from pianoeval.training.registry import build_encoder

    manifest, folds = _inputs(results)
    rows: dict[str, list[dict[str, float]]] = {}
    for model in models:
        store = load_feature_store(results / "featurize" / f"{KIND[model]}.pt")
        ids = sorted(store["items"])
        items = [store["items"][k] for k in ids]
        stats = np.stack([it["stats"].numpy() for it in items])
        for arm in ("random", "corpus"):
            torch.manual_seed(int(config["seed"]))
            encoder = build_encoder(model, store["meta"], FitSettings.from_config(config))
            if arm == "corpus":
                load_corpus_encoder(encoder, results / "pretrain_corpus" / model / "encoder.pt")
            emb = _embed(encoder, items, model)
            pos = {k: i for i, k in enumerate(ids)}
            for spec in folds["folds"]:
                data = load_fold_data(store, manifest, folds, int(spec["fold"]))
                idx = {s: [pos[data.items[i]["segment_id"]] for i in data.splits[s]] for s in ("train", "dev")}
                y = {s: data.labels(s) for s in ("train", "dev")}
                variants = {"stats": stats, **emb, **{f"{k}+stats": np.hstack([v, stats]) for k, v in emb.items()}}
                for name, feats in variants.items():
                    if name == "stats" and (arm == "corpus" or model != models[0]):
                        continue  # the statistics alone: once
                    key = "stats alone" if name == "stats" else f"{model} {arm} {name}"
                    rows.setdefault(key, []).append(_ridge_dev({s: feats[idx[s]] for s in idx}, y, data.groups("dev")))
    return {k: _summary(v) for k, v in rows.items()}


def _ci(ci: list[float], signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return "[" + ", ".join(fmt.format(v) for v in ci) + "]"


def _summary(values: list[dict[str, float]]) -> dict[str, Any]:
    pw, r2 = np.array([v["pairwise_acc"] for v in values]), np.array([v["r2"] for v in values])
    return {
        "folds": len(values),
        "pairwise_acc": float(pw.mean()),
        "pairwise_std": float(pw.std()),
        "r2": float(r2.mean()),
        "r2_std": float(r2.std()),
        "per_fold": values,
    }


def finetune(results: Path, config: dict[str, Any], models: list[str], folds_run: list[int]) -> dict[str, Any]:
    """Each model per fold from random weights and from the corpus encoder; dev and val metrics."""
    from pianoeval.core.settings import FitSettings
    from pianoeval.training.data import load_feature_store, load_fold_data
    from pianoeval.training.fit import fit_predict, fold_seed
    from pianoeval.training.outputs import evaluate
    from pianoeval.training.registry import encoder_of

    manifest, folds = _inputs(results)
    out: dict[str, Any] = {}
    for model in models:
        encoder = encoder_of(model)
        store = load_feature_store(results / "featurize" / f"{KIND[encoder]}.pt")
        for arm in ("random", "corpus"):
            pretrained = results / "pretrain_corpus" / encoder / "encoder.pt" if arm == "corpus" else None
            for fold in folds_run:
                data = load_fold_data(store, manifest, folds, fold)
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    preds, _, info = fit_predict(
                        "symbolic",
                        model,
                        FitSettings.from_config(config),
                        data,
                        Path(tmp),
                        fold_seed(config["seed"], fold),
                        pretrained,
                    )
                row = {
                    split: {
                        k: v
                        for k, v in evaluate(preds[split], data, split).items()
                        if k in ("pairwise_acc", "r2", "per_dimension")
                    }
                    for split in ("dev", "val")
                }
                row.update(
                    best_epoch=info.get("best_epoch"),
                    wall_s=round(time.perf_counter() - start, 1),
                    load=os.getloadavg(),
                )
                out.setdefault(f"{model} {arm}", {})[str(fold)] = row
                print(
                    model,
                    arm,
                    fold,
                    {s: (round(row[s]["pairwise_acc"], 4), round(row[s]["r2"], 4)) for s in ("dev", "val")},
                    row["best_epoch"],
                    row["wall_s"],
                    flush=True,
                )
    return out


def paired(
    with_root: Path,
    without_root: Path,
    config: dict[str, Any],
    models: list[str],
    names: tuple[str, str] = ("corpus", "random"),
    extra: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """The compare step's paired bootstrap over two results trees of the same folds: every model with the
    corpus pretraining (`with_root`) and without (`without_root`), each arm's interval, and per model
    the with - without difference and each arm minus the wide part alone (`baseline_blend`). `names`
    label the two arms (two other settings: e.g. a dev-chosen setting against the reference run). `extra`:
    reference rows {name: a model's folder of fold_*/ outputs over the same folds}, each in the bootstrap,
    and every model arm minus each of them (e.g. the deep-only models against a baseline of another tree)."""
    from pianoeval.evaluation.compare import difference, read_fold_predictions, read_runs
    from pianoeval.metrics import paired_bootstrap, percentile_interval

    rows: dict[str, list[dict[str, Any]]] = {}
    predictions: list[Path] = []

    def add(name: str, folder: Path) -> bool:
        """One model's fold outputs under `folder` as the bootstrap's row `name`; False when it has none."""
        files = sorted(folder.glob("fold_*/metrics.json"))
        if files:
            (rows[name],) = read_runs(files).values()
            predictions.extend(f.with_name("predictions.csv") for f in files)
        return bool(files)

    arms = ((names[0], with_root), (names[1], without_root))
    for arm, root in arms:
        for model in [*models, "baseline_blend"]:
            if model == "baseline_blend" and arm == names[1]:
                continue  # the same wide part in both trees: once
            add(model if model == "baseline_blend" else f"{model} {arm}", root / "train" / "symbolic" / model)
    for name, folder in (extra or {}).items():
        if not add(name, Path(folder)):
            raise SystemExit(f"error: {folder}: no fold_*/metrics.json")
    settings = config["compare"]
    boot = paired_bootstrap(
        read_fold_predictions(rows, predictions), n_resamples=int(settings["resamples"]), seed=int(config["seed"])
    )
    out: dict[str, Any] = {"rows": {}, "differences": []}
    for name, runs in rows.items():
        out["rows"][name] = {
            metric: {"mean": boot[name][metric][0], "ci95": percentile_interval(boot[name][metric][1], 0.95)}
            for metric in ("pairwise_acc", "r2")
        }
        out["rows"][name].update(folds=len(runs), train_s=sum(float(r.get("wall_s", 0.0)) for r in runs))
    for model in models:
        pairs = [(f"{model} {names[0]}", f"{model} {names[1]}")]
        pairs += [(f"{model} {arm}", "baseline_blend") for arm, _ in arms if not model.endswith("_deep")]
        pairs += [(f"{model} {arm}", name) for arm, _ in arms for name in extra or {}]
        for a, b in pairs:
            if a in boot and b in boot:
                out["differences"] += [difference(boot, a, b, metric) for metric in ("pairwise_acc", "r2")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["probe", "finetune", "paired"])
    parser.add_argument("results", type=Path)
    parser.add_argument("--without", type=Path, help="paired: the results tree of the same folds without the corpus")
    parser.add_argument("--config", required=True, help="the experiment's config file")
    parser.add_argument("--models", nargs="+", default=["s1", "s2", "s3"])
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument(
        "--set", nargs="*", default=[], help="training overrides, e.g. max_epochs=2 encoder_lr_scale=0.3"
    )
    parser.add_argument(
        "--arms", nargs=2, default=["corpus", "random"], help="paired: labels of RESULTS and of --without"
    )
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="paired: a reference row, a model's folder of fold_*/ outputs (every arm minus it is reported)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    extra = dict(r.split("=", 1) for r in args.row)

    from pianoeval.core.config import load_config
    from pianoeval.core.io import write_json

    overrides = {"training": {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}}
    config = load_config(args.config, overrides=overrides)
    start, before = time.perf_counter(), machine()
    if args.what == "probe":
        result = probe(args.results, config, args.models)
    elif args.what == "paired":
        result = paired(args.results, args.without, config, args.models, tuple(args.arms), extra)
    else:
        result = finetune(args.results, config, args.models, args.folds)
    payload = {
        "what": args.what,
        "command": " ".join(
            [
                "python scripts/bench_pretraining.py",
                args.what,
                "RESULTS",
                *(["--models", *args.models]),
                *(["--set", *args.set] if args.set else []),
                *(["--arms", *args.arms] if args.what == "paired" else []),
                *[f"--row {r}" for r in args.row],
            ]
        ),
        "training": config["training"],
        "corpus": config["symbolic"]["corpus"],
        "machine_before": before,
        "machine_after": machine(),
        "wall_s": round(time.perf_counter() - start, 1),
        "result": result,
    }
    write_json(payload, args.out)
    print(json.dumps({k: (v if k != "result" else "...") for k, v in payload.items()}, indent=1, default=str))
    if args.what == "paired":
        for name, row in result["rows"].items():
            pw, r2 = row["pairwise_acc"], row["r2"]
            print(f"{name:24s} pairwise {pw['mean']:.3f} {_ci(pw['ci95'])}  R² {r2['mean']:.3f} {_ci(r2['ci95'])}")
        for d in result["differences"]:
            print(f"{d['a']:>18s} - {d['b']:18s} {d['metric']:12s} {d['mean']:+.3f} {_ci(d['ci95'], True)}")
    if args.what == "probe":
        for name, row in result.items():
            pw, r2 = f"{row['pairwise_acc']:.3f} ± {row['pairwise_std']:.3f}", f"{row['r2']:.3f} ± {row['r2_std']:.3f}"
            print(f"{name:32s} dev pairwise {pw}  R² {r2}")


if __name__ == "__main__":
    main()
