"""The export rule: results/export/pianoeval.bundle, the served models in one file with their model card.

The bundle (`evaluation/bundle.py`) holds every fold of the served models (symbolic winner, audio
winner, fusion winner: spec, resolved config, provenance and the checkpoint's weights without the
optimiser state), the winners' files, `served.json` (the reference labels for percentiles, the data the
models learned from), the settings scoring needs, and a model card in markdown and JSON: training data
and their licenses, the benchmark figures with their 95 % intervals, the commit. `pianoeval score
--bundle FILE` then scores without a results folder, with the same numbers.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from pianoeval import __version__
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json
from pianoeval.core.layout import FoldDir, Results
from pianoeval.data.sources import DATA_SOURCES
from pianoeval.evaluation.bundle import write_bundle
from pianoeval.evaluation.served import SERVED_FILE, ServedModels, served_from_results, served_record

log = logging.getLogger(__name__)

# A fold folder's files that rebuild its network besides the weights.
FOLD_FILES = ("model_spec", "config", "provenance")


def model_bytes(fold: FoldDir) -> bytes:
    """The fold's model.ckpt (weights and hyper-parameters, no optimiser state); for a folder trained
    before model.ckpt was written, its best (else last) Lightning checkpoint slimmed to the same."""
    if fold.model.is_file():
        return fold.model.read_bytes()
    from pianoeval.training.checkpoints import slim_checkpoint

    buf = io.BytesIO()
    torch.save(slim_checkpoint(fold.checkpoint()), buf)
    return buf.getvalue()


def fold_files(results: Path, served: ServedModels) -> dict[str, bytes]:
    """{bundle member: bytes} of every fold folder of the served models, laid out as in results/."""
    files: dict[str, bytes] = {}
    tracks = [t for t in ("symbolic", "audio", "fusion") if getattr(served, t) is not None]
    for track in tracks:
        for path in served.folds(track):
            fold = FoldDir(path)
            rel = path.relative_to(results).as_posix()
            for name in FOLD_FILES:
                files[f"{rel}/{fold.FILES[name]}"] = getattr(fold, name).read_bytes()
            files[f"{rel}/{fold.FILES['model']}"] = model_bytes(fold)
    return files


def benchmarks(results: Results, tracks: list[str]) -> dict[str, Any]:
    """Per track: the winner, how it was decided, and every model's pairwise accuracy and R² with 95 %
    intervals (results/compare/<track>/comparison.json); plus the fusion winner's gain over the best
    single track (results/fusion/winner.json)."""
    out: dict[str, Any] = {}
    for track in tracks:
        path = results.compare(track) / "comparison.json"
        if not path.is_file():
            raise InputError(f"the {track} comparison is missing; run the compare rule first", path)
        comparison = read_json(path)
        out[track] = {
            "winner": comparison["winner"],
            "decided_by": comparison.get("decided_by"),
            "models": {
                name: {m: entry[m] for m in ("pairwise_acc", "r2", "baseline", "reference") if m in entry}
                for name, entry in comparison["models"].items()
            },
        }
    if results.final_winner.is_file():
        final = read_json(results.final_winner)
        if "gain_over_best_single_track" in final:
            out["fusion_gain_over_best_single_track"] = final["gain_over_best_single_track"]
    return out


def corpus_sources(manifest: Path | None) -> dict[str, Any]:
    """{source: {"rows", "labelled_rows"}} of the whole corpus (pretraining's unlabelled music included)."""
    if manifest is None:
        return {}
    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    labelled = df["labels"].notna()
    return {
        str(s): {"rows": int((df["source"] == s).sum()), "labelled_rows": int(((df["source"] == s) & labelled).sum())}
        for s in sorted(df["source"].unique())
    }


def model_card(results: Results, served: ServedModels, manifest: Path | None) -> dict[str, Any]:
    """The model card (JSON): served models, training data and their licenses, benchmark figures with
    their intervals, commit and version."""
    from pianoeval.core.provenance import git_revision

    tracks = ["symbolic"] + (["audio", "fusion"] if served.fusion else [])
    corpus = corpus_sources(manifest)
    used = sorted({s["source"] for s in served.training_data["sources"]} | set(corpus))
    revisions = sorted(
        {
            str(read_json(FoldDir(p).provenance).get("git_revision"))
            for t in tracks
            for p in served.folds(t)
            if FoldDir(p).provenance.is_file()
        }
    )
    return {
        "served": served.description(),
        "scoring": {
            "midi": f"symbolic winner {served.symbolic}",
            "audio": f"fusion winner {served.fusion}" if served.fusion else f"symbolic winner {served.symbolic}",
        },
        "training_data": served.training_data,
        "corpus": corpus,
        "licenses": {s: {k: DATA_SOURCES[s][k] for k in ("name", "url", "license")} for s in used},
        "benchmarks": benchmarks(results, tracks),
        "git_revision": git_revision(),
        "training_git_revisions": revisions,
        "pianoeval_version": __version__,
    }


def _interval(cell: dict[str, Any] | None) -> str:
    """'0.731 [0.702, 0.760]' of a {mean, ci95} cell, '' when absent."""
    if not cell:
        return ""
    low, high = cell.get("ci95") or (float("nan"), float("nan"))
    return f"{cell['mean']:.3f} [{low:.3f}, {high:.3f}]"


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as markdown (model_card.md)."""
    lines = ["# pianoeval model card", ""]
    if card["training_data"].get("warning"):
        lines += [f"> **Warning:** {card['training_data']['warning']}", ""]
    lines += ["## Models served", ""]
    for track, d in card["served"].items():
        lines.append(f"- {track}: `{d['model']}`, {d['n_folds']} fold models")
    lines += ["", f"A MIDI is scored by the {card['scoring']['midi']}; audio by the {card['scoring']['audio']}.", ""]
    lines += ["## Training data and licenses", "", "| source | labelled segments | license |", "|---|---|---|"]
    for s in card["training_data"]["sources"]:
        lines.append(f"| {s['name']} | {s['n_segments']} | {s['license']} |")
    for source, counts in card["corpus"].items():
        if counts["labelled_rows"] == 0:
            lic = card["licenses"][source]
            lines.append(f"| {lic['name']} (unlabelled, pretraining) | 0 of {counts['rows']} | {lic['license']} |")
    lines += ["", "## Benchmarks (means with 95 % paired-bootstrap intervals over segment groups)", ""]
    for track, b in card["benchmarks"].items():
        if track == "fusion_gain_over_best_single_track":
            continue
        lines += [f"### {track}: winner `{b['winner']}` ({b['decided_by']})", ""]
        lines += ["| model | pairwise accuracy | R² |", "|---|---|---|"]
        for name, m in b["models"].items():
            role = " (baseline)" if m.get("baseline") else " (reference, never eligible)" if m.get("reference") else ""
            lines.append(f"| {name}{role} | {_interval(m.get('pairwise_acc'))} | {_interval(m.get('r2'))} |")
        lines.append("")
    gain = card["benchmarks"].get("fusion_gain_over_best_single_track")
    if gain:
        parts = [f"{m}: {_interval(gain[m])}" for m in ("pairwise_acc", "r2") if m in gain]
        lines += [f"Fusion gain over the best single track ({gain['best_single_track']}): {'; '.join(parts)}", ""]
    lines += ["## Provenance", ""]
    lines.append(f"- exported by pianoeval {card['pianoeval_version']} at commit `{card['git_revision']}`")
    lines.append(f"- trained at commit(s): {', '.join(f'`{r}`' for r in card['training_git_revisions'])}")
    return "\n".join(lines) + "\n"


def scoring_settings(files: dict[str, bytes]) -> dict[str, Any]:
    """What scoring needs besides the folds' own configs: transcription, length limits, external weights."""
    import yaml

    from pianoeval.steps.score import MAX_SECONDS, MIN_SECONDS, TRANSCRIPTION_SAMPLE_RATE

    external = set()
    for name, data in files.items():
        if name.startswith("train/audio/") and name.endswith("/config.yaml"):
            aud = yaml.safe_load(data)["audio"]
            if aud["backbone"] == "muq" and aud["muq_pretrained"]:
                # Released backbone weights are not ours to bundle; scoring loads them by name.
                external.add(str(aud["muq_name_or_path"]))
    return {
        "transcription": {"engine": "TransKun 2.0 (the packaged weights)", "sample_rate": TRANSCRIPTION_SAMPLE_RATE},
        "seconds": {"min": MIN_SECONDS, "max": MAX_SECONDS},
        "features": "each fold's config.yaml (features, render, audio sections)",
        "external_weights": sorted(external),
    }


def run_export(results_root: Path, out: Path, manifest: Path | None = None) -> dict[str, Any]:
    """Write the bundle of the models `results_root` serves to `out`; returns its bundle.json."""
    results = Results(results_root)
    served = served_from_results(results.root)
    files = fold_files(results.root, served)
    for track in ("symbolic", "audio") if served.fusion else ("symbolic",):
        files[f"compare/{track}/winner.json"] = results.winner(track).read_bytes()
    if results.final_winner.is_file():
        files["fusion/winner.json"] = results.final_winner.read_bytes()
    card = model_card(results, served, manifest)
    files[SERVED_FILE] = json.dumps(served_record(served)).encode()
    files["model_card.json"] = json.dumps(card, indent=2).encode()
    files["model_card.md"] = card_markdown(card).encode()
    record = write_bundle(
        files,
        {
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pianoeval_version": __version__,
            "git_revision": card["git_revision"],
            "served": served.description(),
            "settings": scoring_settings(files),
        },
        out,
    )
    log.info("exported %s (%d files, %.1f MB) -> %s", served.description(), len(files), out.stat().st_size / 1e6, out)
    return record
