"""What people read: the Markdown tables, the plots and the one-page HTML report of a run."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.io import atomic_path


def _markdown_table_to_html(text: str) -> str:
    """Render the Markdown produced by format_comparison_table (plus its heading lines) as HTML."""
    out: list[str] = []
    rows = [line for line in text.splitlines() if line.startswith("|")]
    for line in text.splitlines():
        if line.startswith("# "):
            out.append(f"<h2>{html.escape(line[2:])}</h2>")
        elif line and not line.startswith("|"):
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if rows:
        out.append("<table>")
        for k, line in enumerate(rows):
            if k == 1 and set(line.replace("|", "").strip()) <= set("-: "):
                continue
            cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
            tag = "th" if k == 0 else "td"
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def _img(path: Path) -> str:
    """An inline <img> of a PNG (so the page is one file)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def robustness_markdown(report: dict[str, Any]) -> str:
    """The robustness report (steps/robustness.py) as a Markdown table, one row per condition."""
    veto, fusion, audio = report["veto_drop_pct"], report["fusion_model"], report["audio_model"]
    lines = [
        "# robustness",
        "",
        f"Veto: drop > {veto:.0f}% fails. Fusion winner {fusion}, audio winner {audio}.",
        "",
        "`*_transcribed`: the symbolic input is the TransKun transcription of that condition's audio, compared",
        "with the same recordings scored from the ground-truth MIDI; its second column is the symbolic winner.",
        "",
        "| condition | audio (or symbolic) pairwise | its drop % | fusion pairwise | fusion drop % | fusion r | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond, e in report["conditions"].items():
        side = e.get("audio", e.get("symbolic"))
        lines.append(
            f"| {cond} | {side['pairwise_acc']:.3f} | {side['score_drop_pct']:.1f} | "
            f"{e['fusion']['pairwise_acc']:.3f} | {e['fusion']['score_drop_pct']:.1f} | "
            f"{e['fusion']['pearson_r']:.3f} | {'yes' if e['fusion']['passed'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def write_robustness_markdown(report: dict[str, Any], out: Path) -> None:
    """Write `robustness_markdown(report)` to `out` (atomic)."""
    with atomic_path(out) as tmp:
        tmp.write_text(robustness_markdown(report))


def plot_drops(report: dict[str, Any], out: Path) -> None:
    """Bar chart of the score drop (%) per condition with the veto line (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["conditions"])
    fig, ax = plt.subplots(figsize=(9, 4))
    models = ("audio", "symbolic", "fusion")  # symbolic: only where its input is a transcription
    for k, model in enumerate(models):
        drops = [report["conditions"][n].get(model, {}).get("score_drop_pct", np.nan) for n in names]
        ax.bar(np.arange(len(names)) + (k - 1) * 0.27, drops, width=0.27, label=f"{model} winner")
    ax.axhline(report["veto_drop_pct"], color="r", ls="--", label="veto threshold")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("pairwise-accuracy drop vs clean (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
