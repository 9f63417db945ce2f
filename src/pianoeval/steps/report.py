"""The report rule: one self-contained HTML page gathering the tables, plots and the final winner."""

from __future__ import annotations

import html
import json
from pathlib import Path

from pianoeval.core.io import atomic_path
from pianoeval.evaluation.report import _img, _markdown_table_to_html


def run_report(results: Path, out: Path) -> Path:
    """Write `out` (HTML) from results/compare/*, results/robustness and results/fusion/winner.json."""
    parts = ["<h1>pianoeval results</h1>"]
    winner = results / "fusion" / "winner.json"
    if winner.is_file():
        parts.append(
            "<h2>Final winner</h2><pre>" + html.escape(json.dumps(json.loads(winner.read_text()), indent=2)) + "</pre>"
        )
    for track in ("symbolic", "audio", "fusion"):
        folder = results / "compare" / track
        if (folder / "comparison.md").is_file():
            parts.append(_markdown_table_to_html((folder / "comparison.md").read_text()))
        # The forest plot of the differences (95 % paired bootstrap intervals), then per dimension.
        for name in ("differences.png", "per_dimension.png"):
            if (folder / name).is_file():
                parts.append(_img(folder / name))
    rob = results / "robustness"
    if (rob / "report.md").is_file():
        parts.append(_markdown_table_to_html((rob / "report.md").read_text()))
    if (rob / "score_drop.png").is_file():
        parts.append(_img(rob / "score_drop.png"))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}"
    )
    head = f"<head><meta charset='utf-8'><title>pianoeval</title><style>{style}</style></head>"
    page = f"<!doctype html><html>{head}<body>{''.join(parts)}</body></html>"
    with atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(page)
    return out
