"""Benchmark: two ways of transcribing, same files, same run: `--compare engines` (default), TransKun's exact
PyTorch path against the ONNX Runtime encoder; `--compare layouts`, TransKun's own window layout at a 10 s hop
against the default plan (`audio.transcribe.plan_windows`), both on the default engine.

Two corpora, rendered with FluidSynth (`pianoeval.audio.render`, 44.1 kHz, TransKun's rate): a
stratified PercePiano subset (`transcription_check.select_stratified`, one performance per piece and bar
length, every `--percepiano-step`-th stratum, the first `--percepiano-seconds` of each) and the first
`--asap-seconds` of `--asap-n` ASAP performances (drawn with `--asap-seed` from `asap_full`, cut with
`transcription_check.cut_performance`). Each file is transcribed both ways, in alternating order
(so a drift in the machine's load hits both), on `--threads` intra-op threads, after a warm-up that loads
the models. Per way and corpus: real-time factor (audio s / wall s, and wall / audio), note onset F1
against the source MIDI (mir_eval, onsets within 50 ms, as `pianoeval transcribe-check`), the paired F1
difference with a 95 % interval, and the speed ratio; plus load averages and the commit. JSON.

    .venv/bin/python scripts/bench_transcription.py --out bench_transcription.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_score import shared_data  # the sibling script (scripts/ is on sys.path when run)

# (baseline, candidate): each a name and the keyword arguments of `transcribe_timed`.
COMPARISONS: dict[str, tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "engines": (("torch", {"engine": "torch"}), ("onnx", {"engine": "onnx"})),
    "layouts": (("transkun_hop10", {"hop_s": 10.0}), ("plan", {})),
}
RATE = 44_100


def percepiano_files(root: Path, step: int, seconds: float | None, work: Path) -> list[dict[str, Any]]:
    """Rendered stratified PercePiano subset, each file's first `seconds`: [{"id", "midi", "wav", "seconds"}]."""
    from pianoeval.audio.render import render_midi
    from pianoeval.audio.transcription_check import select_stratified
    from pianoeval.data.percepiano import load_percepiano

    rows = select_stratified(load_percepiano(root), per_group=1).iloc[::step]
    files = []
    for row in rows.itertuples(index=False):
        wav = work / f"pp_{Path(row.midi_path).stem}.wav"
        if not wav.is_file():
            render_midi(row.midi_path, wav, sample_rate=RATE)
        files.append({"id": row.segment_id, "midi": Path(row.midi_path), "wav": wav, "seconds": seconds})
    return files


def asap_files(root: Path, n: int, seconds: float, work: Path, seed: int = 0) -> list[dict[str, Any]]:
    """The first `seconds` of `n` ASAP performances (seeded draw), cut and rendered."""
    from pianoeval.audio.render import render_midi
    from pianoeval.audio.transcription_check import cut_performance

    perfs = sorted(p for p in root.rglob("*.mid") if p.name != "midi_score.mid")
    picks = [perfs[i] for i in sorted(np.random.default_rng(seed).choice(len(perfs), size=n, replace=False))]
    files = []
    for src in picks:
        stem = "_".join(src.relative_to(root).with_suffix("").parts)
        midi = cut_performance(src, 0.0, seconds, work / f"asap_{stem}.mid")
        wav = work / f"asap_{stem}.wav"
        if not wav.is_file():
            render_midi(midi, wav, sample_rate=RATE)
        files.append({"id": str(src.relative_to(root)), "midi": midi, "wav": wav, "seconds": seconds})
    return files


def run_file(item: dict[str, Any], order: list[tuple[str, dict[str, Any]]], threads: int) -> dict[str, Any]:
    """Both ways on one file: per way wall s, audio s, windows, onset F1, note count; and the load."""
    from pianoeval.audio.io import load_audio
    from pianoeval.audio.transcribe import transcribe_timed
    from pianoeval.audio.transcription_check import crop_notes, note_scores
    from pianoeval.core.threads import torch_threads
    from pianoeval.data.midi import load_performance

    wave = load_audio(item["wav"], sample_rate=RATE)
    if item["seconds"] is not None:
        wave = wave[: round(item["seconds"] * RATE)]
    reference = crop_notes(load_performance(item["midi"]).notes, item["seconds"])
    out: dict[str, Any] = {"id": item["id"], "load_1m": round(os.getloadavg()[0], 2)}
    for name, kwargs in order:
        with torch_threads(threads):
            perf, stats = transcribe_timed(wave, sample_rate=RATE, progress=False, **kwargs)
        scores = note_scores(reference, crop_notes(perf.notes, item["seconds"]))
        out[name] = {
            "wall_s": stats["wall_s"],
            "audio_s": stats["audio_s"],
            "n_windows": stats["n_windows"],
            "onset_f1": scores["onset"]["f1"],
            "n_notes": scores["n_estimate"],
            "n_reference": scores["n_reference"],
        }
    return out


