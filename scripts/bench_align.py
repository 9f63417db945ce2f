"""Score alignment: ours (`alignment.align`) against parangonar's note matchers, on the same work.

Three sets of performances, each aligned to its score MIDI by every method:

- `asap`: every performance of the 8-piece ASAP subset (the `pianoeval align-check` data). Metric: the
  beat error that align-check reports (annotated performance beats against the score's beats mapped
  through the alignment), pooled over all beats, and the wall time of the alignment.
- `asap_full`: a seeded sample of performances of the other ASAP pieces (same metric).
- `asap_excerpts`: the subset's performances cut into 8-bar excerpts (at the annotated downbeats), each
  aligned to the same bars of the score: the length of a PercePiano segment, with ASAP's beats to check.
- `percepiano`: a seeded sample of PercePiano segments against their score MIDI, as
  `symbolic/score_stats.py` aligns them for every segment: wall time, the share of performance notes
  matched, and how many the score statistics would refuse (fewer matched notes than `MIN_MATCH_SHARE`).

Parangonar returns matched note pairs only; every method's pairs go through the same anchor fit
(`alignment.fit_anchors` with the last refinement pass's rejection), so only the note matching differs.
Its score note array needs beats: the score MIDI's quarter-note positions (from its ticks).

    .venv/bin/python scripts/bench_align.py --out bench_align.json
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.core.errors import InputError
from pianoeval.core.io import write_json
from pianoeval.data.midi import Performance, load_performance
from pianoeval.symbolic.alignment import (
    REFINE_PASSES,
    SCORE_ANNOTATIONS,
    Alignment,
    TimeMap,
    _pooled,
    _strict,
    align,
    check_performance,
    fit_anchors,
)

log = logging.getLogger("bench_align")
METHODS: tuple[str, ...] = ("ours", "parangonar_dualdtw", "parangonar_automatic")
SETS: tuple[str, ...] = ("asap", "asap_full", "percepiano", "asap_excerpts")


def shared_data() -> Path:
    """The shared data folder (as the tests find it): $PIANOEVAL_SHARED_DATA or ../shared/data."""
    env = os.environ.get("PIANOEVAL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def quarter_positions(score: Performance, times: np.ndarray) -> np.ndarray:
    """Quarter-note positions [N] of score-MIDI times [N] (s), from the file's tempo map."""
    import warnings

    import pretty_midi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tempo events on non-zero tracks (many score MIDIs)
        pm = pretty_midi.PrettyMIDI(str(score.path))
    return np.array([pm.time_to_tick(float(t)) for t in times]) / pm.resolution


def note_array(perf: Performance, score: bool) -> np.ndarray:
    """A partitura-style structured note array of a Performance; ids `n<index>` so pairs map back."""
    fields = [("onset_sec", "f4"), ("duration_sec", "f4"), ("pitch", "i4"), ("velocity", "i4"), ("id", "U16")]
    if score:
        fields += [("onset_beat", "f4"), ("duration_beat", "f4"), ("is_grace", "b")]
    out = np.zeros(len(perf.notes), dtype=fields)
    on, off = perf.notes[:, 0], perf.notes[:, 1]
    out["onset_sec"], out["duration_sec"] = on, off - on
    out["pitch"], out["velocity"] = perf.notes[:, 2], perf.notes[:, 3]
    out["id"] = [f"n{i}" for i in range(len(on))]
    if score:
        q_on, q_off = quarter_positions(perf, on), quarter_positions(perf, off)
        out["onset_beat"], out["duration_beat"] = q_on, q_off - q_on
    return out


def parangonar_aligner(name: str) -> Callable[[Performance, Performance], Alignment]:
    """`align`'s signature on a parangonar matcher: its matched pairs, then our anchor fit and time map."""
    import parangonar

    matcher = {"dualdtw": parangonar.DualDTWNoteMatcher, "automatic": parangonar.AutomaticNoteMatcher}[name]()

    def run(score: Performance, perf: Performance) -> Alignment:
        found = matcher(note_array(score, True), note_array(perf, False))
        pairs = np.array(
            [(int(m["score_id"][1:]), int(m["performance_id"][1:])) for m in found if m["label"] == "match"],
            dtype=np.int64,
        ).reshape(-1, 2)
        if len(pairs) < 2:
            raise InputError("parangonar matched fewer than two notes", perf.path)
        xp, fp = _strict(*fit_anchors(score, perf, pairs, REFINE_PASSES[-1][1]))
        return Alignment(
            TimeMap(xp, fp), pairs, len(pairs) / len(perf.notes), len(pairs) / len(score.notes), np.nan, np.nan
        )

    return run


def aligners(methods: list[str]) -> dict[str, Callable[[Performance, Performance], Alignment]]:
    """The methods to compare, by name."""
    return {m: align if m == "ours" else parangonar_aligner(m.removeprefix("parangonar_")) for m in methods}


