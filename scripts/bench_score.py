"""Benchmark `pianoeval score` end to end: a 29.5 s MIDI and 30 s of rendered audio, timed as a user runs it.

Each run is a fresh `pianoeval score` process (so imports count), timed from process start to the JSON
being written. The clips are cut from ASAP performances and rendered with FluidSynth (FluidR3 GM,
44.1 kHz), cut to exactly `--audio-seconds`. For audio, the transcription is compared with the MIDI the
audio was rendered from: note F1 with `mir_eval` (onsets within 50 ms, offsets ignored). Output: JSON
with per-run wall and CPU seconds, the phases `run_score` reports (`timings_s`), the time before
`run_score` starts (interpreter start and imports), load averages and the machine.

    .venv/bin/python scripts/bench_score.py --results results --out bench_score.json

`--f1-only` transcribes the clips without scoring (the note F1 of every clip, no model needed).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# (ASAP performance, start s): the first is the clip of docs/scoring.md; the others add piano textures
# (Chopin étude runs, Beethoven chords, Schubert triplets) for the F1 check.
CLIPS: tuple[tuple[str, float], ...] = (
    ("Bach/Prelude/bwv_848/Denisova06M.mid", 0.0),
    ("Chopin/Etudes_op_10/4/BLINOV03.mid", 10.0),
    ("Beethoven/Piano_Sonatas/23-1/Guo03M.mid", 20.0),
    ("Schubert/Impromptu_op.90_D.899/2/Denisova11M.mid", 5.0),
)
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RENDER_RATE = 44_100


def shared_data() -> Path:
    """The shared data folder (as the tests find it): $PIANOEVAL_SHARED_DATA or ../shared/data."""
    env = os.environ.get("PIANOEVAL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def render(midi: Path, seconds: float, dst: Path) -> Path:
    """FluidSynth rendering of `midi` at 44.1 kHz, cut (or padded) to exactly `seconds`."""
    import soundfile as sf

    raw = dst.with_suffix(".full.wav")
    cmd = ["fluidsynth", "-ni", "-F", str(raw), "-r", str(RENDER_RATE), str(SOUNDFONT), str(midi)]
    subprocess.run(cmd, check=True, capture_output=True)
    audio, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    n = round(seconds * rate)
    audio = np.pad(audio[:n], ((0, max(0, n - len(audio))), (0, 0)))
    sf.write(str(dst), audio, rate, subtype="PCM_16")
    raw.unlink()
    return dst


def note_f1(reference: Path, estimate: Path) -> dict[str, float]:
    """Note precision, recall and F1 of `estimate` against `reference` (onsets within 50 ms, offsets ignored)."""
    import mir_eval

    from pianoeval.data.midi import load_performance

    ref, est = load_performance(reference).notes, load_performance(estimate).notes
    p, r, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref[:, :2],
        mir_eval.util.midi_to_hz(ref[:, 2]),
        est[:, :2],
        mir_eval.util.midi_to_hz(est[:, 2]),
        onset_tolerance=0.05,
        offset_ratio=None,
    )
    return {"precision": p, "recall": r, "f1": f1, "n_reference": len(ref), "n_estimate": len(est)}


def score_command() -> list[str]:
    """The `pianoeval` console script beside this interpreter (as a user runs it), else `python -m`."""
    script = Path(sys.executable).with_name("pianoeval")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pianoeval.cli"]


def run_once(recording: Path, results: Path, out: Path) -> dict[str, Any]:
    """One `pianoeval score` process: wall and CPU seconds, the JSON's timings and the load average."""
    import json

    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [*score_command(), "score", str(recording), "--results", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"pianoeval score failed on {recording}:\n{proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    run = {
        "wall_s": round(wall, 2),
        "cpu_user_s": round(after.ru_utime - before.ru_utime, 2),
        "cpu_sys_s": round(after.ru_stime - before.ru_stime, 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024),
        # Interpreter start and imports: everything before run_score's own clock starts.
        "startup_s": round(wall - result["wall_s"], 2),
        "run_score_s": result["wall_s"],
        "timings_s": result.get("timings_s", {}),  # absent before the phases were timed
        "load_avg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    if result["transcription"]:
        run["transcription_rtf"] = round(result["transcription"]["real_time_factor"], 3)
        run["n_notes"] = result["transcription"]["n_notes"]
    return run


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each timing over the runs (and of each phase)."""
    keys = ("wall_s", "cpu_user_s", "startup_s", "run_score_s")
    out: dict[str, Any] = {f"median_{k}": round(statistics.median(r[k] for r in runs), 2) for k in keys}
    phases = runs[0]["timings_s"]
    out["median_timings_s"] = {k: round(statistics.median(r["timings_s"][k] for r in runs), 3) for k in phases}
    out["runs"] = runs
    return out


def machine() -> dict[str, Any]:
    """CPU model, core count, torch version and threads, thread environment variables."""
    import torch

    cpu = platform.processor() or ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the clips, time the runs, write the JSON."""
    from pianoeval.audio.transcription_check import cut_performance
    from pianoeval.core.io import write_json
    from pianoeval.core.layout import Results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="the results folder whose final winner scores")
    parser.add_argument("--out", default="bench_score.json")
    parser.add_argument("--repeats", type=int, default=3, help="runs per input (medians are reported)")
    parser.add_argument("--audio-seconds", type=float, default=30.0)
    parser.add_argument("--f1-clips", type=int, default=len(CLIPS), help="clips whose transcription F1 is measured")
    parser.add_argument("--f1-only", action="store_true", help="only transcribe the clips and report F1")
    parser.add_argument("--asap-root", default=None, help="ASAP folder (default: the shared data's asap/)")
    parser.add_argument("--workdir", default=None, help="where clips and outputs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        raise SystemExit("needs fluidsynth and the FluidR3 GM soundfont (scripts/bootstrap.sh installs them)")
    asap = Path(args.asap_root) if args.asap_root else shared_data() / "asap"
    results = Path(args.results)
    if not args.f1_only and not Results(results).final_winner.is_file():
        raise SystemExit(f"{Results(results).final_winner}: not found; run the pipeline or pass --results")
    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        (work / "out").mkdir(parents=True, exist_ok=True)
        clips = []
        for i, (rel, start) in enumerate(CLIPS[: max(1, args.f1_clips)]):
            midi = cut_performance(asap / rel, start, args.audio_seconds, work / f"clip{i}.mid")
            clips.append(
                {
                    "source": rel,
                    "start_s": start,
                    "midi": midi,
                    "wav": render(midi, args.audio_seconds, work / f"clip{i}.wav"),
                }
            )
        report: dict[str, Any] = {
            "machine": machine(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "results": str(results),
            "audio_seconds": args.audio_seconds,
        }
        report["clips"] = [{"source": c["source"], "start_s": c["start_s"]} for c in clips]
        if not args.f1_only:
            midi_runs = [
                run_once(clips[0]["midi"], results, work / "out" / f"midi{r}.json") for r in range(args.repeats)
            ]
            report["midi"] = summarise(midi_runs)
            audio_runs = [
                run_once(clips[0]["wav"], results, work / "out" / f"audio{r}.json") for r in range(args.repeats)
            ]
            report["audio"] = summarise(audio_runs)
            transcription = work / "out" / "audio0.transcription.mid"
            report["audio"]["f1"] = note_f1(clips[0]["midi"], transcription)
        from pianoeval.audio.transcribe import transcribe_timed
        from pianoeval.data.midi import write_performance

        f1 = []
        for c in clips if args.f1_only else clips[1:]:  # clip 0 was transcribed by the scoring runs
            perf, stats = transcribe_timed(c["wav"], progress=False)
            est = write_performance(perf, c["wav"].with_suffix(".transcription.mid"))
            f1.append({"source": c["source"], **note_f1(c["midi"], est), "real_time_factor": stats["real_time_factor"]})
        if not args.f1_only:
            f1.insert(0, {"source": clips[0]["source"], **report["audio"]["f1"]})
        report["f1"] = f1
        report["f1_mean"] = round(float(np.mean([x["f1"] for x in f1])), 4) if f1 else None
        report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
