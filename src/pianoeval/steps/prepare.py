"""The prepare rule: the corpus manifest from the configured source (plus unlabelled MIDI) and its summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pianoeval.core.errors import ConfigError, InputError
from pianoeval.core.io import write_json

log = logging.getLogger(__name__)


def _unlabelled_midi_rows(folder: Path) -> pd.DataFrame:
    """Manifest rows (tier T4) for every MIDI file below `folder`."""
    from pianoeval.data.manifest import make_rows

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".mid", ".midi"})
    if not files:
        raise InputError("no MIDI files found in the extra MIDI folder", folder)
    rows = [
        {
            "segment_id": f"t4::{folder.name}::{p.relative_to(folder).as_posix()}",
            "piece_id": p.stem,
            "segment_group": f"t4::{p.stem}",
            "performer": "unknown",
            "tier": "T4",
            "source": folder.name,
            "midi_path": str(p.resolve()),
        }
        for p in files
    ]
    return make_rows(rows)


def subset_groups(df: pd.DataFrame, n_groups: int | None, per_group: int | None, seed: int) -> pd.DataFrame:
    """The labelled rows of `n_groups` segment groups (seeded draw; all when None), at most `per_group`
    of each (seeded), and the unlabelled rows of those groups: a smaller corpus of whole groups."""
    from pianoeval.data.manifest import labelled_mask, select_per_group

    labelled = labelled_mask(df)
    groups = sorted(df.loc[labelled, "segment_group"].unique())
    if n_groups is not None and n_groups < len(groups):
        rng = np.random.default_rng([seed, n_groups])
        groups = sorted(rng.choice(groups, size=n_groups, replace=False).tolist())
    rows = df[labelled & df["segment_group"].isin(groups)]
    rows = select_per_group(rows, per_group, seed)
    keep = rows.index.union(df[~labelled & df["segment_group"].isin(groups)].index)
    return df.loc[keep].reset_index(drop=True)


def build_manifest(config: dict[str, Any], demo_manifest: Path | None = None) -> pd.DataFrame:
    """Build the corpus manifest from the configured source plus optional unlabelled MIDI; the demo
    source reads `demo_manifest` (the demo rule's output)."""
    from pianoeval.core.settings import DataSettings
    from pianoeval.data.manifest import label_matrix

    data = DataSettings.from_config(config)
    if data.source == "demo":
        from pianoeval.data.manifest import read_manifest

        if demo_manifest is None:
            raise ConfigError("data.source is demo: pass --demo-manifest (the demo rule's manifest.parquet)")
        df = read_manifest(demo_manifest)
    elif data.source == "percepiano":
        from pianoeval.data.percepiano import load_percepiano

        root = Path(data.percepiano_root)
        if not root.exists():
            root = Path("resources/percepiano")
        df = load_percepiano(root, label_version=data.percepiano_labels)
    else:  # the schema's enum makes this unreachable unless it is edited
        raise ConfigError(f"unknown data.source {data.source!r}")
    if data.limit:
        labelled = ~pd.isna(label_matrix(df)).any(axis=1)
        keep = df[labelled].head(data.limit).index.union(df[~labelled].index)
        df = df.loc[keep].reset_index(drop=True)
    if data.limit_groups or data.limit_per_group:
        df = subset_groups(df, data.limit_groups, data.limit_per_group, int(config["seed"]))
    frames = [df]
    if data.asap_root:
        from pianoeval.data.asap import load_asap

        root = Path(data.asap_root)
        # A missing folder was fetched by the DAG (the fetch rule) into resources/.
        frames.append(load_asap(root if root.exists() else Path("resources/asap")))
    frames.extend(_unlabelled_midi_rows(Path(folder)) for folder in data.extra_midi_dirs)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else df


def manifest_summary(df: pd.DataFrame) -> dict[str, Any]:
    """The prepare rule's summary of a manifest: rows, labelled rows, pieces, segment groups, tiers, sources."""
    from pianoeval.data.manifest import label_matrix

    return {
        "n_rows": len(df),
        "n_labelled": int((~pd.isna(label_matrix(df)).any(axis=1)).sum()),
        "n_pieces": int(df["piece_id"].nunique()),
        "n_segment_groups": int(df["segment_group"].nunique()),
        "tiers": df["tier"].value_counts().to_dict(),
        "sources": df["source"].value_counts().to_dict(),
    }


def run_prepare(
    config: dict[str, Any], out: Path, demo_manifest: Path | None = None, summary: Path | None = None
) -> pd.DataFrame:
    """Write the validated manifest to `out` and, when given, its summary JSON to `summary`
    (`demo_manifest`: the demo rule's manifest, for `data.source: demo`)."""
    from pianoeval.data.manifest import write_manifest

    df = build_manifest(config, demo_manifest)
    write_manifest(df, out)
    if summary is not None:
        write_json(manifest_summary(df), summary)
    log.info("manifest: %d rows -> %s", len(df), out)
    return df