def asap_performances(root: Path, sample: int | None, exclude: set[str], seed: int) -> list[tuple[str, Path]]:
    """(piece folder, performance MIDI) of ASAP under `root` with a score MIDI; a seeded sample if asked."""
    from pianoeval.data.asap import load_asap

    rows = load_asap(root)
    rows = rows[rows["score_midi_path"].map(lambda p: isinstance(p, str)) & ~rows["piece_id"].isin(exclude)]
    items = sorted((str(r.piece_id), Path(r.midi_path)) for r in rows.itertuples())
    if sample is not None and sample < len(items):
        pick = np.random.default_rng(seed).choice(len(items), size=sample, replace=False)
        items = [items[i] for i in sorted(pick)]
    return items


def run_asap(root: Path, items: list[tuple[str, Path]], methods: dict[str, Callable[..., Alignment]]) -> dict:
    """Beat error (align-check's metric) and wall time of every method on the ASAP performances `items`."""
    from pianoeval.data.asap import load_beat_annotations

    checks: dict[str, list[Any]] = {m: [] for m in methods}
    rows: list[dict[str, Any]] = []
    for piece, perf_path in items:
        score = load_performance(root / piece / "midi_score.mid")
        beats, labels = load_beat_annotations(root / piece / SCORE_ANNOTATIONS)
        downbeat = np.array([lab.split(",")[0] == "db" for lab in labels])
        ann = perf_path.with_name(f"{perf_path.stem}_annotations.txt")
        row: dict[str, Any] = {"piece": piece, "performance": perf_path.stem, "n_score_notes": len(score.notes)}
        for name, fn in methods.items():
            try:
                entry = check_performance(score, beats, perf_path, ann, downbeat, aligner=fn)
            except InputError as exc:
                row[name] = {"error": str(exc)}
                continue
            except Exception as exc:  # a library failing on one piece is a result, not a crash
                row[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            m = entry["metrics"]
            checks[name].append(entry["check"])
            row[name] = {k: m[k] for k in ("median_abs_error_ms", "mean_abs_error_ms", "within_50ms", "wall_s")}
            row[name]["perf_match_rate"] = m["perf_match_rate"]
            row["n_notes"] = m["n_notes"]
        log.info("%s/%s: %s", piece, perf_path.stem, {k: v for k, v in row.items() if k in methods})
        rows.append(row)
    summary = {}
    for name in methods:
        ok = [r[name] for r in rows if "error" not in r[name]]
        summary[name] = {
            **(_pooled(checks[name]) if checks[name] else {}),
            "n_aligned": len(ok),
            "n_failed": len(rows) - len(ok),
            "wall_s_total": float(sum(r["wall_s"] for r in ok)),
            "wall_s_max": float(max((r["wall_s"] for r in ok), default=0.0)),
        }
    return {"summary": summary, "performances": rows}


def excerpt(perf: Performance, start: float, end: float) -> Performance:
    """The notes of `perf` with onsets in [start, end) (times unchanged, path kept for the tempo map)."""
    keep = (perf.onsets >= start) & (perf.onsets < end)
    return Performance(perf.notes[keep], path=perf.path)


def run_excerpts(
    root: Path, items: list[tuple[str, Path]], methods: dict[str, Callable[..., Alignment]], bars: int
) -> dict:
    """Beat error on `bars`-bar excerpts of the ASAP performances aligned to the same bars of the score
    (the length of a PercePiano segment, as score_stats aligns them): pooled over the excerpts' beats."""
    from pianoeval.data.asap import load_beat_annotations

    errors: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    walls: dict[str, list[float]] = {m: [] for m in methods}
    failed = dict.fromkeys(methods, 0)
    n_excerpts = 0
    for piece, perf_path in items:
        score = load_performance(root / piece / "midi_score.mid")
        beats, labels = load_beat_annotations(root / piece / SCORE_ANNOTATIONS)
        true, _ = load_beat_annotations(perf_path.with_name(f"{perf_path.stem}_annotations.txt"))
        if len(true) != len(beats):
            continue  # repeats played differently: beats cannot be paired (align-check excludes them too)
        perf = load_performance(perf_path)
        bar_starts = np.flatnonzero([lab.split(",")[0] == "db" for lab in labels])[::bars]
        for a, b in itertools.pairwise(bar_starts):
            # Cut a little before each performed downbeat: a chord's notes spread around it.
            s_cut = excerpt(score, beats[a] - 0.01, beats[b] - 0.01)
            p_cut = excerpt(perf, true[a] - 0.05, true[b] - 0.05)
            if len(s_cut.notes) < 4 or len(p_cut.notes) < 4:
                continue
            n_excerpts += 1
            for name, fn in methods.items():
                start = time.perf_counter()
                try:
                    result = fn(s_cut, p_cut)
                except Exception:  # counted: score_stats would score this segment without its score
                    failed[name] += 1
                    continue
                walls[name].append(time.perf_counter() - start)
                errors[name].append(np.abs(result.beat_times(beats[a:b]) - true[a:b]) * 1000.0)
        log.info("excerpts of %s/%s done", piece, perf_path.stem)
    summary = {}
    for name in methods:
        err = np.concatenate(errors[name]) if errors[name] else np.zeros(0)
        summary[name] = {
            "n_excerpts": n_excerpts,
            "n_failed": failed[name],
            "n_beats": len(err),
            "mean_abs_error_ms": float(err.mean()) if len(err) else None,
            "p90_abs_error_ms": float(np.percentile(err, 90)) if len(err) else None,
            "within_50ms": float(np.mean(err <= 50)) if len(err) else None,
            "within_100ms": float(np.mean(err <= 100)) if len(err) else None,
            "wall_s_mean": float(np.mean(walls[name])) if walls[name] else None,
        }
    return {"bars": bars, "summary": summary}


def run_percepiano(root: Path, sample: int, seed: int, methods: dict[str, Callable[..., Alignment]]) -> dict:
    """Wall time, match rate and refusals of every method on a seeded sample of PercePiano segments."""
    import pandas as pd

    from pianoeval.symbolic.score_stats import MIN_MATCH_SHARE

    index = pd.read_csv(root / "index.csv")
    index = index[~index["performer"].astype(str).str.startswith("Score")]  # deadpan renditions: trivial
    picked = index.iloc[np.sort(np.random.default_rng(seed).choice(len(index), size=sample, replace=False))]
    out: dict[str, dict[str, list[float]]] = {m: {"wall_s": [], "match": [], "refused": []} for m in methods}
    for row in picked.itertuples():
        perf, score = load_performance(root / row.midi), load_performance(root / row.score_midi)
        for name, fn in methods.items():
            start = time.perf_counter()
            try:
                result = fn(score, perf)
                wall, n_pairs, match = time.perf_counter() - start, len(result.pairs), result.perf_match_rate
            except Exception as exc:  # counted as refused, as score_stats would skip the score part
                log.warning("%s %s: %s", name, row.id, exc)
                wall, n_pairs, match = time.perf_counter() - start, 0, 0.0
            out[name]["wall_s"].append(wall)
            out[name]["match"].append(match)
            refused = n_pairs < max(3, MIN_MATCH_SHARE * min(len(score.notes), len(perf.notes)))
            out[name]["refused"].append(float(refused))
    summary = {}
    for name, v in out.items():
        wall = np.array(v["wall_s"])
        summary[name] = {
            "n_segments": len(wall),
            "wall_s_mean": float(wall.mean()),
            "wall_s_median": float(np.median(wall)),
            "wall_s_p90": float(np.percentile(wall, 90)),
            "perf_match_rate_mean": float(np.mean(v["match"])),
            "refused_share": float(np.mean(v["refused"])),
        }
    return {"summary": summary, "segments": list(picked["id"])}


def machine() -> dict[str, Any]:
    """Load averages, CPU count, platform, commit and library versions, to print beside the figures."""
    from importlib.metadata import version

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    return {
        "loadavg": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "commit": rev + ("+dirty" if dirty else ""),
        "versions": {p: version(p) for p in ("parangonar", "partitura", "numpy")},
    }


def main() -> None:
    """Run the comparison and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--asap-full-sample", type=int, default=12, help="ASAP performances outside the subset")
    parser.add_argument(
        "--full-methods",
        nargs="+",
        default=["ours", "parangonar_dualdtw"],
        choices=METHODS,
        help="methods on the asap_full sample (parangonar_automatic takes minutes per long movement)",
    )
    parser.add_argument("--percepiano-sample", type=int, default=120, help="PercePiano segments")
    parser.add_argument("--excerpt-bars", type=int, default=8, help="bars per ASAP excerpt (PercePiano: 4-16)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("parangonar").setLevel(logging.ERROR)
    fns = aligners(args.methods)
    report: dict[str, Any] = {"command": "scripts/bench_align.py", "args": {k: str(v) for k, v in vars(args).items()}}
    report["machine_before"] = machine()
    start = time.perf_counter()
    subset = asap_performances(args.data / "asap", None, set(), args.seed)
    if "asap" in args.sets:
        report["asap"] = run_asap(args.data / "asap", subset, fns)
    if "asap_excerpts" in args.sets:
        report["asap_excerpts"] = run_excerpts(args.data / "asap", subset, fns, args.excerpt_bars)
    if "asap_full" in args.sets and args.asap_full_sample:
        pieces = {piece for piece, _ in subset}
        full = asap_performances(args.data / "asap_full", args.asap_full_sample, pieces, args.seed)
        full_fns = {m: fn for m, fn in fns.items() if m in args.full_methods}
        report["asap_full"] = run_asap(args.data / "asap_full", full, full_fns)
    if "percepiano" in args.sets and args.percepiano_sample:
        report["percepiano"] = run_percepiano(args.data / "percepiano", args.percepiano_sample, args.seed, fns)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["machine_after"] = machine()
    write_json(report, args.out)


if __name__ == "__main__":
    main()
