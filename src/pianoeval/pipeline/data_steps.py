"""Pipeline steps for data: demo corpus, manifest, folds and audio rendering."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from pianoeval.errors import ConfigError, InputError
from pianoeval.io import write_json

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
    folds = make_folds(df, k=cfg["k"], protocol=cfg["protocol"], seed=config["seed"], dev_fraction=cfg["dev_fraction"])
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
    """Render each performance MIDI to `audio_dir/<id>.wav` (skipping files already there)."""
    from tqdm import tqdm

    from pianoeval.audio.render import find_soundfont, render_midi
    from pianoeval.data.manifest import read_manifest, write_manifest

    df = read_manifest(manifest)
    cfg = config["render"]
    soundfont = find_soundfont(cfg["soundfont"])
    audio_dir.mkdir(parents=True, exist_ok=True)
    todo = df[df["midi_path"].notna() & df["tier"].isin(["T1", "T2", "T3"])]

    def wav_path(segment_id: str) -> Path:
        return audio_dir / (segment_id.replace("/", "_").replace("::", "__") + ".wav")

    def render_one(row: Any) -> tuple[str, str | None, str | None]:
        target = wav_path(row.segment_id)
        if target.exists() and target.stat().st_size > 0:
            return row.segment_id, str(target.resolve()), None  # resumable: finished earlier
        try:
            render_midi(row.midi_path, target, soundfont=soundfont, sample_rate=cfg["sample_rate"])
        except InputError as exc:
            return row.segment_id, None, str(exc)
        return row.segment_id, str(target.resolve()), None

    paths: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = pool.map(render_one, todo.itertuples(index=False))
        for segment_id, path, error in tqdm(results, total=len(todo), desc="render", mininterval=5):
            if path:
                paths[segment_id] = path
            else:
                skipped.append({"segment_id": segment_id, "error": error or ""})
                log.warning("skipped %s", error)
    df = df.copy()
    df["audio_path"] = [paths.get(s, a) for s, a in zip(df["segment_id"], df["audio_path"], strict=True)]
    write_manifest(df, out)
    write_json({"rendered": len(paths), "skipped": skipped, "soundfont": str(soundfont)}, out.parent / "skipped.json")
    if todo.shape[0] and not paths:
        raise InputError("no performance could be rendered; see skipped.json", out.parent / "skipped.json")
    return df
