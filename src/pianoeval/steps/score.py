"""`pianoeval score`: 19 perceptual scores for one recording (audio or MIDI), from the trained fold ensemble.

MIDI is scored directly. Audio (WAV/FLAC/MP3/OGG) is checked (readable, not silent, clipped or NaN,
2-600 s long), transcribed to MIDI with TransKun, and the transcription is scored the same way. Scores
come from every fold model of the symbolic track winner: the mean is the score, the std across fold
models the uncertainty. Beside `--out` (JSON) go a PNG, a self-contained HTML report and, for audio, the
transcription MIDI. Nothing is written until everything has been computed; each file is written atomically
and the JSON last, so its presence means the set is complete.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.constants import DIMENSIONS, LABEL_MAX, LABEL_MIN
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg"}
MIDI_SUFFIXES = {".mid", ".midi"}
# Inputs shorter than this carry too little music to judge; longer ones are cut into segments
# by the user for now (PercePiano segments are 4-16 bars).
MIN_SECONDS, MAX_SECONDS = 2.0, 600.0
# TransKun 2.0's input rate: reading the file straight at this rate avoids a round trip through the
# project's 24 kHz, which would drop the partials above 12 kHz that the model was trained with.
TRANSCRIPTION_SAMPLE_RATE: int = 44_100
# Suffix of the transcription MIDI written beside the output JSON (not `.mid` alone, which could be the
# user's own score file, e.g. `score.mid` beside the default `score.json`).
TRANSCRIPTION_SUFFIX = ".transcription.mid"


def _fold_dirs(results: Path, track: str, model: str) -> list[Path]:
    """The trained fold folders of a model, in fold order."""
    dirs = sorted((results / "train" / track / model).glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if not dirs:
        raise InputError(f"no trained folds of {track}/{model}; run the pipeline first", results / "train")
    return dirs


def symbolic_winner(results: Path) -> tuple[str, list[Path]]:
    """The symbolic winner's name and fold folders; InputError (before any slow work) if either is missing."""
    winner = read_json(results / "compare" / "symbolic" / "winner.json")
    return winner["model"], _fold_dirs(results, "symbolic", winner["model"])


def check_duration(seconds: float, path: Path, what: str) -> None:
    """InputError unless MIN_SECONDS <= seconds <= MAX_SECONDS."""
    if seconds < MIN_SECONDS:
        raise InputError(f"{what} lasts {seconds:.1f} s; scoring needs at least {MIN_SECONDS:g} s of music", path)
    if seconds > MAX_SECONDS:
        raise InputError(
            f"{what} lasts {seconds:.1f} s, more than the {MAX_SECONDS:g} s limit; cut it into shorter parts", path
        )


def score_midi(
    midi: Path, results: Path, check_length: bool = True, score: Path | None = None, transcribed: bool = False
) -> dict[str, Any]:
    """Scores of a MIDI performance: mean [19] and std [19] over the symbolic winner's fold models.

    `score`, the score MIDI the performance plays, gives the score-relative statistics of the wide &
    deep encoders (`symbolic/score_stats.py`); `score_aligned` says whether they were used (False:
    no score, or one that could not be aligned, with a warning; the models then predict as trained
    for unscored input, `symbolic.score_dropout`). Also returns `timings_s` ({"models", "featurize",
    "forward"}, seconds). `transcribed`: the MIDI is TransKun's transcription of a recording (models
    trained with transcription views read it as such: side_input.WithStatistics). The fold models
    are loaded as plain networks (`pianoeval.evaluation.inference`), without
    Lightning; folds with the same config share one validated config and one feature item.
    """
    import json

    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.core.threads import torch_threads
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.data.midi import load_performance
    from pianoeval.evaluation.inference import load_scoring_network
    from pianoeval.symbolic.featurize import featurize_file
    from pianoeval.symbolic.stats import SCORE_COLUMNS
    from pianoeval.training.registry import FEATURE_KIND

    perf = load_performance(midi)
    if check_length:
        check_duration(perf.duration, midi, "performance")
    model, fold_dirs = symbolic_winner(results)
    timings = {"models": 0.0, "featurize": 0.0, "forward": 0.0}
    configs: dict[str, dict[str, Any]] = {}
    batches: dict[str, dict[str, Any]] = {}
    preds = []
    # Small networks built, loaded and run on one performance: many small ops, faster on one thread
    # (pianoeval.core.threads).
    with torch_threads(1):
        for fold_dir in fold_dirs:
            tick = time.perf_counter()
            text = (fold_dir / "config.yaml").read_text()
            if text not in configs:
                configs[text] = validate_config(yaml.safe_load(text), fold_dir / "config.yaml")
            config = configs[text]
            net = load_scoring_network(fold_dir, config)
            kind = FEATURE_KIND[read_json(fold_dir / "model_spec.json")["model"]]
            timings["models"] += time.perf_counter() - tick
            tick = time.perf_counter()
            key = json.dumps([kind, config["features"]], sort_keys=True)
            if key not in batches:
                item = featurize_file(kind, str(midi), config["features"], str(score) if score else None)
                item["transcribed"] = torch.tensor(float(transcribed))
                batches[key] = multi_task_collate_fn([item])
            timings["featurize"] += time.perf_counter() - tick
            tick = time.perf_counter()
            with torch.inference_mode():
                preds.append(net(batches[key])[0].numpy())  # the batch's only item: [19]
            timings["forward"] += time.perf_counter() - tick
    stack = np.stack(preds)  # [folds, 19]
    # The statistics' last score column is the "aligned to a score" flag (symbolic/stats.py).
    flags = [float(b["stats"][0, SCORE_COLUMNS.stop - 1]) > 0.5 for b in batches.values() if "stats" in b]
    return {
        "model": model,
        "mean": stack.mean(axis=0),
        "std": stack.std(axis=0),
        "n_models": len(preds),
        "score_aligned": bool(flags) and all(flags),
        "timings_s": timings,
    }


