"""Benchmark: TransKun on short renderings, one window against the 10 s hop; and what a transcription does
to velocities.

For every `--step`-th rendering of a rendered manifest (the demo's 8-10 s recordings by default), on one
thread: note F1 (onsets within 50 ms) and wall time with the default hop (one window for a recording well
inside TransKun's window, `audio.transcribe.plan_windows`) and with the 10 s hop; and the mean MIDI velocity
of the source performance against its transcription (rendered audio is peak-normalised, so the level
that velocity sets is gone). Writes JSON.

    .venv/bin/python scripts/bench_transcribe_short.py --manifest results/render/manifest.parquet \\
        --out results/benchmarks/transcribe_short.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pianoeval.audio.io import load_audio
from pianoeval.audio.transcribe import TRANSKUN_HOP_S, transcribe_timed
from pianoeval.audio.transcription_check import note_scores
from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.io import write_json
from pianoeval.core.threads import torch_threads
from pianoeval.data.manifest import read_manifest
from pianoeval.data.midi import load_performance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="results/render/manifest.parquet")
    parser.add_argument("--step", type=int, default=6, help="every step-th rendering")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    df = read_manifest(args.manifest)
    rows = df[df["audio_path"].notna()].iloc[:: args.step]
    runs: dict[str, dict[str, list[float]]] = {"default": {"f1": [], "wall_s": []}, "hop_10s": {"f1": [], "wall_s": []}}
    velocity = {"source": [], "transcription": []}
    for row in rows.itertuples(index=False):
        wave = load_audio(row.audio_path, SAMPLE_RATE)
        reference = load_performance(row.midi_path).notes
        for name, hop in (("default", None), ("hop_10s", TRANSKUN_HOP_S)):
            start = time.perf_counter()
            with torch_threads(1):
                perf, _ = transcribe_timed(wave, sample_rate=SAMPLE_RATE, hop_s=hop, progress=False)
            runs[name]["wall_s"].append(time.perf_counter() - start)
            runs[name]["f1"].append(note_scores(reference, perf.notes)["onset"]["f1"])
            if name == "default":
                velocity["source"].append(float(reference[:, 3].mean()))
                velocity["transcription"].append(float(perf.notes[:, 3].mean()) if len(perf.notes) else float("nan"))
    result = {
        "n_recordings": len(rows),
        "audio_s": [float(len(load_audio(p, SAMPLE_RATE)) / SAMPLE_RATE) for p in rows["audio_path"]],
        **{
            name: {"note_f1_mean": float(np.mean(r["f1"])), "wall_s_total": float(np.sum(r["wall_s"])), **r}
            for name, r in runs.items()
        },
        "velocity_mean_range": {k: [float(np.nanmin(v)), float(np.nanmax(v))] for k, v in velocity.items()},
        "velocity_mean": velocity,
    }
    write_json(result, args.out)
    print({k: v for k, v in result.items() if k not in ("velocity_mean", "default", "hop_10s", "audio_s")})
    print({name: (result[name]["note_f1_mean"], result[name]["wall_s_total"]) for name in runs})


if __name__ == "__main__":
    main()
