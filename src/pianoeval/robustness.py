"""Robustness validation: the selected model on its validation folds under phone-like recording conditions.

For every fold, each validation recording is degraded (room IR, noise at several SNRs, phone
simulation, EQ, low-pass, ±50 cents, and all together), re-embedded with the frozen audio
backbone, and scored by the fold's audio winner and fusion winner; the symbolic input stays the
ground-truth MIDI. Reported per condition: the primary metric clean vs degraded, its relative
drop, and the Pearson r between clean and degraded predictions. A condition fails when the drop
exceeds `robustness.veto_drop_pct`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.constants import AMBIGUOUS_THRESHOLD
from pianoeval.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


def conditions(snr_db: list[float]) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """(condition name, chain of (augmentation, params)) for every tested condition."""
    single: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [("room_ir", [("room_ir", {})])]
    single += [(f"noise_{int(s)}db", [("noise", {"snr_db": float(s)})]) for s in snr_db]
    single += [
        ("phone", [("phone", {})]),
        ("eq", [("eq", {})]),
        ("lowpass", [("lowpass", {})]),
        ("pitch_-50c", [("pitch_shift", {"cents": -50.0})]),
        ("pitch_+50c", [("pitch_shift", {"cents": 50.0})]),
    ]
    everything = [("room_ir", {}), ("eq", {}), ("noise", {"snr_db": float(min(snr_db))}), ("phone", {})]
    return [*single, ("all", everything)]


def degrade(wave: np.ndarray, chain: list[tuple[str, dict[str, Any]]], augmentor: Any) -> np.ndarray:
    """Apply a chain of named augmentations to a waveform [S] (shape preserved)."""
    for name, params in chain:
        wave = augmentor.apply(wave, name, **params)
    return wave


def _metric(pred: np.ndarray, target: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Pairwise accuracy and R² of predictions."""
    from pianoeval.metrics import pairwise_accuracy, r2_scores

    return {
        "pairwise_acc": float(pairwise_accuracy(pred, target, groups, threshold=AMBIGUOUS_THRESHOLD)["overall"]),
        "r2": float(r2_scores(pred, target)["mean"]),
    }


def plot_drops(report: dict[str, Any], out: Path) -> None:
    """Bar chart of the score drop (%) per condition with the veto line (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["conditions"])
    fig, ax = plt.subplots(figsize=(9, 4))
    for k, model in enumerate(("audio", "fusion")):
        drops = [report["conditions"][n][model]["score_drop_pct"] for n in names]
        ax.bar(np.arange(len(names)) + (k - 0.5) * 0.4, drops, width=0.4, label=f"{model} winner")
    ax.axhline(report["veto_drop_pct"], color="r", ls="--", label="veto threshold")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("pairwise-accuracy drop vs clean (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_robustness(
    config: dict[str, Any], manifest_path: Path, folds_path: Path, fusion_winner: Path, out_dir: Path
) -> dict[str, Any]:
    """Evaluate the audio and fusion winners per condition over all validation folds; write the report."""
    from tqdm import tqdm

    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.audio.io import load_audio
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.data.manifest import label_matrix, read_manifest
    from pianoeval.metrics import compute_robustness_metrics
    from pianoeval.pipeline.embed import build_frozen_backbone, embed_wave
    from pianoeval.pipeline.fuse import score_statistics
    from pianoeval.side_input import pooled_statistics
    from pianoeval.training.audio_data import crop_or_pad
    from pianoeval.training.train import load_trained_module

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
    backbone = build_frozen_backbone(config["audio"]["backbone"], config)
    conds = conditions(config["robustness"]["snr_db"])
    preds: dict[str, dict[str, list[np.ndarray]]] = {
        c: {"audio": [], "fusion": []} for c in ["clean", *(n for n, _ in conds)]
    }
    targets: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    folds = read_json(folds_path)["folds"]
    for spec in folds:
        fold = int(spec["fold"])
        audio_module = load_trained_module(results / "train" / "audio" / audio_model / f"fold_{fold}")
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
        for cond, chain in tqdm([("clean", []), *conds], desc=f"robustness fold {fold}", mininterval=5):
            degraded = [degrade(w, chain, augmentor) for w in waves]
            if getattr(audio_module.encoder, "backbone", None) is not None:
                # A1/A3 with a live backbone (LoRA, unfrozen blocks) read the waveform, windowed as in
                # training's evaluation (the first clip_seconds), not the frozen backbone's frames.
                n = round(float(config["audio"]["clip_seconds"]) * sr)
                windows = [crop_or_pad(w, n) for w in degraded]
                items = [{"wave": torch.from_numpy(w), "wave_mask": torch.from_numpy(m)} for w, m in windows]
            else:
                embs = [embed_wave(backbone, w, sr) for w in degraded]
                # With the pooled statistics that a wide & deep probe reads (training/data.py).
                items = [{"audio_emb": e, "stats": pooled_statistics(e)} for e in embs]
            batch = multi_task_collate_fn(items)
            with torch.no_grad():
                z_a = audio_module.encoder(batch)
                s_a = audio_module.scores_from(z_a, batch)
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
    y = np.concatenate(targets)
    # Group ids must not collide across folds: folds are group-disjoint, so plain names suffice.
    g = np.unique(np.concatenate(groups), return_inverse=True)[1]
    veto = float(config["robustness"]["veto_drop_pct"])
    report: dict[str, Any] = {
        "veto_drop_pct": veto,
        "fusion_model": fus["model"],
        "audio_model": audio_model,
        "symbolic_input": "ground-truth MIDI",
        "n_segments": len(y),
        "conditions": {},
    }
    clean = {m: np.concatenate(preds["clean"][m]) for m in ("audio", "fusion")}
    report["clean"] = {m: _metric(clean[m], y, g) for m in clean}
    for cond, _ in conds:
        entry = {}
        for m in ("audio", "fusion"):
            aug = np.concatenate(preds[cond][m])
            rob = compute_robustness_metrics(clean[m], aug, y, g)
            entry[m] = {
                **_metric(aug, y, g),
                "score_drop_pct": float(rob["score_drop_pct"]),
                "pearson_r": float(rob["pearson_r"]),
                "passed": bool(rob["score_drop_pct"] <= veto),
            }
        report["conditions"][cond] = entry
    drops = [report["conditions"][c]["fusion"]["score_drop_pct"] for c in report["conditions"]]
    report["worst_drop_pct"] = float(max(drops))
    report["passed"] = bool(report["worst_drop_pct"] <= veto)
    write_json(report, out_dir / "report.json")
    lines = [
        "# robustness",
        "",
        f"Veto: drop > {veto:.0f}% fails. Fusion winner {fus['model']}, audio winner {audio_model}.",
        "",
        "| condition | audio pairwise | audio drop % | fusion pairwise | fusion drop % | fusion r | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond, e in report["conditions"].items():
        lines.append(
            f"| {cond} | {e['audio']['pairwise_acc']:.3f} | {e['audio']['score_drop_pct']:.1f} | "
            f"{e['fusion']['pairwise_acc']:.3f} | {e['fusion']['score_drop_pct']:.1f} | "
            f"{e['fusion']['pearson_r']:.3f} | {'yes' if e['fusion']['passed'] else 'NO'} |"
        )
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot_drops(report, out_dir / "score_drop.png")
    log.info("robustness: worst drop %.1f%% (%s)", report["worst_drop_pct"], "pass" if report["passed"] else "FAIL")
    return report
