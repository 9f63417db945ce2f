"""Benchmark: does training on transcriptions help score a recording's transcription? (PercePiano subset)

Takes the first `--per-group` rendered performances of every segment group, transcribes their renderings
with TransKun (`pianoeval transcribe`'s code and cache, view `clean`), and, on the pipeline's folds,
fits the ridge and trees baselines on the hand-made statistics (docs/benchmarks.md):

- `gt_only`: trained on the ground-truth MIDI of all training segments (what the pipeline does without
  `transcription.views`), scored on the validation subset's MIDI and on its transcriptions;
- `with_views`: the same plus the training subset's transcriptions, with the transcription flag (a ridge
  per domain; the trees read the flag), scored the same way.

The ground-truth statistics come from the pipeline's stats store; the transcriptions are featurized here
against the same score MIDI. Writes JSON with per-fold and mean pairwise accuracy and R².

    .venv/bin/python scripts/transcription_domain.py --per-group 4 --out results/benchmarks/transcription_domain.json
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from pianoeval.audio.transcription_check import note_scores
from pianoeval.core.config import validate_config
from pianoeval.core.io import read_json, write_json
from pianoeval.core.settings import FeaturesSettings
from pianoeval.data.manifest import read_manifest, split_view_id, write_manifest
from pianoeval.data.midi import load_performance
from pianoeval.steps.transcribe import run_transcribe
from pianoeval.symbolic.featurize import featurize_file
from pianoeval.training.baselines import baseline_predict
from pianoeval.training.data import load_feature_store, load_fold_data
from pianoeval.training.outputs import evaluate

log = logging.getLogger("transcription_domain")


def subset(manifest: Any, per_group: int) -> Any:
    """The first `per_group` labelled, rendered performances of each segment group (manifest order)."""
    rows = manifest[manifest["audio_path"].notna() & manifest["labels"].notna()]
    return rows.groupby("segment_group", sort=False).head(per_group).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="results/render/manifest.parquet")
    parser.add_argument("--folds", default="results/folds/folds.json")
    parser.add_argument("--stats", default="results/featurize/stats.pt")
    parser.add_argument("--cache-dir", default="results/cache/transcribe")
    parser.add_argument("--per-group", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42, help="the pipeline's seed (part of the cache key)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    manifest = read_manifest(args.manifest)
    chosen = subset(manifest, args.per_group)
    work = out.parent / f"{out.stem}_work"
    sub_path = write_manifest(chosen, work / "subset.parquet")
    config = validate_config({"seed": args.seed, "transcription": {"views": ["clean"]}})
    start = time.perf_counter()
    views = run_transcribe(config, sub_path, work / "transcribe.parquet", Path(args.cache_dir), args.threads)
    transcribe_s = time.perf_counter() - start

    features = FeaturesSettings.from_config(validate_config({}))
    view_items, f1, seconds = {}, [], 0.0
    source_midi = dict(zip(chosen["segment_id"], chosen["midi_path"], strict=True))
    for row in views.itertuples(index=False):
        score = row.score_midi_path if isinstance(row.score_midi_path, str) else None
        view_items[row.segment_id] = featurize_file("stats", row.midi_path, features, score)
        reference = load_performance(source_midi[split_view_id(row.segment_id)[0]]).notes
        f1.append(note_scores(reference, load_performance(row.midi_path).notes)["onset"]["f1"])
        seconds += sf.info(row.audio_path).duration
    store = load_feature_store(Path(args.stats))
    folds = read_json(args.folds)
    results: dict[str, Any] = {"gt_only": {}, "with_views": {}}
    for spec in folds["folds"]:
        fold = int(spec["fold"])
        val_ids = set(spec["val"])
        only_val = {k: v for k, v in view_items.items() if split_view_id(k)[0] in val_ids}
        setups = {
            # No transcription in training: the transcriptions are scored by the ground-truth fit.
            "gt_only": {**store["items"], **only_val},
            "with_views": {**store["items"], **view_items},
        }
        for name, items in setups.items():
            data = load_fold_data({"items": items, "meta": store.get("meta", {})}, manifest, folds, fold)
            # The validation MIDI of the same subset, for a like-for-like reference.
            sub_val = [i for i in data.splits["val"] if f"{data.items[i]['segment_id']}@clean" in items]
            data.splits["val_subset"] = sub_val
            for model in ("baseline_ridge", "baseline_trees"):
                preds = baseline_predict(model, data)
                entry = {}
                for split in ("val", "val_subset", "val_transcribed"):
                    m = evaluate(preds[split], data, split)
                    entry[split] = {"pairwise_acc": m["pairwise_acc"], "r2": m["r2"], "n": len(data.splits[split])}
                entry["n_train"] = len(data.splits["train"])
                entry["n_train_transcribed"] = sum(
                    split_view_id(data.items[i]["segment_id"])[1] is not None for i in data.splits["train"]
                )
                results[name].setdefault(model, {})[fold] = entry
                log.info("fold %d %s %s: %s", fold, name, model, entry)
    summary: dict[str, Any] = {}
    for name, models in results.items():
        for model, by_fold in models.items():
            summary[f"{name}/{model}"] = {
                split: {
                    metric: float(np.mean([by_fold[f][split][metric] for f in by_fold]))
                    for metric in ("pairwise_acc", "r2")
                }
                for split in ("val", "val_subset", "val_transcribed")
            }
    write_json(
        {
            "per_group": args.per_group,
            "n_segments": len(chosen),
            "n_transcribed": len(view_items),
            "audio_hours": round(seconds / 3600, 3),
            "transcribe_wall_s": round(transcribe_s, 1),
            "note_f1_onset_mean": float(np.mean(f1)),
            "torch_threads": torch.get_num_threads(),
            "summary": summary,
            "folds": results,
        },
        out,
    )
    for key, value in summary.items():
        log.info("%s: %s", key, value)


if __name__ == "__main__":
    main()
