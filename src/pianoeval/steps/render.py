"""The render rule: every performance MIDI rendered to audio with FluidSynth, cached per file."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pianoeval.core.errors import OutputError
from pianoeval.core.io import write_json

log = logging.getLogger(__name__)


def run_render(
    config: dict[str, Any],
    manifest: Path,
    audio_dir: Path,
    out: Path,
    threads: int = 1,
    unlabelled: bool = False,
    skipped: Path | None = None,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Render each performance MIDI of the labelled tier T1 (with `unlabelled`, also the T2/T3 ones: their
    transcriptions feed symbolic pretraining) to `audio_dir/<id>.<key>.wav`, reusing WAVs already
    rendered (in `cache_dir`, when given, else in `audio_dir`); write the manifest with `audio_path` to
    `out` and, when given, the skipped-files report to `skipped`. Only what a configured model reads is
    rendered: the audio track, fusion, robustness and the transcription views read the T1 corpus only.
    """
    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    wanted = df["tier"].isin(["T1", "T2", "T3"] if unlabelled else ["T1"])
    return render_rows(config, df, wanted, audio_dir, out, threads, manifest, skipped=skipped, cache_dir=cache_dir)


def place(cached: Path, target: Path) -> None:
    """Put the cached WAV `cached` at `target`: a hard link (no copy, no space), or a copy where the two
    folders are on different file systems; atomic, and nothing is done when `target` is that file already."""
    import os
    import shutil

    from pianoeval.core.io import atomic_path

    if target.is_file() and os.path.samefile(cached, target):
        return
    with atomic_path(target) as tmp:  # an OSError becomes the OutputError naming `target`
        tmp.unlink()  # the link takes the temporary name
        try:
            os.link(cached, tmp)
        except OSError:  # another file system (or one without hard links)
            shutil.copyfile(cached, tmp)


def render_rows(
    config: dict[str, Any],
    df: pd.DataFrame,
    wanted: Any,
    audio_dir: Path,
    out: Path,
    threads: int,
    source: Path,
    whole: bool = False,
    skipped: Path | None = None,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Render the rows of `df` selected by the mask `wanted` (those with a MIDI); write the manifest with
    `audio_path` to `out` and, when given, the skipped-files report to `skipped`. `source` names the
    input in errors; `whole` ignores `render.max_seconds` (beat-aligned clips are cut from anywhere in a
    performance).

    The WAV name's key (`render_key`) covers the MIDI's bytes and the render settings, so a run killed
    part-way restarts where it stopped, while a changed SoundFont, rate or MIDI renders afresh. With
    `cache_dir` the WAVs are rendered and kept there and linked into `audio_dir` under the same name
    (`place`): the rules declare `audio_dir` as their output, which Snakemake empties before a rerun, while
    the cache keeps every rendering; the manifest's `audio_path` is in `audio_dir` either way.
    """
    from pianoeval.audio.render import find_soundfont, render_key, render_midi
    from pianoeval.core.settings import RenderSettings
    from pianoeval.core.skipped import check_skipped, collect_done, skip_entry, skipped_report
    from pianoeval.data.manifest import write_manifest

    settings = RenderSettings.from_config(config)
    max_seconds = None if whole else settings.max_seconds
    soundfont = find_soundfont(settings.soundfont)
    audio_dir.mkdir(parents=True, exist_ok=True)
    store = cache_dir or audio_dir
    store.mkdir(parents=True, exist_ok=True)
    todo = df[df["midi_path"].notna() & np.asarray(wanted, dtype=bool)]

    def render_one(row: Any) -> tuple[str, str | None, dict[str, str] | None, bool]:
        """(segment id, WAV path or None, skipped-file entry or None, whether it was rendered now)."""
        try:
            stem = row.segment_id.replace("/", "_").replace("::", "__")
            key = render_key(row.midi_path, soundfont, settings.sample_rate, max_seconds)
            name = f"{stem}.{key}.wav"
            cached, target = store / name, audio_dir / name
            now = not (cached.is_file() and cached.stat().st_size > 0)  # else rendered by an earlier run
            if now:
                # Written atomically: a killed run leaves no half-written WAV under the cached name.
                rate = settings.sample_rate
                render_midi(row.midi_path, cached, soundfont=soundfont, sample_rate=rate, max_seconds=max_seconds)
            if cached != target:
                place(cached, target)
        except OutputError:
            raise  # a full disk or read-only folder is no file's fault: stop
        except Exception as exc:  # keep going past any one file; the report and the log say why
            return row.segment_id, None, skip_entry(row.segment_id, row.midi_path, exc), False
        return row.segment_id, str(target.resolve()), None, now

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # On an exception or Ctrl-C, map's iterator cancels the queued files: the run stops promptly.
        results = pool.map(render_one, todo.itertuples(index=False))
        paths, failed, n_new = collect_done(results, len(todo), "render", mininterval=5)
    log.info("render: %d rendered now, %d reused, %d skipped", n_new, len(paths) - n_new, len(failed))
    check_skipped("render", failed, len(todo), config["max_skipped_fraction"], source)
    df = df.copy()
    df["audio_path"] = [paths.get(s, a) for s, a in zip(df["segment_id"], df["audio_path"], strict=True)]
    write_manifest(df, out)
    if skipped is not None:
        report = skipped_report(
            "render", len(paths), failed, rendered_now=n_new, reused=len(paths) - n_new, soundfont=str(soundfont)
        )
        write_json(report, skipped)
    return df