def summarise(results: list[dict[str, Any]], base: str, new: str) -> dict[str, Any]:
    """Per way: n, audio/wall totals, real-time factors, windows, mean onset F1; the paired F1 difference
    (`new` - `base`) and the speed-up."""
    out: dict[str, Any] = {"n_files": len(results)}
    for name in (base, new):
        audio = sum(r[name]["audio_s"] for r in results)
        wall = sum(r[name]["wall_s"] for r in results)
        out[name] = {
            "audio_s": round(audio, 2),
            "wall_s": round(wall, 2),
            "audio_per_wall": round(audio / wall, 3),
            "wall_per_audio": round(wall / audio, 3),
            "n_windows": int(sum(r[name]["n_windows"] for r in results)),
            "onset_f1_mean": round(float(np.mean([r[name]["onset_f1"] for r in results])), 5),
        }
    diff = [r[new]["onset_f1"] - r[base]["onset_f1"] for r in results]
    half = 1.96 * statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
    mean = float(np.mean(diff))
    out[f"onset_f1_diff_{new}_minus_{base}"] = {
        "mean": round(mean, 5),
        "ci95": [round(mean - half, 5), round(mean + half, 5)],
        "max_abs": round(float(np.max(np.abs(diff))), 5),
        "n_files_with_different_notes": sum(r[new]["n_notes"] != r[base]["n_notes"] for r in results),
    }
    out["speedup_wall"] = round(out[base]["wall_s"] / out[new]["wall_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build both corpora, transcribe every file both ways, write the JSON."""
    import torch

    from pianoeval.core.io import write_json
    from pianoeval.core.provenance import git_revision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir", default="results/benchmarks/transcription_audio", help="renderings go here")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="engines")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both ways")
    parser.add_argument("--percepiano-step", type=int, default=1, help="every n-th PercePiano stratum")
    parser.add_argument("--percepiano-seconds", type=float, default=20.0, help="first seconds of each (0: all)")
    parser.add_argument("--asap-n", type=int, default=10)
    parser.add_argument("--asap-seconds", type=float, default=30.0)
    parser.add_argument("--asap-seed", type=int, default=0, help="the draw of ASAP performances")
    args = parser.parse_args(argv)
    ways = list(COMPARISONS[args.compare])
    (base, _), (new, _) = ways
    # Both ways on the same threads: the load-based switch to one thread (threads_for_load) is off.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = shared_data()
    corpora = {
        "percepiano": percepiano_files(
            data / "percepiano", args.percepiano_step, args.percepiano_seconds or None, work
        ),
        "asap": asap_files(data / "asap_full", args.asap_n, args.asap_seconds, work, args.asap_seed),
    }
    report: dict[str, Any] = {
        "commit": git_revision(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["scripts/bench_transcription.py", *(argv if argv is not None else sys.argv[1:])]),
        "threads": args.threads,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    from pianoeval.audio.transcribe import transcribe_timed

    # Load the models (and export the ONNX graph if not cached) before any timing; noise, since windows of
    # zeros are skipped.
    noise = np.random.default_rng(0).normal(0.0, 0.1, 5 * RATE).astype(np.float32)
    for _, kwargs in ways:
        transcribe_timed(noise, sample_rate=RATE, progress=False, **kwargs)
    for name, files in corpora.items():
        results = []
        for i, item in enumerate(files):
            order = ways if i % 2 == 0 else ways[::-1]
            results.append(run_file(item, order, args.threads))
            r = results[-1]
            line = ", ".join(f"{e} {r[e]['wall_s']:.1f} s F1 {r[e]['onset_f1']:.4f}" for e in (base, new))
            print(f"{name} {r['id']}: {line}", flush=True)
        report[name] = {"summary": summarise(results, base, new), "files": results}
    report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(report, args.out)
    print({name: report[name]["summary"] for name in corpora})
    return 0


if __name__ == "__main__":
    sys.exit(main())