def transcribe_recording(path: Path, device: str = "cpu") -> tuple[Any, dict[str, float]]:
    """Check an audio file and transcribe it: (Performance, timing {audio_s, wall_s, ...}); InputError if unusable."""
    from pianoeval.audio.io import load_audio
    from pianoeval.audio.transcribe import transcribe_timed

    # load_audio refuses unreadable, empty, NaN, clipped and silent audio, and (before resampling)
    # anything over the length limit.
    wave = load_audio(path, sample_rate=TRANSCRIPTION_SAMPLE_RATE, max_seconds=MAX_SECONDS)
    check_duration(wave.size / TRANSCRIPTION_SAMPLE_RATE, path, "audio")
    perf, stats = transcribe_timed(wave, sample_rate=TRANSCRIPTION_SAMPLE_RATE, device=device)
    if len(perf.notes) == 0:
        raise InputError("no piano notes were found in the recording; is it a piano recording?", path)
    perf.path = str(path)
    return perf, stats


def training_distribution(results: Path, model: str) -> np.ndarray:
    """Labels [N, 19] of the labelled corpus (every segment once: fold 0's train, dev and val rows)."""
    import csv

    path = results / "train" / "symbolic" / model / "fold_0" / "predictions.csv"
    if not path.is_file():
        raise InputError("training predictions not found; rerun the training rule of fold 0", path)
    # The csv module, not pandas: a few hundred rows, and pandas would add a second to every score.
    columns = [f"label_{d}" for d in DIMENSIONS]
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return np.array([[float(row[c]) for c in columns] for row in rows], dtype=np.float64).reshape(-1, len(columns))
    except (KeyError, ValueError) as exc:
        raise InputError(f"unreadable label column ({exc}); rerun the training rule of fold 0", path) from exc


def percentiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Percentile [19] (0-100) of each value [19] within its column of reference [N, 19]; ties count half."""
    below = (reference < values[None, :]).mean(axis=0)
    equal = (reference == values[None, :]).mean(axis=0)
    return 100.0 * (below + 0.5 * equal)


def plot_report(scores: dict[str, Any], reference: np.ndarray, title: str) -> bytes:
    """PNG bytes: per-dimension scores (with fold spread) over the training label 10-90% range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.arange(len(DIMENSIONS))
    fig, ax = plt.subplots(figsize=(9, 8))
    lo, hi = np.percentile(reference, 10, axis=0), np.percentile(reference, 90, axis=0)
    ax.barh(y, hi - lo, left=lo, color="0.85", label="training 10-90%")
    ax.errorbar(scores["mean"], y, xerr=scores["std"], fmt="o", color="C0", label="this performance (± fold spread)")
    ax.set_yticks(y, [d.replace("_", " ") for d in DIMENSIONS], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(LABEL_MIN, LABEL_MAX)
    ax.set_xlabel("score (rating / 7)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_html(result: dict[str, Any], png: bytes) -> str:
    """A self-contained HTML page: summary, the PNG (base64) and the table of the 19 scores."""
    esc = html.escape
    rows = []
    for name, d in result["dimensions"].items():
        rows.append(
            f"<tr><td>{esc(name.replace('_', ' '))}</td><td>{d['score']:.3f}</td><td>{7 * d['score']:.2f}</td>"
            f"<td>± {d['uncertainty']:.3f}</td><td>{d['percentile']:.0f}</td></tr>"
        )
    facts = [
        ("Input", result["input"]),
        ("Model", f"{result['model']} (symbolic track winner, {result['n_fold_models']} fold models)"),
        ("Reference", f"{result['reference']['n_segments']} labelled training segments"),
    ]
    if result["transcription"]:
        t = result["transcription"]
        facts.append(
            (
                "Transcription",
                f"{t['n_notes']} notes from {t['audio_s']:.1f} s of audio in {t['wall_s']:.1f} s "
                f"(TransKun 2.0); MIDI: {t['midi']}",
            )
        )
    if result["score_midi"]:
        used = "aligned, score statistics used" if result["score_aligned"] else "not aligned, scored without it"
        facts.append(("Score MIDI", f"{result['score_midi']} ({used})"))
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pianoeval: {esc(Path(result["input"]).name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }}
td:nth-child(n+2) {{ text-align: right; font-variant-numeric: tabular-nums; }}
.facts td {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Performance scores: {esc(Path(result["input"]).name)}</h1>
<table class="facts">{fact_rows}</table>
<img alt="scores over the training range" src="data:image/png;base64,{image}">
<h2>The 19 dimensions</h2>
<p>Score: predicted mean rating divided by 7 (1/7 to 1; the name reads low to high). Uncertainty: std of
the fold models' predictions. Percentile: share of training segments whose label is below this score
(ties count half).</p>
<table>
<tr><th>Dimension</th><th>Score</th><th>Rating (1-7)</th><th>Uncertainty</th><th>Percentile</th></tr>
{"".join(rows)}
</table>
</body></html>
"""


def output_paths(out: Path) -> dict[str, Path]:
    """Where the files of one scoring run go: json, png, html and (audio only) the transcription MIDI."""
    return {
        "json": out,
        "png": out.with_suffix(".png"),
        "html": out.with_suffix(".html"),
        "transcription": out.with_name(out.stem + TRANSCRIPTION_SUFFIX),
    }


def run_score(recording: Path, score: Path | None, model: Path, out: Path, device: str = "cpu") -> dict[str, Any]:
    """Score `recording` (audio or MIDI) with the results folder that `model` (results/fusion/winner.json) is in."""
    from pianoeval.data.midi import write_performance

    start = time.perf_counter()
    if not recording.is_file():
        raise InputError("file not found", recording)
    suffix = recording.suffix.lower()
    if suffix not in AUDIO_SUFFIXES | MIDI_SUFFIXES:
        raise InputError(
            f"unsupported file type {suffix!r}; pass audio ({', '.join(sorted(AUDIO_SUFFIXES))}) "
            f"or MIDI ({', '.join(sorted(MIDI_SUFFIXES))})",
            recording,
        )
    if score is not None and not score.is_file():
        raise InputError("score MIDI not found", score)
    if not model.is_file():
        raise InputError("model file not found; run the pipeline or pass --model results/fusion/winner.json", model)
    results = model.resolve().parents[1]
    paths = output_paths(out)
    inputs = {p.resolve() for p in (recording, score, model) if p is not None}
    if any(p.resolve() in inputs for p in paths.values()):
        raise InputError("an output file would overwrite an input; choose another --out", out)
    # Check the trained models before the (slow) transcription, so a missing pipeline fails at once.
    winner, _ = symbolic_winner(results)
    reference = training_distribution(results, winner)
    # Seconds per phase (score.json `timings_s`); imports before run_score are not counted.
    timings = {"checks": time.perf_counter() - start, "transcribe": 0.0}
    transcription: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="pianoeval_score_") as tmp:
        if suffix in AUDIO_SUFFIXES:
            tick = time.perf_counter()
            perf, stats = transcribe_recording(recording, device)
            # Scored from a private copy; the user-visible MIDI is written only once scoring succeeded.
            midi = write_performance(perf, Path(tmp) / "transcription.mid")
            timings["transcribe"] = time.perf_counter() - tick
            scores = score_midi(midi, results, check_length=False, score=score, transcribed=True)
            transcription = {
                "midi": str(paths["transcription"]),
                "n_notes": len(perf.notes),
                "audio_s": stats["audio_s"],
                "wall_s": stats["wall_s"],
                "real_time_factor": stats["real_time_factor"],
            }
        else:
            scores = score_midi(recording, results, score=score)
        pct = percentiles(scores["mean"], reference)
        result = {
            "input": str(recording),
            "input_kind": "audio" if transcription else "midi",
            "score_midi": str(score) if score else None,
            "score_aligned": scores["score_aligned"],
            "model": scores["model"],
            "track": "symbolic",
            "n_fold_models": scores["n_models"],
            "transcription": transcription,
            "reference": {"n_segments": len(reference), "source": "labels of the trained folds (fold_0 predictions)"},
            "dimensions": {
                d: {"score": float(m), "uncertainty": float(s), "percentile": float(p)}
                for d, m, s, p in zip(DIMENSIONS, scores["mean"], scores["std"], pct, strict=True)
            },
            "report": {"png": str(paths["png"]), "html": str(paths["html"])},
        }
        timings.update(scores["timings_s"])
        tick = time.perf_counter()
        png = plot_report(scores, reference, recording.name)
        page = render_html(result, png)
        timings["report"] = time.perf_counter() - tick
        tick = time.perf_counter()
        if transcription:
            with atomic_path(paths["transcription"], suffix=".mid") as dst:
                dst.write_bytes(midi.read_bytes())
    with atomic_path(paths["png"], suffix=".png") as dst:
        dst.write_bytes(png)
    with atomic_path(paths["html"], suffix=".html") as dst:
        dst.write_text(page, encoding="utf-8")
    timings["write"] = time.perf_counter() - tick
    result["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    result["wall_s"] = round(time.perf_counter() - start, 2)
    write_json(result, out)  # last: its presence means the set is complete
    return result
