"""Train one fusion variant on one fold from the single-track winners' embeddings of that fold."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.training.data import FoldData

log = logging.getLogger(__name__)


def winner_embeddings(winner_json: Path, fold: int) -> tuple[str, dict[str, Any]]:
    """(model name, embeddings payload) of a track winner's fold, found beside results/compare/."""
    winner = read_json(winner_json)
    results = winner_json.resolve().parents[2]
    path = results / "train" / winner["track"] / winner["model"] / f"fold_{fold}" / "embeddings.pt"
    if not path.is_file():
        raise InputError("the winner's embeddings are missing; rerun its train rule", path)
    payload = torch.load(path, weights_only=False)
    if payload.get("z") is None:
        raise InputError("the winner has no embeddings (a baseline cannot be fused)", path)
    return winner["model"], payload


def score_statistics(stats_path: Path) -> dict[str, torch.Tensor]:
    """{segment id: score-relative statistics [17]} (`SCORE_COLUMNS`, the last the aligned flag) from
    the featurize `stats` store; InputError if the store lacks the score columns."""
    from pianoeval.symbolic.stats import ALL_STAT_NAMES, SCORE_COLUMNS
    from pianoeval.training.data import load_feature_store

    items = load_feature_store(stats_path)["items"]
    n_stats = len(next(iter(items.values()))["stats"]) if items else 0
    if n_stats != len(ALL_STAT_NAMES):
        raise InputError(
            f"statistics store has {n_stats} columns, not the {len(ALL_STAT_NAMES)} with score statistics; "
            "rerun its featurize rule",
            stats_path,
        )
    return {sid: item["stats"][SCORE_COLUMNS].float() for sid, item in items.items()}


def build_fusion_data(
    audio: dict[str, Any],
    symbolic: dict[str, Any],
    manifest: Any,
    score_stats: dict[str, torch.Tensor] | None = None,
) -> FoldData:
    """Join both tracks' embeddings by segment id into FoldData items (splits as the encoders saw them).

    `score_stats` (`score_statistics`) adds each item's score-relative statistics for the
    score-conditioned fusions; a segment without them is skipped.
    """
    from pianoeval.data.manifest import label_matrix
    from pianoeval.pipeline.transcribe_corpus import split_view_id

    labels = label_matrix(manifest)
    row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    group_index = {g: i for i, g in enumerate(sorted(manifest["segment_group"].unique()))}
    a_index = {sid: i for i, sid in enumerate(audio["ids"])}
    items: list[dict[str, Any]] = []
    splits: dict[str, list[int]] = {"train": [], "dev": [], "val": []}
    missing = []
    for j, sid in enumerate(symbolic["ids"]):
        # A transcription view (`<id>@<view>`, training split only) pairs with its recording's audio.
        source = split_view_id(sid)[0]
        i = a_index.get(source)
        if i is None or (score_stats is not None and sid not in score_stats):
            missing.append(sid)
            continue
        if audio["split"][i] != symbolic["split"][j]:
            raise InputError(f"segment {sid} is in different splits in the two tracks' embeddings")
        row = row_of[source]
        items.append(
            {
                "z_audio": audio["z"][i],
                "scores_audio": audio["scores"][i],
                "z_symbolic": symbolic["z"][j],
                "scores_symbolic": symbolic["scores"][j],
                "labels": torch.tensor(labels[row], dtype=torch.float32),
                "group": torch.tensor(group_index[manifest["segment_group"].iloc[row]]),
                "segment_id": sid,
                "split": symbolic["split"][j],
            }
        )
        if score_stats is not None:
            items[-1]["score_stats"] = score_stats[sid]
        splits[symbolic["split"][j]].append(len(items) - 1)
    if not splits["train"] or not splits["val"]:
        raise InputError("the two tracks share no train/val segments; check both tracks ran on the same folds")
    return FoldData(items, splits, {}, missing)


def error_correlation(data: FoldData, split: str = "val") -> float:
    """Pearson r between the two tracks' residuals (prediction - label) on a split, pooled over dims."""
    idx = data.splits[split]
    y = np.stack([data.items[i]["labels"].numpy() for i in idx])
    ea = np.stack([data.items[i]["scores_audio"].numpy() for i in idx]) - y
    es = np.stack([data.items[i]["scores_symbolic"].numpy() for i in idx]) - y
    return float(np.corrcoef(ea.ravel(), es.ravel())[0, 1])


def run_fuse(
    fusion: str,
    config: dict[str, Any],
    fold: int,
    manifest_path: Path,
    folds_path: Path,
    symbolic_winner: Path,
    audio_winner: Path,
    out_dir: Path,
    devices: int = 1,
    stats_path: Path | None = None,
) -> dict[str, Any]:
    """Fit fusion `fusion` (f1/f2/f3[_score]) on fold `fold` on `devices` devices (DDP when more than
    1) and write the usual fold outputs; a DDP worker process returns {} and writes nothing."""
    from pianoeval.core.provenance import write_provenance
    from pianoeval.data.manifest import read_manifest
    from pianoeval.networks.fusion import build_fusion
    from pianoeval.training.train import _predict_network, fit_module, fold_seed, write_fold_outputs

    start = time.perf_counter()
    seed = fold_seed(config, fold)
    L.seed_everything(seed, workers=True, verbose=False)
    # Inputs are checked before anything is written: bad input leaves no output folder.
    score_stats = None
    if fusion.endswith("_score"):
        if stats_path is None:
            raise InputError(f"{fusion} is score-conditioned: pass --stats (the featurize stats store)")
        score_stats = score_statistics(stats_path)
    sym_model, sym = winner_embeddings(symbolic_winner, fold)
    aud_model, aud = winner_embeddings(audio_winner, fold)
    data = build_fusion_data(aud, sym, read_manifest(manifest_path), score_stats)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, config, seed, fusion=fusion, fold=fold, symbolic=sym_model, audio=aud_model)
    dims = {
        "audio_dim": int(aud["z"].shape[1]),
        "symbolic_dim": int(sym["z"].shape[1]),
        "hidden": config["fusion"]["hidden"],
    }
    net = build_fusion(fusion, **dims)
    write_json({"kind": "fusion", "model": fusion, **dims}, out_dir / "model_spec.json")
    module, info = fit_module(net, config, data, out_dir, seed, devices=devices)
    if module is None:
        return {}
    preds, embs = _predict_network(module, data, config["training"]["batch_size"])
    extra: dict[str, Any] = {
        "track": "fusion",
        "model": fusion,
        "fold": fold,
        "seed": seed,
        "symbolic_model": sym_model,
        "audio_model": aud_model,
        "error_correlation": error_correlation(data),
        **info,
    }
    if hasattr(net, "get_gates"):
        from pianoeval.core.constants import DIMENSIONS
        from pianoeval.data.datasets import multi_task_collate_fn

        module.eval()
        with torch.no_grad():
            gates = net.get_gates(multi_task_collate_fn(data.subset("val"))).mean(dim=0)
        extra["audio_gate_per_dimension"] = dict(zip(DIMENSIONS, gates.tolist(), strict=True))
    metrics = write_fold_outputs(data, preds, embs, out_dir, extra, start)
    log.info("fusion %s fold %d: pairwise %.3f, R2 %.3f", fusion, fold, metrics["pairwise_acc"], metrics["r2"])
    return metrics
