"""Featurize every MIDI of a manifest for one model family, cached per file and parallel across cores.

Output (`torch.save`): `{"kind", "meta", "items": {key: item}, "skipped": [...]}` where the key is the
segment id for performances and `score::<path>` for score MIDIs, and an item is a dict of tensors:
`input_ids [L]` (tokens), `graph` (torch_geometric Data), `curves [T, C]`, or `stats [F]`.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.errors import InputError, OutputError
from pianoeval.core.io import read_input_bytes, save_torch, write_json
from pianoeval.core.skipped import check_skipped, skip_entry, skipped_path, skipped_report, warn_skipped

log = logging.getLogger(__name__)

# Bump when a featurizer changes its output, so stale cache entries are not reused.
# 2: every kind also carries `stats` (the side input of the symbolic encoders).
# 3: `stats` adds the score-relative statistics (symbolic/score_stats.py) and their flag.
FEATURIZER_VERSION = 3

_TOKENIZER = None


def _tokenizer(max_seq_len: int):  # -> PianoTokenizer
    """One tokenizer per worker process (building the vocabulary is not free)."""
    global _TOKENIZER
    if _TOKENIZER is None or _TOKENIZER.max_seq_len != max_seq_len:
        from pianoeval.symbolic.tokenizer import PianoTokenizer

        _TOKENIZER = PianoTokenizer(max_seq_len=max_seq_len)
    return _TOKENIZER


def featurize_file(kind: str, path: str, features_cfg: dict[str, Any], score_path: str | None = None) -> dict[str, Any]:
    """Compute the feature item of one MIDI file for `kind`; InputError if the file is unusable.

    `score_path`, the score MIDI the performance plays, adds the score-relative statistics; a score
    that cannot be read or aligned leaves them at zero (with a warning), the performance is kept.
    """
    from pianoeval.data.midi import load_performance
    from pianoeval.symbolic.stats import performance_statistics

    if kind not in ("tokens", "graphs", "curves", "stats"):
        raise ValueError(f"unknown feature kind {kind!r}")
    perf = load_performance(path)
    score = None
    if score_path:
        try:
            score = load_performance(score_path)
        except InputError as exc:
            # The score is auxiliary: without it the performance keeps its own statistics and the
            # score part stays at zero (flag 0), as for a manifest row with no score.
            log.warning("%s: score statistics skipped: %s", path, exc)
    # Every kind carries the statistics: the ridge baseline's input and the encoders' side input.
    item: dict[str, Any] = {"stats": torch.from_numpy(performance_statistics(perf, score))}
    if kind == "tokens":
        ids = _tokenizer(features_cfg["max_seq_len"]).encode(path)
        item["input_ids"] = torch.tensor(ids, dtype=torch.long)
    elif kind == "graphs":
        from pianoeval.symbolic.graph import build_note_graph

        item["graph"] = build_note_graph(perf)
    elif kind == "curves":
        from pianoeval.symbolic.features import extract_continuous_features

        curves = extract_continuous_features(perf, frame_rate=features_cfg["frame_rate"])
        item["curves"] = torch.from_numpy(np.ascontiguousarray(curves, dtype=np.float32))
    return item


def kind_meta(kind: str, features_cfg: dict[str, Any]) -> dict[str, Any]:
    """Facts a model needs about a feature kind (vocabulary, channel count, statistics count)."""
    from pianoeval.symbolic.stats import ALL_STAT_NAMES

    return {**_kind_meta(kind, features_cfg), "n_stats": len(ALL_STAT_NAMES), "stat_names": list(ALL_STAT_NAMES)}


def _kind_meta(kind: str, features_cfg: dict[str, Any]) -> dict[str, Any]:
    """The kind-specific part of kind_meta."""
    if kind == "tokens":
        tok = _tokenizer(features_cfg["max_seq_len"])
        return {
            "vocab_size": tok.vocab_size,
            "pad_token_id": tok.pad_token_id,
            "mask_token_id": tok.mask_token_id,
            "max_seq_len": features_cfg["max_seq_len"],
        }
    if kind == "curves":
        from pianoeval.symbolic.features import FEATURE_NAMES

        return {"feature_names": list(FEATURE_NAMES), "n_features": len(FEATURE_NAMES)}
    if kind == "graphs":
        from pianoeval.symbolic.graph import EDGE_TYPES, NODE_FEATURES

        return {"node_features": list(NODE_FEATURES), "edge_types": list(EDGE_TYPES)}
    from pianoeval.symbolic.stats import ALL_STAT_NAMES

    return {"feature_names": list(ALL_STAT_NAMES), "n_features": len(ALL_STAT_NAMES)}


def _cache_key(kind: str, path: str, features_cfg: dict[str, Any], score_path: str | None = None) -> str:
    """Content hash of the file bytes (and its score's), the kind and the settings that change the output."""
    h = hashlib.sha1()
    h.update(read_input_bytes(path, "MIDI file"))
    if score_path:
        h.update(b"|score|" + read_input_bytes(score_path, "score MIDI file"))
    h.update(f"{kind}|{FEATURIZER_VERSION}|{sorted(features_cfg.items())}".encode())
    return h.hexdigest()


def _work(
    job: tuple[str, str, str | None, str, dict[str, Any], str],
) -> tuple[str, str | None, dict[str, str] | None]:
    """Featurize one file into the cache (or find it there); return (key, cache file, skipped-file entry).

    A failure to write the cache (OutputError: disk full, read-only folder) is no file's fault and
    stops the step; anything wrong with the file itself skips it.
    """
    key, path, score_path, kind, features_cfg, cache_dir = job
    try:
        digest = _cache_key(kind, path, features_cfg, score_path)
        target = Path(cache_dir) / digest[:2] / f"{digest}.pt"
        if not target.exists():
            save_torch(featurize_file(kind, path, features_cfg, score_path), target)
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
) -> dict[str, Any]:
    """Featurize a manifest (and the rows of `extra_manifests`, e.g. the transcription views) for `kind`,
    skipping (and reporting) unusable files; write `out`."""
    import pandas as pd
    from tqdm import tqdm

    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    extra = [read_manifest(p) for p in extra_manifests or []]
    if any(len(e) for e in extra):
        df = pd.concat([df, *[e for e in extra if len(e)]], ignore_index=True)
    features_cfg = dict(config["features"])
    jobs = [(key, path, score, kind, features_cfg, str(cache_dir)) for key, path, score in collect_jobs(df)]
    if not jobs:
        raise InputError("the manifest lists no MIDI file to featurize", manifest)
    items: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    workers = max(1, threads)
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_work, jobs, chunksize=8)
    else:
        pool, results = None, map(_work, jobs)
    try:
        for key, cached, entry in tqdm(results, total=len(jobs), desc=f"featurize {kind}", mininterval=5):
            if entry is not None:
                skipped.append(entry)
                warn_skipped(entry)
            else:
                items[key] = torch.load(cached, weights_only=False)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    check_skipped(f"featurize {kind}", skipped, len(jobs), config["max_skipped_fraction"], manifest)
    save_torch({"kind": kind, "meta": kind_meta(kind, features_cfg), "items": items, "skipped": skipped}, out)
    write_json(skipped_report(f"featurize {kind}", len(items), skipped), skipped_path(out))
    log.info("featurized %d files (%d skipped) -> %s", len(items), len(skipped), out)
    return {"n_items": len(items), "skipped": skipped}
