"""The feature store of the pretraining corpus: random windows of its performances, each augmented
(transposed, tempo- and velocity-scaled) with its own seeded draw, featurized for one model kind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.errors import InputError
from pianoeval.core.settings import FeaturesSettings
from pianoeval.data.corpus import CorpusSettings, corpus_files, random_windows
from pianoeval.symbolic.augmentation import AugmentSettings, augment

log = logging.getLogger(__name__)

# Bump when the windows, augmentations or their featurizing change, so cached corpora are rebuilt.
CORPUS_VERSION = 1


def _file_items(job: tuple[str, str, int, str, CorpusSettings, AugmentSettings, dict[str, Any]]) -> list[tuple]:
    """The (key, item, augmentation) triples of one performance file (a worker's unit of work)."""
    from pianoeval.data.midi import load_performance
    from pianoeval.symbolic.featurize import featurize_performance

    folder, path, seed, kind, settings, aug, features = job
    # One generator per file, seeded by the corpus seed and the file's name: the same windows and
    # draws whatever the worker count or the order files are done in.
    digest = int(hashlib.sha1(f"{folder}/{Path(path).name}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, digest])
    try:
        perf = load_performance(path)
    except InputError as exc:
        log.warning("corpus: skipped %s", exc)
        return []
    out = []
    for n, win in enumerate(random_windows(perf, settings.seconds, settings.windows_per_file, rng)):
        view, drawn = augment(win, aug, rng)
        try:
            item = featurize_performance(kind, view, features)
        except InputError as exc:
            log.warning("corpus: window %d of %s skipped: %s", n, path, exc)
            continue
        out.append((f"{folder}/{Path(path).stem}#{n}", item, drawn))
    return out


def corpus_key(kind: str, settings: CorpusSettings, aug: AugmentSettings, features: FeaturesSettings, seed: int) -> str:
    """A digest of everything a corpus store depends on (its cache file's name)."""
    from pianoeval.symbolic.featurize import featurizer_version

    # The featurizer's version too: a corpus of the old curves must not feed an encoder of the new ones.
    version = featurizer_version(kind)
    what = [CORPUS_VERSION, version, kind, repr(settings), repr(aug), dataclasses.asdict(features), seed]
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_corpus_store(
    kind: str,
    settings: CorpusSettings,
    aug: AugmentSettings,
    features: FeaturesSettings,
    seed: int,
    threads: int = 1,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """{"items": {key: item}, "meta": kind_meta, "files": [...], "augment": {key: draws}}, read from
    `cache_dir` when this exact corpus was built before (see corpus_key)."""
    from pianoeval.core.io import save_torch
    from pianoeval.symbolic.featurize import kind_meta
    from pianoeval.training.data import load_feature_store

    cached = cache_dir / f"{kind}-{corpus_key(kind, settings, aug, features, seed)}.pt" if cache_dir else None
    if cached is not None and cached.is_file():
        log.info("corpus: cached %s", cached)
        return load_feature_store(cached)
    files = corpus_files(settings)
    jobs = [(f, str(p), seed, kind, settings, aug, features) for f, p in files]
    if threads > 1:
        with ProcessPoolExecutor(threads) as pool:
            results = list(pool.map(_file_items, jobs, chunksize=8))
    else:
        results = [_file_items(job) for job in jobs]
    triples = [t for r in results for t in r]
    if not triples:
        raise InputError("the pretraining corpus gave no usable window", settings.root)
    store = {
        "items": {key: item for key, item, _ in triples},
        "meta": kind_meta(kind, features),
        "files": [f"{f}/{p.name}" for f, p in files],
        "augment": {key: drawn for key, _, drawn in triples},
    }
    log.info("corpus: %d windows of %d performances (%s)", len(triples), len(files), kind)
    if cached is not None:
        save_torch(store, cached)
    return store
