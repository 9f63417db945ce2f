"""The report rule: one self-contained HTML page opening with the winners, then the tables and plots."""

from __future__ import annotations

from pathlib import Path

from pianoeval.core.io import atomic_path
from pianoeval.evaluation.report import report_page


def run_report(results: Path, out: Path) -> Path:
    """Write `out` (HTML) from results/compare/*, results/robustness and results/fusion/winner.json."""
    with atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(report_page(results))
    return out
