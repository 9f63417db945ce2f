"""One self-contained HTML page gathering the comparison tables, plots and the final winner."""

from __future__ import annotations

import base64
import html
from pathlib import Path


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
