"""Embed rendered audio with a frozen backbone, cached per file, into one store for the audio heads.

Output (`torch.save`): `{"kind": "audio", "meta": {"backbone", "dim", "frame_rate", "sample_rate", "per_group"},
"items": {segment_id: {"audio_emb": [F, D] float32}}, "skipped": [...]}`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from pianoeval.audio.embed import CACHE_FRAME_RATE, embed_wave
from pianoeval.core.errors import InputError, OutputError
from pianoeval.core.io import read_input_bytes, save_torch, write_json
from pianoeval.core.skipped import check_skipped, skip_entry, skipped_report, warn_skipped
from pianoeval.data.manifest import select_per_group
from pianoeval.training.registry import build_frozen_backbone

log = logging.getLogger(__name__)

# Bump when the embedding of a file changes for the same backbone settings.
EMBEDDER_VERSION = 1


def _cache_tag(backbone_name: str, backbone: Any, fingerprint: str) -> str:
    """What, beside a file's bytes, keys its cached frames: the backbone, the embedder's version and frame
    rate, the settings that change the weights (`fingerprint`: MuQ released vs small random; empty for
    logmel and transkun, so their existing caches stay valid) and the layers averaged."""
    tag = f"{backbone_name}|{EMBEDDER_VERSION}|{CACHE_FRAME_RATE}" + (f"|{fingerprint}" if fingerprint else "")
    layers = backbone.probe_layers
    if layers and layers != [backbone.num_layers]:
        # Frames averaged over several layers (audio.hidden_layers; MuQ's default 9-12) are other
        # frames; the last layer alone keeps the tag, and so the caches, of earlier runs.
        tag += "|layers=" + ",".join(map(str, layers))
    return tag


def run_embed(
    backbone_name: str,
    config: dict[str, Any],
    manifest: Path,
    out: Path,
    cache_dir: Path,
    devices: int | None = None,
    skipped: Path | None = None,
) -> dict[str, Any]:
    """Embed every rendered T1 segment of the manifest (resumable through the per-file cache) on
    the device the job reserved (`devices`, its `gpu` resource: core.device.resolve_device); write the
    store to `out` and, when given, the skipped-files report to `skipped`."""
    from tqdm import tqdm

    from pianoeval.audio.io import load_audio
    from pianoeval.core.device import resolve_device
    from pianoeval.core.settings import EmbedSettings
    from pianoeval.data.manifest import read_manifest
    from pianoeval.training.registry import backbone_fingerprint

    df = read_manifest(manifest)
    # The audio models train and are scored on the labelled tier (T1) only: nothing else is embedded.
    rows = df[df["audio_path"].notna() & (df["tier"] == "T1")]
    if rows.empty:
        raise InputError("the manifest has no audio paths; run the render rule first", manifest)
    settings = EmbedSettings.from_config(config)  # the render and audio keys the embed rule is given
    per_group = settings.per_group
    if per_group is not None:
        # A backbone too slow for the whole corpus: the audio models see only this subset.
        rows = select_per_group(rows, per_group, config["seed"])
        log.info("embedding a subset: %d labelled segments, at most %d per segment group", len(rows), per_group)
    sr = settings.sample_rate
    backbone = build_frozen_backbone(backbone_name, settings.backbone).to(resolve_device(devices))
    tag = _cache_tag(backbone_name, backbone, backbone_fingerprint(backbone_name, settings.backbone))
    items: dict[str, Any] = {}
    failed: list[dict[str, str]] = []
    n_new = 0  # embedded by this run; the rest came from the cache (an earlier, perhaps killed, run)
    for row in tqdm(list(rows.itertuples()), desc=f"embed {backbone_name}", mininterval=5):
        try:
            digest = hashlib.sha1(read_input_bytes(row.audio_path, "audio file") + tag.encode()).hexdigest()
            target = cache_dir / digest[:2] / f"{digest}.pt"
            if not target.exists():
                emb = embed_wave(backbone, load_audio(row.audio_path, sample_rate=sr), sr)
                save_torch(emb.clone(), target)
                n_new += 1
            items[row.segment_id] = {"audio_emb": torch.load(target)}
        except OutputError:
            raise  # a full disk or read-only cache is no file's fault: stop
        except Exception as exc:  # keep going past any one file; the report and the log say why
            failed.append(skip_entry(row.segment_id, row.audio_path, exc))
            warn_skipped(failed[-1])
    check_skipped(f"embed {backbone_name}", failed, len(rows), config["max_skipped_fraction"], manifest)
    dim = int(next(iter(items.values()))["audio_emb"].shape[1])
    meta = {
        "backbone": backbone_name,
        "dim": dim,
        "frame_rate": CACHE_FRAME_RATE,
        "sample_rate": backbone.sample_rate,
        "per_group": per_group,
    }
    save_torch({"kind": "audio", "meta": meta, "items": items, "skipped": failed}, out)
    if skipped is not None:
        counts = {"embedded_now": n_new, "cached": len(items) - n_new}
        write_json(skipped_report(f"embed {backbone_name}", len(items), failed, **counts), skipped)
    log.info(
        "embedded %d files with %s (%d now, %d from the cache, %d skipped) -> %s",
        len(items),
        backbone_name,
        n_new,
        len(items) - n_new,
        len(failed),
        out,
    )
    return meta
