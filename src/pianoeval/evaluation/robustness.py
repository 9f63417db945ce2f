"""Robustness validation: the selected model on its validation folds under phone-like recording conditions.

For every fold, each validation recording is degraded (room IR, noise at several SNRs, phone
simulation, EQ, low-pass, ±50 cents, and all together), re-embedded with the frozen audio
backbone, and scored by the fold's audio winner and fusion winner, with the ground-truth MIDI as
the symbolic input. Then, as a user's recording would be scored, for the conditions in
`robustness.transcribe_conditions` the symbolic input is the TransKun transcription of the degraded
audio instead (on `robustness.transcribe_per_fold` validation recordings per fold, whole segment
groups spread evenly, since transcription costs about 2 x real time on a CPU): the symbolic winner's
fold model and the fusion winner score the transcription, compared with the same recordings'
ground-truth-MIDI scores. Reported per condition: the primary metric clean vs degraded, its relative
drop, and the Pearson r between clean and degraded predictions; for transcribed conditions also the
transcription's note F1 against the ground-truth MIDI. A condition fails when the drop exceeds
`robustness.veto_drop_pct`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.constants import AMBIGUOUS_THRESHOLD
from pianoeval.core.io import atomic_path, read_json, write_json

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


def group_subset(groups: np.ndarray, n: int) -> np.ndarray:
    """Indices of at most `n` items spread evenly over the groups [N]: the first `per` members of
    groups in order of appearance, whole ones only, so that every chosen group forms within-group pairs
    for the pairwise metric (at least one group, even if larger than n); all items when n <= 0 or N <= n."""
    if n <= 0 or len(groups) <= n:
        return np.arange(len(groups))
    unique = list(dict.fromkeys(groups.tolist()))
    per = max(2, -(-n // len(unique)))
    chosen: list[int] = []
    for g in unique:
        members = np.flatnonzero(groups == g)[:per].tolist()
        if chosen and len(chosen) + len(members) > n:
            break
        chosen += members
    return np.array(sorted(chosen))


def transcribed_symbolic(
    wave: np.ndarray, sample_rate: int, net: Any, kind: str, features: dict[str, Any], score_midi: str | None
) -> tuple[dict[str, Any] | None, Any]:
    """Transcribe one degraded recording [S] and run a symbolic fold model (`ScoringNetwork` reading
    feature `kind` made with `features`) on it, with the score-relative statistics when `score_midi`
    is given. Returns ({"z" [H], "scores" [19], "stats" [S] or None}, the transcription's
    Performance); None instead of the dict when nothing was transcribed."""
    import tempfile

    from pianoeval.audio.transcribe import transcribe_timed
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.data.midi import write_performance
    from pianoeval.networks.heads import scores_from
    from pianoeval.pipeline.featurize import featurize_file

    perf, _ = transcribe_timed(wave, sample_rate=sample_rate, progress=False)
    if len(perf.notes) == 0:
        return None, perf
    with tempfile.TemporaryDirectory() as tmp:
        midi = write_performance(perf, Path(tmp) / "transcription.mid")
        item = featurize_file(kind, str(midi), features, score_midi)
    item["transcribed"] = torch.tensor(1.0)  # read by models trained with transcription views
    batch = multi_task_collate_fn([item])
    with torch.no_grad():
        z = net.encoder(batch)
        scores = scores_from(net.encoder, net.heads, z, batch)
    stats = item.get("stats")
    return {"z": z[0], "scores": scores[0], "stats": stats}, perf


def _symbolic_scorer(fold_dir: Path) -> tuple[Any, str, dict[str, Any]]:
    """(scoring network, feature kind, features config) of a symbolic winner's fold folder."""
    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.evaluation.inference import load_scoring_network
    from pianoeval.training.registry import FEATURE_KIND

    config = validate_config(yaml.safe_load((fold_dir / "config.yaml").read_text()), fold_dir / "config.yaml")
    kind = FEATURE_KIND[read_json(fold_dir / "model_spec.json")["model"]]
    return load_scoring_network(fold_dir, config), kind, config["features"]


