"""The render_unlabelled rule: unlabelled performances (ASAP) rendered for a2's self-supervised stage.

Requested only when a2 is configured with `unlabelled_audio.root`: the rendered manifest goes to
`pianoeval train audio a2 --unlabelled-manifest`, which cuts beat-aligned clips from it and leaves out
the fold's dev and val music (training/audio_data.py). Rendered like PercePiano (the same SoundFont,
rate and per-file cache), into its own folder, so that no other rule sees these rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def unlabelled_rows(root: Path, pieces: int | None) -> pd.DataFrame:
    """Manifest rows of the ASAP-style folder `root` (every performance), or of its first `pieces`
    pieces in name order (a smaller run, e.g. the CPU rehearsal)."""
    from pianoeval.data.asap import load_asap

    df = load_asap(root)
    if pieces is not None:
        kept = sorted(df["piece_id"].unique())[:pieces]
        df = df[df["piece_id"].isin(kept)].reset_index(drop=True)
    return df


def run_render_unlabelled(
    config: dict[str, Any],
    root: Path,
    audio_dir: Path,
    out: Path,
    threads: int = 1,
    skipped: Path | None = None,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Render the unlabelled performances of `root` (`unlabelled_audio.pieces` of them at most) to
    `audio_dir` (through the per-file cache `cache_dir`, when given: steps/render.py render_rows); write
    their manifest, with `audio_path`, to `out` (and the skipped-files report to `skipped`, when given)."""
    from pianoeval.core.settings import UnlabelledAudioSettings
    from pianoeval.steps.render import render_rows

    df = unlabelled_rows(root, UnlabelledAudioSettings.from_config(config).pieces)
    log.info("unlabelled audio: %d performances of %d pieces from %s", len(df), df["piece_id"].nunique(), root)
    return render_rows(
        config, df, [True] * len(df), audio_dir, out, threads, root, whole=True, skipped=skipped, cache_dir=cache_dir
    )
