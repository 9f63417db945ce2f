"""The audio_robustness rule: one audio model under every recording condition (the audio comparison's veto)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.io import write_json
from pianoeval.core.layout import Results
from pianoeval.core.settings import FitSettings, RobustnessSettings
from pianoeval.data.folds import read_folds
from pianoeval.evaluation.robustness import audio_outputs, evaluate_folds, group_subset

log = logging.getLogger(__name__)


class AudioFoldScorer:
    """One audio model's fold: `per_fold` of its validation recordings (whole groups; 0 = all) scored
    from the frozen backbone's embedding of each degraded waveform."""

    def __init__(self, module: Any, backbone: Any, manifest: Any, settings: FitSettings, per_fold: int) -> None:
        self.module, self.backbone, self.manifest = module, backbone, manifest
        self.row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
        self.sample_rate = int(settings.need("sample_rate"))
        self.clip_seconds = float(settings.need("audio").clip_seconds)
        self.per_fold = int(per_fold)

    def recordings(self, val_ids: list[str]) -> list[str]:
        """The rendered validation segments, `per_fold` of them in whole groups."""
        audio = self.manifest["audio_path"]
        ids = [s for s in val_ids if s in self.row_of and isinstance(audio.iloc[self.row_of[s]], str)]
        groups = self.manifest["segment_group"].iloc[[self.row_of[s] for s in ids]].to_numpy()
        return [ids[i] for i in group_subset(groups, self.per_fold)]

    def __call__(self, condition: str, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
        """{"audio": scores [N, 19]}."""
        scores = audio_outputs(self.module, self.backbone, waves, self.sample_rate, self.clip_seconds)[1]
        return {"audio": scores.numpy()}


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
    reserved (`devices`), in bounded batches. Reads the model's fold folders under `results`; writes `out`."""
    from pianoeval.core.device import resolve_device
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.checkpoints import load_trained_module
    from pianoeval.training.registry import audio_backbone, build_frozen_backbone

    manifest = read_manifest(manifest_path)
    # The render, audio, robustness sections and the seed, built once.
    settings, rob = FitSettings.from_config(config), RobustnessSettings.from_config(config)
    device = resolve_device(devices)
    backbone = build_frozen_backbone(audio_backbone(model, settings.backbone.backbone), settings.backbone).to(device)

    def scorer_for(fold: int) -> AudioFoldScorer:
        module = load_trained_module(Results(results).fold("audio", model, fold).path).to(device)
        return AudioFoldScorer(module, backbone, manifest, settings, rob.audio_per_fold)

    preds = evaluate_folds(
        manifest,
        read_folds(folds_path)["folds"],
        rob.snr_db,
        int(settings.need("sample_rate")),
        settings.seed,
        scorer_for,
        desc=f"{model} robustness",
    )
    veto = float(rob.veto_drop_pct)
    clean, entries = preds.entries("audio", veto)
    report: dict[str, Any] = {
        "model": model,
        "veto_drop_pct": veto,
        "n_segments": len(preds.labels()[0]),
        "clean": clean,
        "conditions": entries,
    }
    report["worst_drop_pct"] = float(max(c["score_drop_pct"] for c in entries.values()))
    report["passed"] = bool(report["worst_drop_pct"] <= veto)
    write_json(report, out)
    verdict = "pass" if report["passed"] else "veto"
    log.info("%s robustness: worst drop %.1f%% (%s)", model, report["worst_drop_pct"], verdict)
    return report