def _transcribed_condition(
    parts: dict[str, list[Any]],
    waves: list[np.ndarray],
    sample_rate: int,
    scorer: tuple[Any, str, dict[str, Any]],
    score_midis: list[str | None],
    reference_notes: list[np.ndarray],
    fusion_inputs: dict[str, torch.Tensor],
    fusion_module: Any,
    fusion_reference: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
) -> None:
    """Score one fold's degraded recordings [k] through transcription; append to `parts`.

    `fusion_inputs` are the same rows' fusion inputs with the ground-truth MIDI (their symbolic part is
    replaced by the transcription's), `fusion_reference` [k, 19] their fusion scores on clean audio.
    """
    from pianoeval.audio.transcription_check import note_scores
    from pianoeval.symbolic.stats import SCORE_COLUMNS

    kept, z, scores, stats = [], [], [], []
    for i, wave in enumerate(waves):
        out, perf = transcribed_symbolic(wave, sample_rate, *scorer, score_midis[i])
        parts["f1"].append(note_scores(reference_notes[i], perf.notes)["onset"]["f1"])
        if out is None:
            parts["empty"].append(i)
            continue
        kept.append(i)
        z.append(out["z"])
        scores.append(out["scores"])
        stats.append(out["stats"])
    if not kept:
        return
    k = np.array(kept)
    fb = {
        "z_audio": fusion_inputs["z_audio"][k],
        "scores_audio": fusion_inputs["scores_audio"][k],
        "z_symbolic": torch.stack(z),
        "scores_symbolic": torch.stack(scores),
    }
    if "score_stats" in fusion_inputs:
        fb["score_stats"] = torch.stack(stats)[:, SCORE_COLUMNS].float()
    with torch.no_grad():
        fused = fusion_module.scores_from(fusion_module.encoder(fb), fb)
    parts["fusion"].append(fused.numpy())
    parts["symbolic"].append(fb["scores_symbolic"].numpy())
    parts["fusion_ref"].append(fusion_reference[k])
    parts["symbolic_ref"].append(fusion_inputs["scores_symbolic"][k].numpy())
    parts["y"].append(y[k])
    parts["g"].append(g[k])


def _transcribed_entry(parts: dict[str, list[Any]], veto: float) -> dict[str, Any]:
    """Report entry of a transcribed condition: symbolic and fusion winners on the transcription vs the
    same recordings scored from the ground-truth MIDI (clean audio), and the note F1."""

    y = np.concatenate(parts["y"])
    g = np.unique(np.concatenate(parts["g"]), return_inverse=True)[1]
    entry: dict[str, Any] = {
        "n_segments": len(y),
        "n_empty_transcriptions": len(parts["empty"]),
        "note_f1_onset_mean": float(np.mean(parts["f1"])),
    }
    for m in ("symbolic", "fusion"):
        ref = np.concatenate(parts[f"{m}_ref"])
        entry[m] = {**_condition_entry(ref, np.concatenate(parts[m]), y, g, veto), "reference": _metric(ref, y, g)}
    return entry


