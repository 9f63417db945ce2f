"""Train one fusion variant on one fold from the single-track winners' embeddings of that fold."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.training.fusion_data import build_fusion_data, error_correlation, score_statistics

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
    from pianoeval.training.fit import fit_module, fold_seed
    from pianoeval.training.outputs import write_fold_outputs
    from pianoeval.training.predict import predict_network

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
    from pianoeval.core.device import resolve_device

    preds, embs = predict_network(module, data, config["training"]["batch_size"], resolve_device(devices))
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
