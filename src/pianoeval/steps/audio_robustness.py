"""The audio_robustness rule: one audio model under every recording condition (the audio comparison's veto)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.io import read_json, write_json
from pianoeval.evaluation.robustness import _condition_entry, _metric, audio_outputs, conditions, degrade, group_subset

log = logging.getLogger(__name__)


def run_audio_robustness(
    model: str,
    config: dict[str, Any],
    manifest_path: Path,
    folds_path: Path,
    results: Path,
    out: Path,
    devices: int | None = None,
) -> dict[str, Any]:
    """One audio model on its validation folds under every condition (clean audio as the reference):
    per-condition pairwise accuracy, R², score drop and Pearson r, the worst drop, and whether it stays
    within `robustness.veto_drop_pct` (the audio comparison vetoes a model that does not). Uses
    `robustness.audio_per_fold` recordings per fold (whole segment groups; 0 = all), on the device the job
    reserved (`devices`), in bounded batches. Writes `out`."""
    from tqdm import tqdm

    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.audio.io import load_audio
    from pianoeval.core.device import resolve_device
    from pianoeval.data.manifest import label_matrix, read_manifest
    from pianoeval.training.checkpoints import load_trained_module
    from pianoeval.training.registry import audio_backbone, build_frozen_backbone

    manifest = read_manifest(manifest_path)
    labels = label_matrix(manifest)
    row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    sr = int(config["render"]["sample_rate"])
    rob = config["robustness"]
    device = resolve_device(devices)
    backbone = build_frozen_backbone(audio_backbone(model, config), config).to(device)
    conds = [("clean", []), *conditions(rob["snr_db"])]
    preds: dict[str, list[np.ndarray]] = {name: [] for name, _ in conds}
    targets, groups = [], []
    for spec in read_json(folds_path)["folds"]:
        fold = int(spec["fold"])
        module = load_trained_module(results / "train" / "audio" / model / f"fold_{fold}").to(device)
        ids = [s for s in spec["val"] if s in row_of and isinstance(manifest["audio_path"].iloc[row_of[s]], str)]
        g = manifest["segment_group"].iloc[[row_of[s] for s in ids]].to_numpy()
        ids = [ids[i] for i in group_subset(g, int(rob["audio_per_fold"]))]
        rows = [row_of[s] for s in ids]
        targets.append(labels[rows])
        groups.append(manifest["segment_group"].iloc[rows].to_numpy())
        waves = [load_audio(manifest["audio_path"].iloc[r], sample_rate=sr) for r in rows]
        augmentor = AudioAugmentor(seed=int(config["seed"]) + fold, sample_rate=sr)
        for name, chain in tqdm(conds, desc=f"{model} robustness fold {fold}", mininterval=5):
            degraded = [degrade(w, chain, augmentor) for w in waves]
            preds[name].append(
                audio_outputs(module, backbone, degraded, sr, float(config["audio"]["clip_seconds"]))[1].numpy()
            )
    y = np.concatenate(targets)
    g = np.unique(np.concatenate(groups), return_inverse=True)[1]
    veto = float(rob["veto_drop_pct"])
    clean = np.concatenate(preds["clean"])
    report: dict[str, Any] = {
        "model": model,
        "veto_drop_pct": veto,
        "n_segments": len(y),
        "clean": _metric(clean, y, g),
        "conditions": {},
    }
    for name, _ in conds[1:]:
        report["conditions"][name] = _condition_entry(clean, np.concatenate(preds[name]), y, g, veto)
    report["worst_drop_pct"] = float(max(c["score_drop_pct"] for c in report["conditions"].values()))
    report["passed"] = bool(report["worst_drop_pct"] <= veto)
    write_json(report, out)
    log.info(
        "%s robustness: worst drop %.1f%% (%s)", model, report["worst_drop_pct"], "pass" if report["passed"] else "veto"
    )
    return report
