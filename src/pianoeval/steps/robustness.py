"""The robustness rule: the final model on its validation folds under recording conditions and through transcription."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.io import atomic_path, read_json, write_json
from pianoeval.evaluation.robustness import (
    _condition_entry,
    _metric,
    _symbolic_scorer,
    _transcribed_condition,
    _transcribed_entry,
    audio_outputs,
    conditions,
    degrade,
    group_subset,
    plot_drops,
)

log = logging.getLogger(__name__)


def run_robustness(
    config: dict[str, Any],
    manifest_path: Path,
    folds_path: Path,
    fusion_winner: Path,
    out_dir: Path,
    devices: int | None = None,
) -> dict[str, Any]:
    """Evaluate the audio and fusion winners per condition over all validation folds; write the report.
    The audio winner, its backbone and TransKun run on the device the job reserved (`devices`)."""
    from tqdm import tqdm

    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.audio.io import load_audio
    from pianoeval.core.device import resolve_device
    from pianoeval.data.manifest import label_matrix, read_manifest
    from pianoeval.data.midi import load_performance
    from pianoeval.training.checkpoints import load_trained_module
    from pianoeval.training.fusion_data import score_statistics
    from pianoeval.training.registry import audio_backbone, build_frozen_backbone

    results = fusion_winner.resolve().parents[2]
    fus = read_json(fusion_winner)
    audio_model = read_json(results / "compare" / "audio" / "winner.json")["model"]
    symbolic_model = read_json(results / "compare" / "symbolic" / "winner.json")["model"]
    manifest = read_manifest(manifest_path)
    # A score-conditioned fusion reads the score-relative statistics its fuse rule read.
    score_stats = score_statistics(results / "featurize" / "stats.pt") if fus["model"].endswith("_score") else None
    labels = label_matrix(manifest)
    row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    sr = config["render"]["sample_rate"]
    device = resolve_device(devices)
    backbone = build_frozen_backbone(audio_backbone(audio_model, config), config).to(device)
    conds = conditions(config["robustness"]["snr_db"])
    preds: dict[str, dict[str, list[np.ndarray]]] = {
        c: {"audio": [], "fusion": []} for c in ["clean", *(n for n, _ in conds)]
    }
    targets: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    folds = read_json(folds_path)["folds"]
    rob = config["robustness"]
    unknown = sorted(set(rob["transcribe_conditions"]) - set(preds))
    if unknown:
        from pianoeval.core.errors import ConfigError

        raise ConfigError(
            f"robustness.transcribe_conditions: unknown condition(s) {', '.join(unknown)}; known: {', '.join(preds)}"
        )
    tx_conditions = list(dict.fromkeys(rob["transcribe_conditions"]))
    # Per transcribed condition: fusion and symbolic scores from the transcription, the same rows'
    # scores from the ground-truth MIDI (clean audio), their labels and groups, and note F1s.
    tx: dict[str, dict[str, list[Any]]] = {
        c: {k: [] for k in ("fusion", "symbolic", "fusion_ref", "symbolic_ref", "y", "g", "f1", "empty")}
        for c in tx_conditions
    }
    for spec in folds:
        fold = int(spec["fold"])
        audio_module = load_trained_module(results / "train" / "audio" / audio_model / f"fold_{fold}").to(device)
        fusion_module = load_trained_module(results / "fuse" / fus["model"] / f"fold_{fold}")
        sym = torch.load(
            results / "train" / "symbolic" / symbolic_model / f"fold_{fold}" / "embeddings.pt",
            weights_only=False,
        )
        sym_index = {sid: i for i, sid in enumerate(sym["ids"])}
        ids = [
            s
            for s in spec["val"]
            if s in sym_index
            and isinstance(manifest["audio_path"].iloc[row_of[s]], str)
            and (score_stats is None or s in score_stats)
        ]
        augmentor = AudioAugmentor(seed=int(config["seed"]) + fold, sample_rate=sr)
        targets.append(labels[[row_of[s] for s in ids]])
        groups.append(manifest["segment_group"].iloc[[row_of[s] for s in ids]].to_numpy())
        waves = [load_audio(manifest["audio_path"].iloc[row_of[s]], sample_rate=sr) for s in ids]
        if tx_conditions:
            sym_dir = results / "train" / "symbolic" / symbolic_model / f"fold_{fold}"
            sym_net, sym_kind, sym_features = _symbolic_scorer(sym_dir)
            sub = group_subset(groups[-1], int(rob["transcribe_per_fold"]))
            sub_rows = [row_of[ids[i]] for i in sub]
            # The score MIDI whenever the manifest has one: the symbolic winner's ground-truth scores
            # were computed with the score-relative statistics too.
            sub_scores = [p if isinstance(p, str) else None for p in manifest["score_midi_path"].iloc[sub_rows]]
            sub_notes = [load_performance(p).notes for p in manifest["midi_path"].iloc[sub_rows]]
        for cond, chain in tqdm([("clean", []), *conds], desc=f"robustness fold {fold}", mininterval=5):
            degraded = [degrade(w, chain, augmentor) for w in waves]
            z_a, s_a = audio_outputs(audio_module, backbone, degraded, sr, float(config["audio"]["clip_seconds"]))
            with torch.no_grad():
                fb = {
                    "z_audio": z_a,
                    "scores_audio": s_a,
                    "z_symbolic": sym["z"][[sym_index[s] for s in ids]],
                    "scores_symbolic": sym["scores"][[sym_index[s] for s in ids]],
                }
                if score_stats is not None:
                    fb["score_stats"] = torch.stack([score_stats[s] for s in ids])
                s_f = fusion_module.scores_from(fusion_module.encoder(fb), fb)
            preds[cond]["audio"].append(s_a.numpy())
            preds[cond]["fusion"].append(s_f.numpy())
            if cond in tx_conditions:
                _transcribed_condition(
                    tx[cond],
                    [degraded[i] for i in sub],
                    sr,
                    (sym_net, sym_kind, sym_features),
                    sub_scores,
                    sub_notes,
                    {k: v[sub] for k, v in fb.items()},
                    fusion_module,
                    preds["clean"]["fusion"][-1][sub],  # this fold's clean, ground-truth-MIDI scores
                    targets[-1][sub],
                    groups[-1][sub],
                    device=device.type,
                )
    y = np.concatenate(targets)
    # Group ids must not collide across folds: folds are group-disjoint, so plain names suffice.
    g = np.unique(np.concatenate(groups), return_inverse=True)[1]
    veto = float(config["robustness"]["veto_drop_pct"])
    report: dict[str, Any] = {
        "veto_drop_pct": veto,
        "fusion_model": fus["model"],
        "audio_model": audio_model,
        "symbolic_input": "ground-truth MIDI; TransKun transcription of the degraded audio in *_transcribed",
        "n_segments": len(y),
        "conditions": {},
    }
    clean = {m: np.concatenate(preds["clean"][m]) for m in ("audio", "fusion")}
    report["clean"] = {m: _metric(clean[m], y, g) for m in clean}
    for cond, _ in conds:
        entry = {}
        for m in ("audio", "fusion"):
            entry[m] = _condition_entry(clean[m], np.concatenate(preds[cond][m]), y, g, veto)
        report["conditions"][cond] = entry
    for cond, parts in tx.items():
        if parts["y"]:
            report["conditions"][f"{cond}_transcribed"] = _transcribed_entry(parts, veto)
    drops = [report["conditions"][c]["fusion"]["score_drop_pct"] for c in report["conditions"]]
    report["worst_drop_pct"] = float(max(drops))
    report["passed"] = bool(report["worst_drop_pct"] <= veto)
    write_json(report, out_dir / "report.json")
    lines = [
        "# robustness",
        "",
        f"Veto: drop > {veto:.0f}% fails. Fusion winner {fus['model']}, audio winner {audio_model}.",
        "",
        "`*_transcribed`: the symbolic input is the TransKun transcription of that condition's audio, compared",
        "with the same recordings scored from the ground-truth MIDI; its second column is the symbolic winner.",
        "",
        "| condition | audio (or symbolic) pairwise | its drop % | fusion pairwise | fusion drop % | fusion r | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond, e in report["conditions"].items():
        side = e.get("audio", e.get("symbolic"))
        lines.append(
            f"| {cond} | {side['pairwise_acc']:.3f} | {side['score_drop_pct']:.1f} | "
            f"{e['fusion']['pairwise_acc']:.3f} | {e['fusion']['score_drop_pct']:.1f} | "
            f"{e['fusion']['pearson_r']:.3f} | {'yes' if e['fusion']['passed'] else 'NO'} |"
        )
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot_drops(report, out_dir / "score_drop.png")
    log.info("robustness: worst drop %.1f%% (%s)", report["worst_drop_pct"], "pass" if report["passed"] else "FAIL")
    return report
