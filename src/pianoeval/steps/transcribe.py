"""TransKun transcriptions of the rendered recordings: what a user's recording looks like to the symbolic track.

A symbolic model trained only on the ground-truth performance MIDI meets a different input when it
scores a recording: TransKun's transcription has compressed velocities (a recording's gain is unknown,
and rendered audio is peak-normalised), misses most sustain-pedal events of a rendering, and, under
phone-like conditions, loses and invents notes. The robustness check measured it: the symbolic winner
lost 8 % of its pairwise accuracy on clean transcriptions and 29 % on degraded ones (docs/scoring.md).

This step transcribes each rendered recording once per configured *view* (`transcription.views`):
`clean` (the rendering as is) and `augmented` (a random phone-like chain from `AudioAugmentor`, seeded
per recording). Its manifest lists one row per (recording, view) with the segment id
`<segment id>@<view>` (`view_id`), the source row's labels, group and score, and the transcription as
its MIDI. `featurize` reads it beside the main manifest; training adds the views of the training
segments to the training split (same labels and group) and scores the clean views of the validation
segments as `val_transcribed` (training/data.py).

Each transcription is cached under a key of the audio's bytes, the view and its seed (`_cache_key`), so a
killed run restarts where it stopped. TransKun runs at about 0.5 x real time per core.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from pianoeval.audio.augmentation import view_seed, view_wave
from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.errors import InputError, OutputError
from pianoeval.core.io import read_input_bytes, write_json
from pianoeval.data.manifest import view_id

log = logging.getLogger(__name__)

# Bump when transcription or the views change what they produce, so stale cache entries are not reused.
TRANSCRIBE_VERSION = 2  # 2: the fewest-windows plan (audio.transcribe.plan_windows)


def _cache_key(audio_path: str, view: str, seed: int, device: str = "cpu") -> str:
    """Content hash of the audio's bytes, the view, its seed, the transcriber's version and engine."""
    from pianoeval.audio.transcribe import resolve_engine

    h = hashlib.sha1(read_input_bytes(audio_path, "audio file"))
    # The engines agree to float rounding, not bit for bit: each has its own cache entries.
    h.update(f"|{view}|{seed}|{TRANSCRIBE_VERSION}|{resolve_engine(None, device)}".encode())
    return h.hexdigest()


def per_group(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows of each segment group, drawn with `seed`, in the manifest's order."""
    shuffled = rows.sample(frac=1.0, random_state=seed)
    return rows.loc[rows.index.isin(shuffled.groupby("segment_group", sort=False).head(n).index)]


def _work(job: tuple[str, str, str, int, str, str]) -> tuple[str, str | None, dict[str, str] | None, bool]:
    """Transcribe one (recording, view) into the cache, or find it there.

    Returns (view id, MIDI path or None, skipped-file entry or None, whether it was transcribed now).
    """
    from pianoeval.audio.io import load_audio
    from pianoeval.audio.transcribe import transcribe_timed
    from pianoeval.core.skipped import skip_entry
    from pianoeval.core.threads import torch_threads
    from pianoeval.data.midi import write_performance

    segment_id, audio_path, view, seed, cache_dir, device = job
    vid = view_id(segment_id, view)
    try:
        digest = _cache_key(audio_path, view, seed, device)
        target = Path(cache_dir) / digest[:2] / f"{digest}.mid"
        if target.is_file() and target.stat().st_size > 0:
            return vid, str(target.resolve()), None, False
        # Degraded at the project's rate, as the robustness check does; TransKun resamples to its own.
        wave = view_wave(load_audio(audio_path, SAMPLE_RATE), SAMPLE_RATE, view, seed)
        # One intra-op thread per worker: the workers, not the threads, share the cores.
        with torch_threads(1):
            perf, _ = transcribe_timed(wave, sample_rate=SAMPLE_RATE, device=device, progress=False)
        if len(perf.notes) == 0:
            raise InputError(f"TransKun transcribed no notes ({view} view)", audio_path)
        write_performance(perf, target)  # atomic: a killed run leaves no half-written MIDI
    except OutputError:
        raise  # a full disk or read-only folder is no file's fault: stop
    except Exception as exc:  # keep going past any one file; the report and the log say why
        return vid, None, skip_entry(vid, audio_path, exc), False
    return vid, str(target.resolve()), None, True


def run_transcribe(
    config: dict[str, Any],
    manifest: Path,
    out: Path,
    cache_dir: Path,
    threads: int = 1,
    devices: int | None = None,
    skipped: Path | None = None,
) -> pd.DataFrame:
    """Transcribe every rendered recording of `manifest` in each of `transcription.views` on the device the
    job reserved (`devices`: on a GPU, minutes for PercePiano instead of hours); write the views'
    manifest to `out` and, when given, the skipped-files report to `skipped`. With no views, the
    manifest is empty."""
    from pianoeval.core.device import resolve_device
    from pianoeval.core.settings import TranscriptionSettings
    from pianoeval.core.skipped import check_skipped, collect_done, skipped_report
    from pianoeval.data.manifest import empty_manifest, read_manifest, write_manifest

    df = read_manifest(manifest)
    settings = TranscriptionSettings.from_config(config)
    views = list(settings.views)
    rows = df[df["audio_path"].notna()]
    if views and rows.empty:
        raise InputError("the manifest lists no rendered audio to transcribe; run the render rule first", manifest)
    seed = int(config["seed"])
    if settings.per_group is not None:
        rows = per_group(rows, settings.per_group, seed)
    device = resolve_device(devices).type
    jobs = [
        (row.segment_id, row.audio_path, view, view_seed(row.segment_id, seed), str(cache_dir), device)
        for row in rows.itertuples(index=False)
        for view in views
    ]
    workers = max(1, min(threads, len(jobs)))
    # Each worker runs TransKun on one intra-op thread (_work): the workers, not the threads, share the cores.
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and jobs else None
    results = pool.map(_work, jobs) if pool is not None else map(_work, jobs)
    try:
        paths, failed, n_new = collect_done(results, len(jobs), "transcribe", mininterval=10)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    log.info("transcribe: %d transcribed now, %d reused, %d skipped", n_new, len(paths) - n_new, len(failed))
    check_skipped("transcribe", failed, len(jobs), config["max_skipped_fraction"], manifest)
    out_rows = []
    for row in rows.itertuples(index=False):
        for view in views:
            vid = view_id(row.segment_id, view)
            if vid in paths:
                out_rows.append({**row._asdict(), "segment_id": vid, "midi_path": paths[vid]})
    views_df = pd.DataFrame(out_rows, columns=df.columns) if out_rows else empty_manifest()
    write_manifest(views_df, out)
    if skipped is not None:
        report = skipped_report("transcribe", len(paths), failed, transcribed_now=n_new, reused=len(paths) - n_new)
        write_json(report, skipped)
    return views_df
