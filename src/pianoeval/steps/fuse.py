"""Train one fusion variant on one fold from the single-track winners' embeddings of that fold."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.core.layout import FoldDir
from pianoeval.core.settings import FitSettings
from pianoeval.data.folds import read_folds
from pianoeval.data.leaks import KeyGroups, recorded_groups
from pianoeval.training.fusion_data import build_fusion_data, error_correlation, score_statistics

log = logging.getLogger(__name__)


@dataclass
class WinnerInputs:
    """A track winner's files for one fold: `winner.json` (its name), the outer fold model's
    `embeddings.pt` (dev and validation rows) and its inner folds' `oof.pt` (the training rows)."""

    winner: Path
    embeddings: Path
    out_of_fold: list[Path]


def winner_embeddings(inputs: WinnerInputs, fold: int, index: KeyGroups) -> tuple[str, dict[str, Any]]:
    """(model name, embeddings payload) of a track winner's fold with its training rows' embeddings and
    scores out of fold (training/stacking.py)."""
    from pianoeval.training.stacking import stack_out_of_fold

    model = read_json(inputs.winner)["model"]
    if not inputs.embeddings.is_file():
        raise InputError("the winner's embeddings are missing; rerun its train rule", inputs.embeddings)
    payload = torch.load(inputs.embeddings, weights_only=False)
    if payload.get("z") is None:
        raise InputError("the winner has no embeddings (a baseline cannot be fused)", inputs.embeddings)
    recorded_groups(payload, inputs.embeddings)  # refuses embeddings made before the leak guard
    return model, stack_out_of_fold(payload, inputs.out_of_fold, index, fold, model)


def run_fuse(
    fusion: str,
    config: dict[str, Any],
    fold: int,
    manifest_path: Path,
    folds_path: Path,
    symbolic: WinnerInputs,
    audio: WinnerInputs,
    out_dir: Path,
    devices: int = 1,
    stats_path: Path | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Fit fusion `fusion` (f1/f2/f3[_score]) on fold `fold` on `devices` devices (DDP when more than
    1) and write the usual fold outputs; a DDP worker process returns {} and writes nothing.

    The training rows carry both winners' out-of-fold embeddings and scores (`WinnerInputs.out_of_fold`),
    never their in-sample ones; dev and validation rows the outer fold models'.
    """
    from pianoeval.core.provenance import write_provenance
    from pianoeval.data.leaks import check_no_leak, split_groups
    from pianoeval.data.manifest import read_manifest
    from pianoeval.networks.fusion import build_fusion
    from pianoeval.training.fit import fit_module, fold_seed
    from pianoeval.training.leaks import learned_from_record
    from pianoeval.training.outputs import write_fold_outputs
    from pianoeval.training.predict import predict_network

    start = time.perf_counter()
    # fusion, training and seed, built once; training as this variant trains (by_model: f1 for f1_score too).
    settings = FitSettings.from_config(config).for_model(fusion)
    seed = fold_seed(settings.seed, fold)
    L.seed_everything(seed, workers=True, verbose=False)
    # Inputs are checked before anything is written: bad input leaves no output folder.
    score_stats = _score_statistics(fusion, stats_path)
    manifest = read_manifest(manifest_path)
    index = KeyGroups(manifest)
    sym_model, sym = winner_embeddings(symbolic, fold, index)
    aud_model, aud = winner_embeddings(audio, fold, index)
    data = build_fusion_data(aud, sym, manifest, score_stats)
    # The guard: the fusion's own rows, both fold models and their inner models, none of the
    # fold's validation music.
    record = learned_from_record(data, index, extra=[*sym["learned_from_groups"], *aud["learned_from_groups"]])
    check_no_leak(out_dir, fold, record["learned_from_groups"], split_groups(read_folds(folds_path), fold, index))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, config, seed, fusion=fusion, fold=fold, symbolic=sym_model, audio=aud_model)
    dims = {
        "audio_dim": int(aud["z"].shape[1]),
        "symbolic_dim": int(sym["z"].shape[1]),
        "hidden": settings.need("fusion").hidden,
    }
    net = build_fusion(fusion, **dims)
    write_json({"kind": "fusion", "model": fusion, **dims}, FoldDir(out_dir).model_spec)
    module, info = fit_module(net, settings, data, out_dir, seed, devices=devices, checkpoint_dir=checkpoint_dir)
    if module is None:
        return {}
    from pianoeval.core.device import resolve_device

    batch_size = settings.need("training").batch_size
    preds, embs = predict_network(module, data, batch_size, resolve_device(devices))
    extra: dict[str, Any] = {
        "track": "fusion",
        "model": fusion,
        "fold": fold,
        "seed": seed,
        "symbolic_model": sym_model,
        "audio_model": aud_model,
        "error_correlation": error_correlation(data),
        "stacking": {"training_rows": "out_of_fold", "inner_folds": len(symbolic.out_of_fold)},
        **info,
        **record,
    }
    if hasattr(net, "get_gates"):
        extra["audio_gate_per_dimension"] = _mean_gates(net, module, data)
    metrics = write_fold_outputs(data, preds, embs, out_dir, extra, start)
    log.info("fusion %s fold %d: pairwise %.3f, R2 %.3f", fusion, fold, metrics["pairwise_acc"], metrics["r2"])
    return metrics


def _score_statistics(fusion: str, stats_path: Path | None) -> dict[str, torch.Tensor] | None:
    """The score-relative statistics a `_score` fusion reads (InputError without a stats store), else None."""
    if not fusion.endswith("_score"):
        return None
    if stats_path is None:
        raise InputError(f"{fusion} is score-conditioned: pass --stats (the featurize stats store)")
    return score_statistics(stats_path)


def _mean_gates(net: Any, module: Any, data: Any) -> dict[str, float]:
    """{dimension: the gated fusion's mean audio gate over the validation rows}."""
    from pianoeval.core.constants import DIMENSIONS
    from pianoeval.data.datasets import multi_task_collate_fn

    module.eval()
    with torch.no_grad():
        gates = net.get_gates(multi_task_collate_fn(data.subset("val"))).mean(dim=0)
    return dict(zip(DIMENSIONS, gates.tolist(), strict=True))
