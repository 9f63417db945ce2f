"""The demo rule: generate the demo corpus and its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def run_demo(config: dict[str, Any], out_dir: Path) -> pd.DataFrame:
    """Generate the demo corpus under `out_dir` and write `out_dir/manifest.parquet`."""
    from pianoeval.core.settings import DataSettings
    from pianoeval.data.demo import generate_demo_corpus
    from pianoeval.data.manifest import write_manifest

    demo = DataSettings.from_config(config).demo
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
