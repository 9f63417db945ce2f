"""The robustness rule: the final model on its validation folds under recording conditions and through transcription."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.errors import ConfigError
from pianoeval.core.io import read_json, write_json
from pianoeval.core.layout import Results
from pianoeval.core.settings import FitSettings, RobustnessSettings
from pianoeval.data.folds import read_folds
from pianoeval.evaluation.report import plot_drops, write_robustness_markdown
from pianoeval.evaluation.robustness import (
    _symbolic_scorer,
    _transcribed_condition,
    _transcribed_entry,
    audio_outputs,
    conditions,
    evaluate_folds,
    group_subset,
)

log = logging.getLogger(__name__)
# The fields one transcribed condition gathers over the folds (evaluation/robustness.py _transcribed_condition).
TRANSCRIBED_FIELDS = ("fusion", "symbolic", "fusion_ref", "symbolic_ref", "y", "g", "f1", "empty")


class FusionFoldScorer:
    """One fold of the fusion winner: the audio winner scores each degraded recording, the fusion winner
    fuses that with the symbolic winner's ground-truth-MIDI embeddings; for the conditions in `transcribed`
    a subset of the recordings is also scored through their transcription (appended to `transcribed`)."""

    def __init__(
        self,
        models: tuple[Any, Any, Any],
        symbolic: dict[str, Any],
        score_stats: dict[str, torch.Tensor] | None,
        manifest: Any,
        settings: tuple[FitSettings, RobustnessSettings],
        transcribed: dict[str, dict[str, list[Any]]],
        symbolic_dir: Path,
        device: torch.device,
    ) -> None:
        self.audio_module, self.fusion_module, self.backbone = models
        self.sym, self.score_stats, self.manifest = symbolic, score_stats, manifest
        self.sym_index = {sid: i for i, sid in enumerate(symbolic["ids"])}
        self.row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
        self.transcribed, self.symbolic_dir, self.device = transcribed, symbolic_dir, device
        fit, rob = settings
        self.sample_rate, self.clip_seconds = int(fit.need("sample_rate")), float(fit.need("audio").clip_seconds)
        self.per_fold = int(rob.transcribe_per_fold)
        self.clean_fusion: np.ndarray | None = None

    def recordings(self, val_ids: list[str]) -> list[str]:
        """Every rendered validation segment the symbolic winner (and a `_score` fusion's statistics) covers."""
        audio = self.manifest["audio_path"]
        self.ids = [
            s
            for s in val_ids
            if s in self.sym_index
            and isinstance(audio.iloc[self.row_of[s]], str)
            and (self.score_stats is None or s in self.score_stats)
        ]
        if self.transcribed:
            self._prepare_transcription()
        return self.ids

    def _prepare_transcription(self) -> None:
        """The symbolic winner's fold network and the subset (whole groups) scored through transcription."""
        from pianoeval.data.manifest import label_matrix
        from pianoeval.data.midi import load_performance

        rows = [self.row_of[s] for s in self.ids]
        self.y = label_matrix(self.manifest)[rows]
        self.g = self.manifest["segment_group"].iloc[rows].to_numpy()
        self.scorer = _symbolic_scorer(self.symbolic_dir)
        self.sub = group_subset(self.g, self.per_fold)
        sub_rows = [rows[i] for i in self.sub]
        # The score MIDI whenever the manifest has one: the symbolic winner's ground-truth scores
        # were computed with the score-relative statistics too.
        self.sub_scores = [p if isinstance(p, str) else None for p in self.manifest["score_midi_path"].iloc[sub_rows]]
        self.sub_notes = [load_performance(p).notes for p in self.manifest["midi_path"].iloc[sub_rows]]

    def __call__(self, condition: str, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
        """{"audio": scores [N, 19], "fusion": scores [N, 19]}."""
        z_a, s_a = audio_outputs(self.audio_module, self.backbone, waves, self.sample_rate, self.clip_seconds)
        rows = [self.sym_index[s] for s in self.ids]
        with torch.no_grad():
            fb = {"z_audio": z_a, "scores_audio": s_a, "z_symbolic": self.sym["z"][rows]}
            fb["scores_symbolic"] = self.sym["scores"][rows]
            if self.score_stats is not None:
                fb["score_stats"] = torch.stack([self.score_stats[s] for s in self.ids])
            s_f = self.fusion_module(fb).numpy()
        if condition == "clean":
            self.clean_fusion = s_f  # the reference of the transcribed conditions: ground-truth MIDI, clean audio
        if condition in self.transcribed:
            sub = self.sub
            _transcribed_condition(
                self.transcribed[condition],
                [waves[i] for i in sub],
                self.sample_rate,
                self.scorer,
                self.sub_scores,
                self.sub_notes,
                {k: v[sub] for k, v in fb.items()},
                self.fusion_module,
                self.clean_fusion[sub],
                self.y[sub],
                self.g[sub],
                device=self.device.type,
            )
        return {"audio": s_a.numpy(), "fusion": s_f}


def transcribed_conditions(rob: RobustnessSettings) -> dict[str, dict[str, list[Any]]]:
    """{condition: empty accumulators} for `robustness.transcribe_conditions`; ConfigError naming an unknown one."""
    known = ["clean", *(name for name, _ in conditions(rob.snr_db))]
    unknown = sorted(set(rob.transcribe_conditions) - set(known))
    if unknown:
        raise ConfigError(
            f"robustness.transcribe_conditions: unknown condition(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return {c: {k: [] for k in TRANSCRIBED_FIELDS} for c in dict.fromkeys(rob.transcribe_conditions)}


def run_robustness(
    config: dict[str, Any],
    manifest_path: Path,
    folds_path: Path,
    fusion_winner: Path,
    out_dir: Path,
    devices: int | None = None,
    results: Path = Path("results"),
) -> dict[str, Any]:
    """Evaluate the audio and fusion winners per condition over all validation folds; write the report.
    The winners' fold folders are read from `results`. The audio winner, its backbone and TransKun run on
    the device the job reserved (`devices`)."""
    from pianoeval.core.device import resolve_device
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.checkpoints import load_trained_module
    from pianoeval.training.fusion_data import score_statistics
    from pianoeval.training.registry import audio_backbone, build_frozen_backbone

    layout = Results(results)
    fus = read_json(fusion_winner)
    audio_model = read_json(layout.winner("audio"))["model"]
    symbolic_model = read_json(layout.winner("symbolic"))["model"]
    manifest = read_manifest(manifest_path)
    # A score-conditioned fusion reads the score-relative statistics its fuse rule read.
    score_stats = score_statistics(layout.stats_store) if fus["model"].endswith("_score") else None
    # The render, audio, robustness sections and the seed, built once.
    settings, rob = FitSettings.from_config(config), RobustnessSettings.from_config(config)
    tx = transcribed_conditions(rob)
    device = resolve_device(devices)
    backbone_settings = settings.backbone
    name = audio_backbone(audio_model, backbone_settings.backbone)
    backbone = build_frozen_backbone(name, backbone_settings).to(device)

    def scorer_for(fold: int) -> FusionFoldScorer:
        audio_module = load_trained_module(layout.fold("audio", audio_model, fold).path).to(device)
        fusion_module = load_trained_module(layout.fold("fusion", fus["model"], fold).path)
        sym_dir = layout.fold("symbolic", symbolic_model, fold)
        sym = torch.load(sym_dir.embeddings, weights_only=False)
        models = (audio_module, fusion_module, backbone)
        return FusionFoldScorer(models, sym, score_stats, manifest, (settings, rob), tx, sym_dir.path, device)

    folds = read_folds(folds_path)["folds"]
    preds = evaluate_folds(manifest, folds, rob.snr_db, int(settings.need("sample_rate")), settings.seed, scorer_for)
    report = robustness_report(preds, tx, float(rob.veto_drop_pct), fus["model"], audio_model)
    write_json(report, out_dir / "report.json")
    write_robustness_markdown(report, out_dir / "report.md")
    plot_drops(report, out_dir / "score_drop.png")
    log.info("robustness: worst drop %.1f%% (%s)", report["worst_drop_pct"], "pass" if report["passed"] else "FAIL")
    return report


def robustness_report(
    preds: Any, tx: dict[str, dict[str, list[Any]]], veto: float, fusion_model: str, audio_model: str
) -> dict[str, Any]:
    """The report: both winners per condition against their clean scores, the transcribed conditions,
    the fusion winner's worst drop and whether it stays within the veto."""
    report: dict[str, Any] = {
        "veto_drop_pct": veto,
        "fusion_model": fusion_model,
        "audio_model": audio_model,
        "symbolic_input": "ground-truth MIDI; TransKun transcription of the degraded audio in *_transcribed",
        "n_segments": len(preds.labels()[0]),
        "conditions": {},
    }
    per_model = {m: preds.entries(m, veto) for m in ("audio", "fusion")}
    report["clean"] = {m: clean for m, (clean, _) in per_model.items()}
    for cond in per_model["fusion"][1]:
        report["conditions"][cond] = {m: entries[cond] for m, (_, entries) in per_model.items()}
    for cond, parts in tx.items():
        if parts["y"]:
            report["conditions"][f"{cond}_transcribed"] = _transcribed_entry(parts, veto)
    drops = [report["conditions"][c]["fusion"]["score_drop_pct"] for c in report["conditions"]]
    report["worst_drop_pct"] = float(max(drops))
    report["passed"] = bool(report["worst_drop_pct"] <= veto)
    return report
