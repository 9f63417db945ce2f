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

from pianoeval.errors import InputError
from pianoeval.io import atomic_path, write_json

log = logging.getLogger(__name__)

# Bump when a featurizer changes its output, so stale cache entries are not reused.
# 2: every kind also carries `stats` (the side input of the symbolic encoders).
FEATURIZER_VERSION = 2

_TOKENIZER = None


def _tokenizer(max_seq_len: int):  # -> PianoTokenizer
    """One tokenizer per worker process (building the vocabulary is not free)."""
    global _TOKENIZER
    if _TOKENIZER is None or _TOKENIZER.max_seq_len != max_seq_len:
        from pianoeval.symbolic.tokenizer import PianoTokenizer

        _TOKENIZER = PianoTokenizer(max_seq_len=max_seq_len)
    return _TOKENIZER


def featurize_file(kind: str, path: str, features_cfg: dict[str, Any]) -> dict[str, Any]:
    """Compute the feature item of one MIDI file for `kind`; InputError if the file is unusable."""
    from pianoeval.data.midi import load_performance
    from pianoeval.symbolic.stats import midi_statistics

    if kind not in ("tokens", "graphs", "curves", "stats"):
        raise ValueError(f"unknown feature kind {kind!r}")
    perf = load_performance(path)
    # Every kind carries the statistics: the ridge baseline's input and the encoders' side input.
    item: dict[str, Any] = {"stats": torch.from_numpy(midi_statistics(perf))}
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
    from pianoeval.symbolic.stats import STAT_NAMES

    return {**_kind_meta(kind, features_cfg), "n_stats": len(STAT_NAMES)}


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
    from pianoeval.symbolic.stats import STAT_NAMES

    return {"feature_names": list(STAT_NAMES), "n_features": len(STAT_NAMES)}


def _cache_key(kind: str, path: str, features_cfg: dict[str, Any]) -> str:
    """Content hash of the file bytes, the kind and the settings that change the output."""
    h = hashlib.sha1()
    h.update(Path(path).read_bytes())
    h.update(f"{kind}|{FEATURIZER_VERSION}|{sorted(features_cfg.items())}".encode())
    return h.hexdigest()


def _work(job: tuple[str, str, str, dict[str, Any], str]) -> tuple[str, str | None, str | None]:
    """Featurize one file into the cache (or find it there); return (key, cache file, error)."""
    key, kind, path, features_cfg, cache_dir = job
    try:
        digest = _cache_key(kind, path, features_cfg)
        target = Path(cache_dir) / digest[:2] / f"{digest}.pt"
        if not target.exists():
            item = featurize_file(kind, path, features_cfg)
            with atomic_path(target) as tmp:
                torch.save(item, tmp)
        return key, str(target), None
    except (InputError, OSError) as exc:
        return key, None, str(exc)


def collect_jobs(df: Any) -> list[tuple[str, str]]:
    """(key, MIDI path) for every performance MIDI and every distinct score MIDI of a manifest."""
    jobs = [(row.segment_id, row.midi_path) for row in df.itertuples() if isinstance(row.midi_path, str)]
    scores = sorted({p for p in df["score_midi_path"] if isinstance(p, str)})
    jobs.extend((f"score::{p}", p) for p in scores)
    return jobs


def run_featurize(
    kind: str, config: dict[str, Any], manifest: Path, out: Path, cache_dir: Path, threads: int = 1
) -> dict[str, Any]:
    """Featurize a manifest for `kind`, skipping (and reporting) unusable files; write `out`."""
    from tqdm import tqdm

    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    features_cfg = dict(config["features"])
    jobs = [(key, kind, path, features_cfg, str(cache_dir)) for key, path in collect_jobs(df)]
    items: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    workers = max(1, threads)
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_work, jobs, chunksize=8)
    else:
        pool, results = None, map(_work, jobs)
    try:
        for key, cached, error in tqdm(results, total=len(jobs), desc=f"featurize {kind}", mininterval=5):
            if cached is None:
                skipped.append({"key": key, "error": error or ""})
                log.warning("skipped %s", error)
            else:
                items[key] = torch.load(cached, weights_only=False)
    finally:
        if pool is not None:
            pool.shutdown()
    if not items:
        raise InputError("no file could be featurized", manifest)
    with atomic_path(out) as tmp:
        torch.save({"kind": kind, "meta": kind_meta(kind, features_cfg), "items": items, "skipped": skipped}, tmp)
    write_json({"n_items": len(items), "skipped": skipped}, out.with_suffix(".skipped.json"))
    log.info("featurized %d files (%d skipped) -> %s", len(items), len(skipped), out)
    return {"n_items": len(items), "skipped": skipped}
