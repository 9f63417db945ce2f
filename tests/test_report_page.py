"""results/report/index.html opens with the winners: a table of the fusion and both track winners."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pianoeval.core.layout import Results
from pianoeval.steps.report import run_report


def _figure(mean: float) -> dict[str, object]:
    return {"mean": mean, "ci95": [mean - 0.01, mean + 0.01]}


WINNER = {
    "winner": "f2",
    "decided_by": "significant",
    "pairwise_acc": _figure(0.71),
    "r2": _figure(0.2),
    "n_parameters": 12345,
    "single_track_winners": {
        "symbolic": {"model": "s3", "decided_by": "tie_cheapest", "pairwise_acc": _figure(0.66), "r2": _figure(0.1)},
        "audio": {"model": "a1", "decided_by": "only_candidate", "pairwise_acc": _figure(0.64), "r2": _figure(0.05)},
    },
    "gain_over_best_single_track": {"best_single_track": "symbolic/s3", "pairwise_acc": _figure(0.05)},
    "robustness": {"passed": False, "worst_drop_pct": 17.25, "veto_drop_pct": 15.0},
}


def test_the_page_opens_with_the_winners_table(tmp_path: Path) -> None:
    layout = Results(tmp_path / "results")
    layout.final_winner.parent.mkdir(parents=True)
    layout.final_winner.write_text(json.dumps(WINNER))
    (layout.compare("symbolic")).mkdir(parents=True)
    (layout.compare("symbolic") / "comparison.md").write_text("# symbolic comparison\n\n| model |\n|---|\n| s3 |\n")
    page = run_report(layout.root, tmp_path / "index.html").read_text()
    body = page.split("<body>", 1)[1]
    # The first thing after the title is the winners' table, before any comparison.
    assert body.index("<h2>Winners</h2>") < body.index("symbolic comparison")
    table = body[body.index("<table>") : body.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    cells = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in rows]
    assert cells[0][:4] == ["track", "winner", "decided by", "pairwise acc [95% CI]"]
    assert [c[:3] for c in cells[1:]] == [
        ["fusion (final)", "f2", "significant"],
        ["symbolic", "s3", "tie_cheapest"],
        ["audio", "a1", "only_candidate"],
    ]
    assert cells[1][3] == "0.710 [0.700, 0.720]" and cells[1][5] == "12,345"
    assert "Fusion gain over the best single track (symbolic/s3): pairwise_acc +0.050 [+0.040, +0.060]" in body
    assert "Robustness: FAILED (worst drop 17.2% against a veto at 15%)" in body
    # winner.json is still there in full, folded away at the end.
    assert body.rindex("<details>") > body.index("symbolic comparison") and "&quot;winner&quot;: &quot;f2&quot;" in body


def test_a_page_without_a_winner_has_no_winners_table(tmp_path: Path) -> None:
    page = run_report(tmp_path / "results", tmp_path / "index.html").read_text()
    assert "<h1>pianoeval results</h1>" in page and "Winners" not in page