def audio_outputs(
    module: Any, backbone: Any, waves: list[np.ndarray], sample_rate: int, clip_seconds: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [N, H], scores [N, 19]) of a trained audio module on waveforms [S] (the frozen backbone's
    frames and their pooled statistics; or, for A1/A3 with a live backbone, the waveform windowed as in
    training's evaluation: the first clip_seconds)."""
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.networks.side_input import pooled_statistics
    from pianoeval.pipeline.embed import embed_wave
    from pianoeval.training.audio_data import crop_or_pad

    if getattr(module.encoder, "backbone", None) is not None:
        windows = [crop_or_pad(w, round(clip_seconds * sample_rate)) for w in waves]
        items = [{"wave": torch.from_numpy(w), "wave_mask": torch.from_numpy(m)} for w, m in windows]
    else:
        embs = [embed_wave(backbone, w, sample_rate) for w in waves]
        # With the pooled statistics that a wide & deep probe reads (training/data.py).
        items = [{"audio_emb": e, "stats": pooled_statistics(e)} for e in embs]
    batch = multi_task_collate_fn(items)
    with torch.no_grad():
        z = module.encoder(batch)
        return z, module.scores_from(z, batch)


def _metric(pred: np.ndarray, target: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Pairwise accuracy and R² of predictions."""
    from pianoeval.metrics import pairwise_accuracy, r2_scores

    return {
        "pairwise_acc": float(pairwise_accuracy(pred, target, groups, threshold=AMBIGUOUS_THRESHOLD)["overall"]),
        "r2": float(r2_scores(pred, target)["mean"]),
    }


def _condition_entry(
    reference: np.ndarray, degraded: np.ndarray, y: np.ndarray, g: np.ndarray, veto: float
) -> dict[str, Any]:
    """Metrics of degraded predictions [N, 19] and how far they fall from the reference predictions
    [N, 19]: pairwise accuracy, R², score drop % (NaN when undefined), Pearson r, passed (drop <= veto)."""
    from pianoeval.metrics import compute_robustness_metrics

    rob = compute_robustness_metrics(reference, degraded, y, g)
    drop = float(rob["score_drop_pct"]) if rob["score_drop_pct"] is not None else float("nan")
    return {
        **_metric(degraded, y, g),
        "score_drop_pct": drop,
        "pearson_r": float(rob["pearson_r"]),
        "passed": bool(drop <= veto),
    }


def plot_drops(report: dict[str, Any], out: Path) -> None:
    """Bar chart of the score drop (%) per condition with the veto line (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["conditions"])
    fig, ax = plt.subplots(figsize=(9, 4))
    models = ("audio", "symbolic", "fusion")  # symbolic: only where its input is a transcription
    for k, model in enumerate(models):
        drops = [report["conditions"][n].get(model, {}).get("score_drop_pct", np.nan) for n in names]
        ax.bar(np.arange(len(names)) + (k - 1) * 0.27, drops, width=0.27, label=f"{model} winner")
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
    from pianoeval.data.manifest import label_matrix, read_manifest
    from pianoeval.data.midi import load_performance
    from pianoeval.pipeline.embed import build_frozen_backbone
    from pianoeval.pipeline.fuse import score_statistics
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


def run_audio_robustness(
    model: str, config: dict[str, Any], manifest_path: Path, folds_path: Path, results: Path, out: Path
) -> dict[str, Any]:
    """One audio model on its validation folds under every condition (clean audio as the reference):
    per-condition pairwise accuracy, R², score drop and Pearson r, the worst drop, and whether it stays
    within `robustness.veto_drop_pct` (the audio comparison vetoes a model that does not). Uses
    `robustness.audio_per_fold` recordings per fold (whole segment groups; 0 = all). Writes `out`."""
    from tqdm import tqdm

    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.audio.io import load_audio
    from pianoeval.data.manifest import label_matrix, read_manifest
    from pianoeval.pipeline.embed import build_frozen_backbone
    from pianoeval.training.train import load_trained_module

    manifest = read_manifest(manifest_path)
    labels = label_matrix(manifest)
    row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    sr = int(config["render"]["sample_rate"])
    rob = config["robustness"]
    backbone = build_frozen_backbone(config["audio"]["backbone"], config)
    conds = [("clean", []), *conditions(rob["snr_db"])]
    preds: dict[str, list[np.ndarray]] = {name: [] for name, _ in conds}
    targets, groups = [], []
    for spec in read_json(folds_path)["folds"]:
        fold = int(spec["fold"])
        module = load_trained_module(results / "train" / "audio" / model / f"fold_{fold}")
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
