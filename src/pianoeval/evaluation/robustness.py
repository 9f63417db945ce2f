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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pianoeval.core.constants import AMBIGUOUS_THRESHOLD, SCORE_COLUMNS
from pianoeval.core.io import read_json
from pianoeval.core.layout import FoldDir
from pianoeval.core.settings import FeaturesSettings

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
    wave: np.ndarray,
    sample_rate: int,
    net: Any,
    kind: str,
    features: FeaturesSettings,
    score_midi: str | None,
    device: str = "cpu",
) -> tuple[dict[str, Any] | None, Any]:
    """Transcribe one degraded recording [S] and run a symbolic fold model (its `ScoreNetwork`, reading
    feature `kind` made with `features`) on it, with the score-relative statistics when `score_midi`
    is given. Returns ({"z" [H], "scores" [19], "stats" [S] or None}, the transcription's
    Performance); None instead of the dict when nothing was transcribed."""
    import tempfile

    from pianoeval.audio.transcribe import transcribe_timed
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.data.midi import write_performance
    from pianoeval.symbolic.featurize import featurize_file

    # TransKun on `device` (the robustness job's GPU); the small symbolic fold model stays on the CPU.
    perf, _ = transcribe_timed(wave, sample_rate=sample_rate, device=str(device), progress=False)
    if len(perf.notes) == 0:
        return None, perf
    with tempfile.TemporaryDirectory() as tmp:
        midi = write_performance(perf, Path(tmp) / "transcription.mid")
        item = featurize_file(kind, str(midi), features, score_midi)
    item["transcribed"] = torch.tensor(1.0)  # read by models trained with transcription views
    batch = multi_task_collate_fn([item])
    with torch.no_grad():
        z, scores = net.embed_and_score(batch)
    stats = item.get("stats")
    return {"z": z[0], "scores": scores[0], "stats": stats}, perf


def _symbolic_scorer(fold_dir: Path) -> tuple[Any, str, FeaturesSettings]:
    """(scoring network, feature kind, features settings) of a symbolic winner's fold folder."""
    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.evaluation.inference import load_scoring_network
    from pianoeval.training.registry import FEATURE_KIND

    folder = FoldDir(fold_dir)
    config = validate_config(yaml.safe_load(folder.config.read_text()), folder.config)
    kind = FEATURE_KIND[read_json(folder.model_spec)["model"]]
    return load_scoring_network(fold_dir, config), kind, FeaturesSettings.from_config(config)


