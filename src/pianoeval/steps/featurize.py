"""Featurize every MIDI of a manifest for one model family, cached per file and parallel across cores.

Output (`torch.save`): `{"kind", "meta", "items": {key: item}, "skipped": [...]}` where the key is the
segment id for performances and `score::<path>` for score MIDIs, and an item is a dict of tensors:
`input_ids [L]` (tokens), `graph` (symbolic.graph.NoteGraph), `curves [T, C]`, or `stats [F]`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from pianoeval.core.errors import InputError, OutputError
from pianoeval.core.io import read_input_bytes, save_torch, write_json
from pianoeval.core.settings import FeaturesSettings
from pianoeval.core.skipped import check_skipped, skip_entry, skipped_report, warn_skipped
from pianoeval.symbolic.featurize import featurize_file, featurizer_version, kind_meta

log = logging.getLogger(__name__)


def _cache_key(kind: str, path: str, features: FeaturesSettings, score_path: str | None = None) -> str:
    """Content hash of the file bytes (and its score's), the kind and the settings that change the output."""
    h = hashlib.sha1()
    h.update(read_input_bytes(path, "MIDI file"))
    if score_path:
        h.update(b"|score|" + read_input_bytes(score_path, "score MIDI file"))
    # The section's keys and values, sorted (as when the featurizer took the section as a dict: same keys).
    h.update(f"{kind}|{featurizer_version(kind)}|{sorted(dataclasses.asdict(features).items())}".encode())
    return h.hexdigest()


def _work(
    job: tuple[str, str, str | None, str, FeaturesSettings, str],
) -> tuple[str, str | None, dict[str, str] | None]:
    """Featurize one file into the cache (or find it there); return (key, cache file, skipped-file entry).

    A failure to write the cache (OutputError: disk full, read-only folder) is no file's fault and
    stops the step; anything wrong with the file itself skips it.
    """
    key, path, score_path, kind, features, cache_dir = job
    try:
        digest = _cache_key(kind, path, features, score_path)
        target = Path(cache_dir) / digest[:2] / f"{digest}.pt"
        if not target.exists():
            save_torch(featurize_file(kind, path, features, score_path), target)
        return key, str(target), None
    except OutputError:
        raise
    except Exception as exc:  # keep going past any one file; the report and the log say why
        return key, None, skip_entry(key, path, exc)


def collect_jobs(df: Any) -> list[tuple[str, str, str | None]]:
    """(key, MIDI path, its score MIDI or None) for every performance MIDI and distinct score MIDI of a manifest."""
    jobs = [
        (row.segment_id, row.midi_path, row.score_midi_path if isinstance(row.score_midi_path, str) else None)
        for row in df.itertuples()
        if isinstance(row.midi_path, str)
    ]
    scores = sorted({p for p in df["score_midi_path"] if isinstance(p, str)})
    jobs.extend((f"score::{p}", p, None) for p in scores)
    return jobs


def run_featurize(
    kind: str,
    config: dict[str, Any],
    manifest: Path,
    out: Path,
    cache_dir: Path,
    threads: int = 1,
    extra_manifests: list[Path] | None = None,
    skipped: Path | None = None,
) -> dict[str, Any]:
    """Featurize a manifest (and the rows of `extra_manifests`, e.g. the transcription views) for `kind`,
    skipping unusable files; write `out` and, when given, the skipped-files report to `skipped`."""
    import pandas as pd
    from tqdm import tqdm

    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    extra = [read_manifest(p) for p in extra_manifests or []]
    if any(len(e) for e in extra):
        df = pd.concat([df, *[e for e in extra if len(e)]], ignore_index=True)
    features = FeaturesSettings.from_config(config)
    jobs = [(key, path, score, kind, features, str(cache_dir)) for key, path, score in collect_jobs(df)]
    if not jobs:
        raise InputError("the manifest lists no MIDI file to featurize", manifest)
    items: dict[str, Any] = {}
    failed: list[dict[str, str]] = []
    workers = max(1, threads)
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_work, jobs, chunksize=8)
    else:
        pool, results = None, map(_work, jobs)
    try:
        for key, cached, entry in tqdm(results, total=len(jobs), desc=f"featurize {kind}", mininterval=5):
            if entry is not None:
                failed.append(entry)
                warn_skipped(entry)
            else:
                items[key] = torch.load(cached, weights_only=False)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    check_skipped(f"featurize {kind}", failed, len(jobs), config["max_skipped_fraction"], manifest)
    save_torch({"kind": kind, "meta": kind_meta(kind, features), "items": items, "skipped": failed}, out)
    if skipped is not None:
        write_json(skipped_report(f"featurize {kind}", len(items), failed), skipped)
    log.info("featurized %d files (%d skipped) -> %s", len(items), len(failed), out)
    return {"n_items": len(items), "skipped": failed}
