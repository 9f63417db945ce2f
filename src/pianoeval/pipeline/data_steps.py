"""Pipeline steps for data: demo corpus, manifest, folds and audio rendering."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from pianoeval.core.errors import ConfigError, InputError, OutputError
from pianoeval.core.io import write_json

log = logging.getLogger(__name__)


def run_demo(config: dict[str, Any], out_dir: Path) -> pd.DataFrame:
    """Generate the demo corpus under `out_dir` and write `out_dir/manifest.parquet`."""
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.manifest import write_manifest

    demo = config["data"]["demo"]
    df = generate_demo_corpus(
        out_dir,
        n_pieces=demo["n_pieces"],
        n_performances=demo["n_performances"],
        seconds=demo["seconds"],
        seed=demo["seed"],
    )
    write_manifest(df, out_dir / "manifest.parquet")
    log.info("demo corpus: %d performances of %d pieces in %s", len(df), df["piece_id"].nunique(), out_dir)
    return df


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


def build_manifest(config: dict[str, Any]) -> pd.DataFrame:
    """Build the corpus manifest from the configured source plus optional unlabelled MIDI."""
    from pianoeval.data.manifest import label_matrix

    data = config["data"]
    if data["source"] == "demo":
        from pianoeval.data.manifest import read_manifest

        df = read_manifest(Path("results/demo/manifest.parquet"))
    elif data["source"] == "percepiano":
        from pianoeval.data.percepiano import load_percepiano

        root = Path(data["percepiano_root"])
        if not root.exists():
            root = Path("resources/percepiano")
        df = load_percepiano(root, label_version=data["percepiano_labels"])
    else:  # the schema's enum makes this unreachable unless it is edited
        raise ConfigError(f"unknown data.source {data['source']!r}")
    if data["limit"]:
        labelled = ~pd.isna(label_matrix(df)).any(axis=1)
        keep = df[labelled].head(data["limit"]).index.union(df[~labelled].index)
        df = df.loc[keep].reset_index(drop=True)
    frames = [df]
    if data["asap_root"]:
        from pianoeval.data.asap import load_asap

        frames.append(load_asap(Path(data["asap_root"])))
    frames.extend(_unlabelled_midi_rows(Path(folder)) for folder in data["extra_midi_dirs"])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else df


def run_prepare(config: dict[str, Any], out: Path) -> pd.DataFrame:
    """Write the validated manifest to `out` and a summary JSON beside it."""
    from pianoeval.data.manifest import label_matrix, write_manifest

    df = build_manifest(config)
    write_manifest(df, out)
    labels = label_matrix(df)
    write_json(
        {
            "n_rows": len(df),
            "n_labelled": int((~pd.isna(labels).any(axis=1)).sum()),
            "n_pieces": int(df["piece_id"].nunique()),
            "n_segment_groups": int(df["segment_group"].nunique()),
            "tiers": df["tier"].value_counts().to_dict(),
            "sources": df["source"].value_counts().to_dict(),
        },
        out.parent / "summary.json",
    )
    log.info("manifest: %d rows -> %s", len(df), out)
    return df


def run_folds(config: dict[str, Any], manifest: Path, out: Path) -> dict[str, Any]:
    """Make folds for the configured protocol, check them for leaks, and write them."""
    from pianoeval.data.folds import check_folds, make_folds, write_folds
    from pianoeval.data.manifest import read_manifest

    df = read_manifest(manifest)
    cfg = config["folds"]
    try:
        folds = make_folds(
            df, k=cfg["k"], protocol=cfg["protocol"], seed=config["seed"], dev_fraction=cfg["dev_fraction"]
        )
    except InputError as exc:  # too few labelled groups: a fact about this manifest, so name it
        raise InputError(exc.message, exc.path or manifest) from exc
    check_folds(folds, df)
    write_folds(folds, out)
    for fold in folds["folds"]:
        log.info(
            "fold %d: train %d, dev %d, val %d",
            fold["fold"],
            len(fold["train"]),
            len(fold["dev"]),
            len(fold["val"]),
        )
    return folds


def run_render(config: dict[str, Any], manifest: Path, audio_dir: Path, out: Path, threads: int = 1) -> pd.DataFrame:
    """Render each performance MIDI to `audio_dir/<id>.<key>.wav`, reusing WAVs already rendered.

    `key` (`render_key`) covers the MIDI's bytes and the render settings, so a run killed part-way
    restarts where it stopped, while a changed SoundFont, rate or MIDI renders afresh.
    """
    from pianoeval.audio.render import find_soundfont, render_key, render_midi
    from pianoeval.core.skipped import check_skipped, collect_done, skip_entry, skipped_report
    from pianoeval.data.manifest import read_manifest, write_manifest

    df = read_manifest(manifest)
    cfg = config["render"]
    soundfont = find_soundfont(cfg["soundfont"])
    audio_dir.mkdir(parents=True, exist_ok=True)
    todo = df[df["midi_path"].notna() & df["tier"].isin(["T1", "T2", "T3"])]

    def render_one(row: Any) -> tuple[str, str | None, dict[str, str] | None, bool]:
        """(segment id, WAV path or None, skipped-file entry or None, whether it was rendered now)."""
        try:
            stem = row.segment_id.replace("/", "_").replace("::", "__")
            target = audio_dir / f"{stem}.{render_key(row.midi_path, soundfont, cfg['sample_rate'])}.wav"
            if target.is_file() and target.stat().st_size > 0:
                return row.segment_id, str(target.resolve()), None, False  # rendered by an earlier run
            # Written atomically: a killed run leaves no half-written WAV under the target name.
            render_midi(row.midi_path, target, soundfont=soundfont, sample_rate=cfg["sample_rate"])
        except OutputError:
            raise  # a full disk or read-only folder is no file's fault: stop
        except Exception as exc:  # keep going past any one file; the report and the log say why
            return row.segment_id, None, skip_entry(row.segment_id, row.midi_path, exc), False
        return row.segment_id, str(target.resolve()), None, True

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # On an exception or Ctrl-C, map's iterator cancels the queued files: the run stops promptly.
        results = pool.map(render_one, todo.itertuples(index=False))
        paths, skipped, n_new = collect_done(results, len(todo), "render", mininterval=5)
    log.info("render: %d rendered now, %d reused, %d skipped", n_new, len(paths) - n_new, len(skipped))
    check_skipped("render", skipped, len(todo), config["max_skipped_fraction"], manifest)
    df = df.copy()
    df["audio_path"] = [paths.get(s, a) for s, a in zip(df["segment_id"], df["audio_path"], strict=True)]
    write_manifest(df, out)
    write_json(
        skipped_report(
            "render", len(paths), skipped, rendered_now=n_new, reused=len(paths) - n_new, soundfont=str(soundfont)
        ),
        out.parent / "skipped.json",
    )
    return df