def _transcribed_condition(
    parts: dict[str, list[Any]],
    waves: list[np.ndarray],
    sample_rate: int,
    scorer: tuple[Any, str, FeaturesSettings],
    score_midis: list[str | None],
    reference_notes: list[np.ndarray],
    fusion_inputs: dict[str, torch.Tensor],
    fusion_module: Any,
    fusion_reference: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    device: str = "cpu",
) -> None:
    """Score one fold's degraded recordings [k] through transcription (TransKun on `device`); append to `parts`.

    `fusion_inputs` are the same rows' fusion inputs with the ground-truth MIDI (their symbolic part is
    replaced by the transcription's), `fusion_reference` [k, 19] their fusion scores on clean audio.
    """
    from pianoeval.audio.transcription_check import note_scores

    kept, z, scores, stats = [], [], [], []
    for i, wave in enumerate(waves):
        out, perf = transcribed_symbolic(wave, sample_rate, *scorer, score_midis[i], device=device)
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
        fused = fusion_module(fb)
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
    module: Any,
    backbone: Any,
    waves: list[np.ndarray],
    sample_rate: int,
    clip_seconds: float,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [N, H], scores [N, 19]) on the CPU of a trained audio module on waveforms [S] (the frozen
    backbone's frames and their pooled statistics; or, for A1/A3 with a live backbone, the waveform
    windowed as in training's evaluation: the first clip_seconds). Runs on the module's device in
    batches of at most `batch_size` recordings (default core.device.INFERENCE_BATCH), never a whole
    fold at once."""
    from pianoeval.audio.embed import embed_wave, module_device
    from pianoeval.core.device import INFERENCE_BATCH, batches, to_device
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.networks.side_input import pooled_statistics
    from pianoeval.training.audio_data import crop_or_pad

    device = module_device(module)
    live = getattr(module.encoder, "backbone", None) is not None
    zs, scores = [], []
    for part in batches(len(waves), batch_size or INFERENCE_BATCH):
        if live:
            windows = [crop_or_pad(waves[i], round(clip_seconds * sample_rate)) for i in part]
            items = [{"wave": torch.from_numpy(w), "wave_mask": torch.from_numpy(m)} for w, m in windows]
        else:
            embs = [embed_wave(backbone, waves[i], sample_rate) for i in part]
            # With the pooled statistics that a wide & deep probe reads (training/data.py).
            items = [{"audio_emb": e, "stats": pooled_statistics(e)} for e in embs]
        batch = to_device(multi_task_collate_fn(items), device)
        with torch.no_grad():
            z, s = module.embed_and_score(batch)
            zs.append(z.float().cpu())
            scores.append(s.float().cpu())
    return torch.cat(zs), torch.cat(scores)


class FoldScorer(Protocol):
    """What the evaluator asks of one fold's trained models."""

    def recordings(self, val_ids: list[str]) -> list[str]:
        """The validation segments (of the fold's `val_ids`) this fold scores."""

    def __call__(self, condition: str, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
        """{model: scores [N, 19]} of the recordings under `condition` (waveforms [S], in recordings' order)."""


@dataclass
class ConditionPredictions:
    """Every fold's predictions per condition and model, with the scored recordings' labels and groups."""

    preds: dict[str, dict[str, list[np.ndarray]]]
    targets: list[np.ndarray] = field(default_factory=list)
    groups: list[np.ndarray] = field(default_factory=list)

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels [N, 19], group ids [N]) over all folds."""
        y = np.concatenate(self.targets)
        # Group ids must not collide across folds: folds are group-disjoint, so plain names suffice.
        return y, np.unique(np.concatenate(self.groups), return_inverse=True)[1]

    def of(self, condition: str, model: str) -> np.ndarray:
        """One model's predictions [N, 19] under one condition, over all folds."""
        return np.concatenate(self.preds[condition][model])

    def entries(self, model: str, veto: float) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        """(clean metrics, {degraded condition: its entry against the clean predictions}) of one model."""
        y, g = self.labels()
        clean = self.of("clean", model)
        degraded = [c for c in self.preds if c != "clean"]
        return _metric(clean, y, g), {c: _condition_entry(clean, self.of(c, model), y, g, veto) for c in degraded}


def evaluate_folds(
    manifest: Any,
    folds: list[dict[str, Any]],
    snr_db: list[float],
    sample_rate: int,
    seed: int,
    scorer_for: Callable[[int], FoldScorer],
    desc: str = "robustness",
) -> ConditionPredictions:
    """Score every fold's chosen validation recordings clean and under every condition (`conditions`).

    Per fold: `scorer_for(fold)` loads its models and chooses the recordings; each is degraded by the
    fold's augmentor (seed + fold, so every run draws the same impulse responses and noise) and scored.
    """
    from tqdm import tqdm

    from pianoeval.audio.augmentation import AudioAugmentor
    from pianoeval.audio.io import load_audio
    from pianoeval.data.manifest import label_matrix

    labels = label_matrix(manifest)
    row_of = {sid: i for i, sid in enumerate(manifest["segment_id"])}
    conds = [("clean", []), *conditions(snr_db)]
    out = ConditionPredictions({name: {} for name, _ in conds})
    for spec in folds:
        fold = int(spec["fold"])
        scorer = scorer_for(fold)
        rows = [row_of[s] for s in scorer.recordings(list(spec["val"]))]
        out.targets.append(labels[rows])
        out.groups.append(manifest["segment_group"].iloc[rows].to_numpy())
        waves = [load_audio(manifest["audio_path"].iloc[r], sample_rate=sample_rate) for r in rows]
        augmentor = AudioAugmentor(seed=seed + fold, sample_rate=sample_rate)
        for name, chain in tqdm(conds, desc=f"{desc} fold {fold}", mininterval=5):
            degraded = [degrade(w, chain, augmentor) for w in waves]
            for model, scores in scorer(name, degraded).items():
                out.preds[name].setdefault(model, []).append(scores)
    return out


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
