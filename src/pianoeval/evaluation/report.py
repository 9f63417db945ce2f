"""What people read: the Markdown tables, the plots and the one-page HTML report of a run."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.io import atomic_path
from pianoeval.core.layout import Results
from pianoeval.evaluation.compare import METRICS, WINNER_RULE, _rank_key


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


def winners_table(winner: dict[str, Any]) -> str:
    """The page's opening: an HTML table of the winners (fusion, then each track's) from winner.json, with
    their means and 95 % intervals, how each was decided, the fusion's gain and the robustness verdict."""
    rows = [("fusion (final)", winner["winner"], winner)]
    rows += [(track, w["model"], w) for track, w in winner.get("single_track_winners", {}).items()]
    head = ["track", "winner", "decided by", "pairwise acc [95% CI]", "R² [95% CI]", "params"]
    out = ["<h2>Winners</h2>", "<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for track, model, w in rows:
        params = w.get("n_parameters")
        cells = [track, model, w.get("decided_by", ""), _ci(w.get("pairwise_acc")), _ci(w.get("r2"))]
        cells.append("" if params is None else f"{params:,}")
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    gain = winner.get("gain_over_best_single_track", {})
    if gain:
        figures = ", ".join(f"{m} {_ci(gain[m], signed=True)}" for m in ("pairwise_acc", "r2") if m in gain)
        out.append(
            f"<p>Fusion gain over the best single track ({html.escape(gain['best_single_track'])}): {figures}.</p>"
        )
    rob = winner.get("robustness") or {}
    if rob.get("passed") is not None:
        verdict = "passed" if rob["passed"] else "FAILED"
        out.append(
            f"<p>Robustness: {verdict} (worst drop {rob['worst_drop_pct']:.1f}% against a veto at "
            f"{rob['veto_drop_pct']:.0f}%).</p>"
        )
    return "\n".join(out)


def report_page(results: Path) -> str:
    """One self-contained HTML page of a results tree: the winners' table first, then each track's
    comparison table and plots, the robustness table and plot, and winner.json in full at the end."""
    layout = Results(results)
    parts = ["<h1>pianoeval results</h1>"]
    winner = json.loads(layout.final_winner.read_text()) if layout.final_winner.is_file() else None
    if winner is not None:
        parts.append(winners_table(winner))
    for track in ("symbolic", "audio", "fusion"):
        folder = layout.compare(track)
        if (folder / "comparison.md").is_file():
            parts.append(_markdown_table_to_html((folder / "comparison.md").read_text()))
        # The forest plot of the differences (95 % paired bootstrap intervals), then per dimension.
        for name in ("differences.png", "per_dimension.png"):
            if (folder / name).is_file():
                parts.append(_img(folder / name))
    rob = layout.root / "robustness"
    if (rob / "report.md").is_file():
        parts.append(_markdown_table_to_html((rob / "report.md").read_text()))
    if (rob / "score_drop.png").is_file():
        parts.append(_img(rob / "score_drop.png"))
    if winner is not None:
        dump = html.escape(json.dumps(winner, indent=2))
        parts.append(f"<details><summary>winner.json</summary><pre>{dump}</pre></details>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}"
    )
    head = f"<head><meta charset='utf-8'><title>pianoeval</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(parts)}</body></html>"


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


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a compute node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> None:
    """Write a figure to `out` as PNG (atomic) and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_drops(report: dict[str, Any], out: Path) -> None:
    """Bar chart of the score drop (%) per condition with the veto line (PNG, atomic)."""
    plt = _pyplot()

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
    _save(fig, out)


# -- a track's comparison (steps/compare.py) ------------------------------------------------------------


def _ci(cell: dict[str, Any] | None, signed: bool = False) -> str:
    """'0.727 [0.716, 0.738]' from {mean, ci95}; '' without one."""
    if not cell:
        return ""
    fmt = "{:+.3f}" if signed else "{:.3f}"
    low, high = cell["ci95"]
    return f"{fmt.format(cell['mean'])} [{fmt.format(low)}, {fmt.format(high)}]"


def _pair_cells(entry: dict[str, Any] | None) -> str:
    """'pairwise / R²' differences with their intervals, or ''."""
    if not entry:
        return ""
    return f"{_ci(entry.get('pairwise_acc'), True)} / {_ci(entry.get('r2'), True)}"


def comparison_markdown(track: str, comparison: dict[str, Any]) -> str:
    """The comparison as Markdown: one row per model (means with 95 % intervals, the differences to the
    best baseline and, for encoders, what the deep part adds to the wide part), then the winner's
    differences to every other model."""
    from pianoeval.metrics import format_comparison_table

    summary, winner = comparison["models"], comparison["winner"]
    rows = []
    for model in sorted(summary, key=_rank_key(summary), reverse=True):
        s = summary[model]
        rows.append(
            {
                "model": f"**{model}**" if model == winner else model,
                "pairwise acc [95% CI]": _ci(s["pairwise_acc"]),
                "R² [95% CI]": _ci(s["r2"]),
                f"vs {comparison['best_baseline']} (pairwise / R²)": _pair_cells(s.get("vs_best_baseline")),
                "deep adds (pairwise / R²)": _pair_cells(s.get("deep_adds")),
                "params": "" if s["n_parameters"] is None else f"{s['n_parameters']:,}",
                "train time (s)": f"{s['wall_s_total']:.0f}",
                "role": "reference" if s["reference"] else ("baseline" if s["baseline"] else ""),
                "transcribed acc / R²": (
                    f"{s['val_transcribed']['pairwise_acc_mean']:.3f} / {s['val_transcribed']['r2_mean']:.3f}"
                    if "val_transcribed" in s
                    else ""
                ),
                "worst drop %": f"{s['robustness']['worst_drop_pct']:.1f}" if "robustness" in s else "",
                "veto": ("" if s["robustness"]["passed"] else "vetoed") if "robustness" in s else "",
            }
        )
    columns = ["model", "pairwise acc [95% CI]", "R² [95% CI]"]
    if comparison["best_baseline"]:
        columns.append(f"vs {comparison['best_baseline']} (pairwise / R²)")
    if any("deep_adds" in s for s in summary.values()):
        columns.append("deep adds (pairwise / R²)")
    columns += ["params", "train time (s)", "role"]
    if any("val_transcribed" in s for s in summary.values()):
        columns.append("transcribed acc / R²")
    if any("robustness" in s for s in summary.values()):
        columns += ["worst drop %", "veto"]
    boot = comparison["bootstrap"]
    head = (
        f"# {track} comparison\n\nWinner: **{winner}** ({comparison['decided_by']}; unbeaten: "
        f"{', '.join(comparison['unbeaten'])}). Rule: {WINNER_RULE}. Intervals: {boot['resamples']} paired "
        f"bootstrap resamples of the {boot['n_groups']} validation segment groups (seed {boot['seed']}).\n\n"
    )
    winner_rows = [
        {"difference": f"{d['a']} − {d['b']}", "metric": d["metric"], "mean [95% CI]": _ci(d, True),
         "excludes 0": "yes" if (d["ci95"][0] > 0 or d["ci95"][1] < 0) else ""}
        for d in comparison["differences"]
        if "winner" in d["roles"]
    ]  # fmt: skip
    tail = ""
    if winner_rows:
        tail = "\nThe winner against every other model:\n\n" + format_comparison_table(
            winner_rows, ["difference", "metric", "mean [95% CI]", "excludes 0"]
        )
    return head + format_comparison_table(rows, columns) + "\n" + tail + "\n"


def plot_differences(comparison: dict[str, Any], out: Path, title: str) -> None:
    """A forest plot of the differences with their 95 % intervals: the winner against each model, each
    model against the best baseline, what each deep part adds (PNG, atomic)."""
    plt = _pyplot()

    colors = {"winner": "tab:blue", "vs_best_baseline": "tab:gray", "deep_adds": "tab:green"}
    shown = [d for d in comparison["differences"] if set(d["roles"]) & set(colors)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.2 + 0.32 * max(1, len(shown) // 2)), sharey=True)
    for metric, ax in zip(METRICS, axes, strict=True):
        rows = [d for d in shown if d["metric"] == metric]
        for y, d in enumerate(rows):
            role = next(r for r in colors if r in d["roles"])
            low, high = d["ci95"]
            ax.plot([low, high], [y, y], color=colors[role], lw=2)
            ax.plot([d["mean"]], [y], "o", color=colors[role], ms=4)
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), [f"{d['a']} − {d['b']}" for d in rows], fontsize=7)
        ax.set_xlabel("difference in " + ("pairwise accuracy" if metric == "pairwise_acc" else "R²"))
        ax.invert_yaxis()
    handles = [plt.Line2D([], [], color=c, lw=2, label=r.replace("_", " ")) for r, c in colors.items()]
    axes[1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle(f"{title} (95% paired bootstrap intervals)")
    fig.tight_layout()
    _save(fig, out)


def plot_per_dimension(summary: dict[str, dict[str, Any]], out: Path, title: str) -> None:
    """Grouped horizontal bars: per-dimension pairwise accuracy of each model (PNG, atomic)."""
    plt = _pyplot()

    models = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(14, 8), sharey=True)
    y = np.arange(len(DIMENSIONS))
    height = 0.8 / max(1, len(models))
    for metric, ax in zip(METRICS, axes, strict=True):
        for k, model in enumerate(models):
            vals = [np.nan_to_num(summary[model]["per_dimension"][d][metric], nan=0.0) for d in DIMENSIONS]
            ax.barh(y + k * height, vals, height=height, label=model)
        ax.axvline(0.5 if metric == "pairwise_acc" else 0.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("within-piece pairwise accuracy" if metric == "pairwise_acc" else "R²")
    axes[0].set_yticks(y + 0.4 - height / 2, [d.replace("_", " ") for d in DIMENSIONS], fontsize=7)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)


def plot_robustness(summary: dict[str, dict[str, Any]], out: Path, title: str) -> None:
    """Grouped bars: each model's score drop (%) per recording condition, with the veto line (PNG, atomic)."""
    plt = _pyplot()

    models = [m for m, s in summary.items() if "robustness" in s]
    names = list(summary[models[0]]["robustness"]["drop_pct"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, model in enumerate(models):
        drops = [summary[model]["robustness"]["drop_pct"][n] for n in names]
        ax.bar(np.arange(len(names)) + (k - (len(models) - 1) / 2) * width, drops, width=width, label=model)
    ax.axhline(summary[models[0]]["robustness"]["veto_drop_pct"], color="r", ls="--", label="veto threshold")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("pairwise-accuracy drop vs clean (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)
