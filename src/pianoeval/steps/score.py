"""`pianoeval score`: 19 perceptual scores for one recording (audio or MIDI), by the models the DAG chose.

A MIDI is scored by every fold model of the symbolic track winner. Audio (WAV/FLAC/MP3/OGG) is checked
(readable, not silent, clipped or NaN, 2-600 s long) and transcribed to MIDI with TransKun; then each
fold of the fusion winner (results/fusion/winner.json) scores it from that fold's audio winner on the
recording and symbolic winner on the transcription (a tree without a fusion winner scores the
transcription with the symbolic winner). What does not need the transcription (loading the fold
networks, the audio track's pass over the recording) runs in a background thread while TransKun
transcribes. The mean over fold models is the score, their std the
uncertainty. The models come from a results folder or from a bundle (`pianoeval export`,
`evaluation/bundle.py`): the same files, so the same numbers. The JSON and HTML say which model scored
and what data it learned from, with a warning when that is the demo's synthetic labels. Beside `--out`
(JSON) go a PNG, a self-contained HTML report and, for audio, the transcription MIDI. Nothing is written
until everything has been computed; each file is written atomically and the JSON last, so its presence
means the set is complete.
"""

from __future__ import annotations

import base64
import html
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pianoeval.core.constants import (  # the input limits live beside the constants: the CLI reads them before torch
    AUDIO_SUFFIXES,
    DIMENSIONS,
    LABEL_MAX,
    LABEL_MIN,
    MAX_SECONDS,
    MIDI_SUFFIXES,
    MIN_SECONDS,
    TRANSCRIPTION_SAMPLE_RATE,
)
from pianoeval.core.errors import InputError
from pianoeval.core.io import atomic_path, read_json, write_json
from pianoeval.core.layout import FoldDir, Results
from pianoeval.evaluation.served import ServedModels, load_served

if TYPE_CHECKING:
    from pianoeval.audio.transcribe_ahead import Ahead

log = logging.getLogger(__name__)

# Suffix of the transcription MIDI written beside the output JSON (not `.mid` alone, which could be the
# user's own score file, e.g. `score.mid` beside the default `score.json`).
TRANSCRIPTION_SUFFIX = ".transcription.mid"


def fold_model(fold_dir: Path) -> str:
    """The model a fold folder holds, as its model_spec.json names it (s3, probe_logmel, f2_score, ...)."""
    return read_json(FoldDir(fold_dir).model_spec)["model"]


class FoldNetworks:
    """The fold networks of one scoring run and their configs, each loaded once by whichever thread asks
    first (audio input loads the networks in a background thread while TransKun transcribes:
    `prepare_beside_transcription`). Folds whose config.yaml is the same text share one parsed config."""

    def __init__(self) -> None:
        self._loaded: dict[Path, Any] = {}
        self._configs: dict[Path, dict[str, Any]] = {}
        self._by_text: dict[str, dict[str, Any]] = {}
        self._curves: dict[Path, tuple[str, ...]] = {}
        self._lock = threading.RLock()  # get() reads the config under the same lock

    def config(self, fold_dir: Path) -> dict[str, Any]:
        """The config the fold was trained with (its config.yaml, read once per fold)."""
        from pianoeval.core.config import written_config

        with self._lock:
            if fold_dir not in self._configs:
                path = FoldDir(fold_dir).config
                text = path.read_text()
                if text not in self._by_text:
                    self._by_text[text] = written_config(text, path)
                self._configs[fold_dir] = self._by_text[text]
            return self._configs[fold_dir]

    def get(self, fold_dir: Path) -> Any:
        """The fold's plain scoring network (`pianoeval.evaluation.inference`), in eval mode."""
        from pianoeval.evaluation.inference import load_scoring_network

        with self._lock:
            if fold_dir not in self._loaded:
                self._loaded[fold_dir] = load_scoring_network(fold_dir, self.config(fold_dir))
            return self._loaded[fold_dir]

    def curve_names(self, fold_dir: Path) -> tuple[str, ...]:
        """The curves the fold's S3 was trained on, in order (its model_spec.json meta)."""
        with self._lock:
            if fold_dir not in self._curves:
                meta = read_json(FoldDir(fold_dir).model_spec).get("meta", {})
                self._curves[fold_dir] = tuple(meta.get("feature_names", ()))
            return self._curves[fold_dir]

    def load(self, fold_dirs: list[Path]) -> None:
        for fold_dir in fold_dirs:
            self.get(fold_dir)


def check_duration(seconds: float, path: Path, what: str) -> None:
    """InputError unless MIN_SECONDS <= seconds <= MAX_SECONDS."""
    if seconds < MIN_SECONDS:
        raise InputError(f"{what} lasts {seconds:.1f} s; scoring needs at least {MIN_SECONDS:g} s of music", path)
    if seconds > MAX_SECONDS:
        raise InputError(
            f"{what} lasts {seconds:.1f} s, more than the {MAX_SECONDS:g} s limit; cut it into shorter parts", path
        )


def symbolic_outputs(
    midi: Path,
    fold_dirs: list[Path],
    score: Path | None = None,
    transcribed: bool = False,
    networks: FoldNetworks | None = None,
) -> dict[str, Any]:
    """Every symbolic fold model on one MIDI: embeddings `z` [folds, H] and `scores` [folds, 19] (tensors),
    `score_aligned`, `timings_s` ({"models", "featurize", "forward"}, seconds).

    The fold models are loaded as plain networks (`pianoeval.evaluation.inference`), without
    Lightning; folds with the same config share one parsed config and one feature item.
    """
    from pianoeval.core.constants import SCORE_COLUMNS
    from pianoeval.core.settings import FeaturesSettings
    from pianoeval.core.threads import torch_threads
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.symbolic.featurize import curves_for, featurize_file
    from pianoeval.training.registry import FEATURE_KIND

    timings = {"models": 0.0, "featurize": 0.0, "forward": 0.0}
    networks = networks or FoldNetworks()
    batches: dict[tuple[str, FeaturesSettings, tuple[str, ...]], dict[str, Any]] = {}
    zs, preds = [], []
    # Small networks built, loaded and run on one performance: many small ops, faster on one thread
    # (pianoeval.core.threads).
    with torch_threads(1):
        for fold_dir in fold_dirs:
            tick = time.perf_counter()
            config = networks.config(fold_dir)
            net = networks.get(fold_dir)
            kind = FEATURE_KIND[fold_model(fold_dir)]
            timings["models"] += time.perf_counter() - tick
            tick = time.perf_counter()
            # A model trained on fewer curves than this version computes gets its own, by name.
            names = networks.curve_names(fold_dir) if kind == "curves" else ()
            key = (kind, FeaturesSettings.from_config(config), names)
            if key not in batches:
                item = featurize_file(kind, str(midi), key[1], str(score) if score else None)
                if names:
                    item["curves"] = curves_for(item["curves"], names, str(fold_dir))
                item["transcribed"] = torch.tensor(float(transcribed))
                batches[key] = multi_task_collate_fn([item])
            timings["featurize"] += time.perf_counter() - tick
            tick = time.perf_counter()
            with torch.inference_mode():
                z, scores = net.embed_and_score(batches[key])
                preds.append(scores[0])  # the batch's only item: [19]
            zs.append(z[0] if isinstance(z, torch.Tensor) else None)
            timings["forward"] += time.perf_counter() - tick
    # The statistics' last score column is the "aligned to a score" flag (symbolic/stats.py).
    flags = [float(b["stats"][0, SCORE_COLUMNS.stop - 1]) > 0.5 for b in batches.values() if "stats" in b]
    return {
        "z": torch.stack(zs) if all(z is not None for z in zs) else None,
        "scores": torch.stack(preds),
        "score_aligned": bool(flags) and all(flags),
        "timings_s": timings,
    }


def score_midi(
    midi: Path,
    results: Path | ServedModels,
    check_length: bool = True,
    score: Path | None = None,
    transcribed: bool = False,
    networks: FoldNetworks | None = None,
) -> dict[str, Any]:
    """Scores of a MIDI performance: mean [19] and std [19] over the symbolic winner's fold models.

    `results`: a results tree, an unpacked bundle, or their `ServedModels`. `score`, the score MIDI
    the performance plays, gives the score-relative statistics of the wide & deep encoders
    (`symbolic/score_stats.py`); `score_aligned` says whether they were used (False: no score, or one
    that could not be aligned, with a warning; the models then predict as trained for unscored
    input, `symbolic.score_dropout`). Also returns `timings_s` ({"models", "featurize", "forward"},
    seconds). `transcribed`: the MIDI is TransKun's transcription of a recording (models trained with
    transcription views read it as such: side_input.WithStatistics). `networks`: fold networks already
    loaded (a recording's, loaded beside its transcription).
    """
    from pianoeval.data.midi import load_performance

    perf = load_performance(midi)
    if check_length:
        check_duration(perf.duration, midi, "performance")
    served = results if isinstance(results, ServedModels) else load_served(results)
    out = symbolic_outputs(midi, served.folds("symbolic"), score, transcribed, networks)
    return fold_summary(served.symbolic, "symbolic", out["scores"].numpy(), out["score_aligned"], out["timings_s"])


def fold_summary(model: str, track: str, stack: np.ndarray, aligned: bool, timings: dict) -> dict[str, Any]:
    """What a scoring path returns: the fold models' scores [folds, 19] as a mean and a spread."""
    return {
        "model": model,
        "track": track,
        "mean": stack.mean(axis=0),
        "std": stack.std(axis=0),
        "n_models": len(stack),
        "score_aligned": aligned,
        "timings_s": timings,
    }


def audio_track_outputs(
    recording: Path, fold_dirs: list[Path], networks: FoldNetworks | None = None
) -> dict[str, torch.Tensor]:
    """Every audio fold model on one recording: `z` [folds, H] and `scores` [folds, 19], as the fusion
    saw them in training (the backbone's frames of the waveform at the fold's render rate)."""
    from pianoeval.audio.io import load_audio
    from pianoeval.core.settings import BackboneSettings
    from pianoeval.evaluation.robustness import audio_outputs
    from pianoeval.training.registry import audio_backbone, backbone_fingerprint, build_frozen_backbone

    backbones: dict[str, Any] = {}
    waves: dict[int, np.ndarray] = {}
    zs, scores = [], []
    networks = networks or FoldNetworks()
    for fold_dir in fold_dirs:
        config = networks.config(fold_dir)
        settings = BackboneSettings.from_config(config)
        name = audio_backbone(fold_model(fold_dir), settings.backbone)
        key = f"{name}|{backbone_fingerprint(name, settings)}|{settings.hidden_layers}"
        if key not in backbones:
            backbones[key] = build_frozen_backbone(name, settings)
        sr = int(config["render"]["sample_rate"])
        if sr not in waves:
            waves[sr] = load_audio(recording, sample_rate=sr, max_seconds=MAX_SECONDS)
        module = networks.get(fold_dir)
        z, s = audio_outputs(module, backbones[key], [waves[sr]], sr, float(config["audio"]["clip_seconds"]))
        zs.append(z[0])
        scores.append(s[0])
    return {"z": torch.stack(zs), "scores": torch.stack(scores)}


def fusion_outputs(
    fold_dirs: list[Path],
    symbolic: dict[str, Any],
    audio: dict[str, torch.Tensor],
    score_stats: torch.Tensor | None,
    networks: FoldNetworks | None = None,
) -> np.ndarray:
    """Scores [folds, 19] of every fusion fold model on its fold's symbolic and audio outputs
    (`score_stats` [S], the score-relative statistics, for the `_score` variants)."""
    preds = []
    for k, fold_dir in enumerate(fold_dirs):
        module = (networks or FoldNetworks()).get(fold_dir)
        batch = {
            "z_audio": audio["z"][k : k + 1],
            "scores_audio": audio["scores"][k : k + 1],
            "z_symbolic": symbolic["z"][k : k + 1],
            "scores_symbolic": symbolic["scores"][k : k + 1],
        }
        if fold_model(fold_dir).endswith("_score"):
            batch["score_stats"] = score_stats[None]
        with torch.inference_mode():
            preds.append(module(batch)[0].numpy())
    return np.stack(preds)


def prepare_beside_transcription(recording: Path, served: ServedModels, networks: FoldNetworks) -> dict[str, Any]:
    """What scoring a recording needs that its transcription does not: every fold network loaded and, for
    a fusion winner, the audio track's outputs on the recording (`audio`, with its seconds in `audio_s`).
    Run in a background thread while TransKun transcribes (`score_input`); torch's thread count is left
    alone (it is process-wide, and the transcription sets it)."""
    tick = time.perf_counter()
    if not served.fusion:
        networks.load(served.folds("symbolic"))
        return {"audio": None, "audio_s": 0.0, "models_s": time.perf_counter() - tick}
    folds = served.fused_folds()
    networks.load([f[0] for f in folds])
    models = time.perf_counter() - tick
    tick = time.perf_counter()
    audio = audio_track_outputs(recording, [f[1] for f in folds], networks)
    audio_s = time.perf_counter() - tick
    networks.load([f[2] for f in folds])
    return {"audio": audio, "audio_s": audio_s, "models_s": models}


def score_fused(
    midi: Path,
    served: ServedModels,
    audio: dict[str, torch.Tensor],
    networks: FoldNetworks,
    score: Path | None = None,
) -> dict[str, Any]:
    """Scores of a recording by the fusion winner: mean [19] and std [19] over its fold models, each fed
    the audio winner's fold model on the recording (`audio`, `audio_track_outputs`) and the symbolic
    winner's on its transcription `midi`."""
    folds = served.fused_folds()
    sym = symbolic_outputs(midi, [f[0] for f in folds], score, transcribed=True, networks=networks)
    if sym["z"] is None:
        raise InputError(f"the symbolic winner {served.symbolic} has no embedding to fuse", folds[0][0])
    timings = dict(sym["timings_s"])
    tick = time.perf_counter()
    stats = None
    if served.fusion and served.fusion.endswith("_score"):
        stats = score_statistics_of(midi, networks.config(folds[0][0]), score)
    stack = fusion_outputs([f[2] for f in folds], sym, audio, stats, networks)
    timings["fusion"] = time.perf_counter() - tick
    return fold_summary(served.fusion, "fusion", stack, sym["score_aligned"], timings)


def score_statistics_of(midi: Path, config: dict[str, Any], score: Path | None) -> torch.Tensor:
    """The score-relative statistics [S] of a performance (what the `_score` fusions read: the stats
    featurizer's SCORE_COLUMNS, as the featurize rule's stats store holds them), featurized with the
    `features` section of `config` (a symbolic fold's)."""
    from pianoeval.core.constants import SCORE_COLUMNS
    from pianoeval.core.settings import FeaturesSettings
    from pianoeval.symbolic.featurize import featurize_file

    features = FeaturesSettings.from_config(config)
    item = featurize_file("stats", str(midi), features, str(score) if score else None)
    return item["stats"][SCORE_COLUMNS].float()


def transcribe_recording(path: Path, device: str = "cpu", ahead: Ahead | None = None) -> tuple[Any, dict[str, float]]:
    """Check an audio file and transcribe it: (Performance, timing {audio_s, wall_s, ...}); InputError if unusable.
    `ahead`: its first windows, started before PyTorch was imported (`audio.transcribe_ahead`)."""
    from pianoeval.audio.io import load_audio
    from pianoeval.audio.transcribe import transcribe_timed

    if ahead is not None and (ahead.source != path or ahead.card.fs != TRANSCRIPTION_SAMPLE_RATE):
        ahead = None  # started for another file or rate: not this recording's windows
    if ahead is not None:
        wave = ahead.audio[:, 0]  # loaded by the same load_audio, at this rate, before the windows started
    else:
        # load_audio refuses unreadable, empty, NaN, clipped and silent audio, and (before resampling)
        # anything over the length limit.
        wave = load_audio(path, sample_rate=TRANSCRIPTION_SAMPLE_RATE, max_seconds=MAX_SECONDS)
    check_duration(wave.size / TRANSCRIPTION_SAMPLE_RATE, path, "audio")
    perf, stats = transcribe_timed(wave, sample_rate=TRANSCRIPTION_SAMPLE_RATE, device=device, ahead=ahead)
    if len(perf.notes) == 0:
        raise InputError("no piano notes were found in the recording; is it a piano recording?", path)
    perf.path = str(path)
    return perf, stats


def percentiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Percentile [19] (0-100) of each value [19] within its column of reference [N, 19]; ties count half."""
    below = (reference < values[None, :]).mean(axis=0)
    equal = (reference == values[None, :]).mean(axis=0)
    return 100.0 * (below + 0.5 * equal)


def plot_report(scores: dict[str, Any], reference: np.ndarray, title: str) -> bytes:
    """PNG bytes: per-dimension scores (with fold spread) over the training label 10-90% range."""
    from pianoeval.evaluation.chart import score_chart_png

    labels = [d.replace("_", " ") for d in DIMENSIONS]
    return score_chart_png(scores["mean"], scores["std"], reference, labels, title, (LABEL_MIN, LABEL_MAX))


def model_line(result: dict[str, Any]) -> str:
    """What scored, in words: the model, its track and fold count (and, for the fusion, what fed it)."""
    models = result["models"]
    line = f"{result['model']} ({result['track']} winner, {result['n_fold_models']} fold models"
    if result["track"] == "fusion":
        line += (
            f": audio winner {models['audio']['model']} on the recording + symbolic winner "
            f"{models['symbolic']['model']} on its transcription"
        )
    return line + f"); from {result['served_from']['kind']} {result['served_from']['path']}"


def render_html(result: dict[str, Any], png: bytes) -> str:
    """A self-contained HTML page: warnings, summary, the PNG (base64) and the table of the 19 scores."""
    from pianoeval.data.sources import describe

    esc = html.escape
    rows = []
    for name, d in result["dimensions"].items():
        rows.append(
            f"<tr><td>{esc(name.replace('_', ' '))}</td><td>{d['score']:.3f}</td><td>{7 * d['score']:.2f}</td>"
            f"<td>± {d['uncertainty']:.3f}</td><td>{d['percentile']:.0f}</td></tr>"
        )
    facts = [
        ("Input", result["input"]),
        ("Model", model_line(result)),
        ("Trained on", describe(result["training_data"])),
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
    warnings = "".join(f'<p class="warning"><strong>Warning:</strong> {esc(w)}</p>' for w in result["warnings"])
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pianoeval: {esc(Path(result["input"]).name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }}
td:nth-child(n+2) {{ text-align: right; font-variant-numeric: tabular-nums; }}
.facts td {{ text-align: left; }}
.warning {{ background: #fde8e8; border: 2px solid #c0392b; padding: 0.6em 1em; color: #7b1d13; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Performance scores: {esc(Path(result["input"]).name)}</h1>
{warnings}
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


def check_inputs(recording: Path, score: Path | None, results: Path | None, bundle: Path | None, out: Path) -> None:
    """InputError (before any work) for a missing or unsupported input, a results folder without a final
    winner (unless a bundle is given), or an output over an input."""
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
    winner = Results(results).final_winner if results is not None else None
    if bundle is None and (winner is None or not winner.is_file()):
        raise InputError(
            "final winner not found; run the pipeline, or pass --results (the folder it wrote) or --bundle", winner
        )
    inputs = {p.resolve() for p in (recording, score, winner, bundle) if p is not None}
    if any(p.resolve() in inputs for p in output_paths(out).values()):
        raise InputError("an output file would overwrite an input; choose another --out", out)


@contextmanager
def served_models(results: Path | None, bundle: Path | None) -> Iterator[tuple[ServedModels, dict[str, Any]]]:
    """(served models, where they come from) of a bundle (unpacked while in use) or of the results
    folder `results`."""
    from pianoeval.evaluation.bundle import unpacked_bundle

    if bundle is not None:
        with unpacked_bundle(bundle) as (root, record):
            origin = {"kind": "bundle", "path": str(bundle), "git_revision": record.get("git_revision")}
            yield load_served(root), origin
        return
    assert results is not None
    root = results.resolve()
    yield load_served(root), {"kind": "results", "path": str(root)}


def score_input(
    recording: Path, score: Path | None, served: ServedModels, tmp: Path, device: str, ahead: Ahead | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None, Path | None]:
    """(scores, transcription facts or None, transcription MIDI or None) of one input: a MIDI by the
    symbolic winner; audio, transcribed, by the fusion winner (the symbolic winner when none is served).
    `ahead`: the recording's first TransKun windows, already started (`audio.transcribe_ahead`)."""
    from pianoeval.data.midi import write_performance

    if recording.suffix.lower() not in AUDIO_SUFFIXES:
        return score_midi(recording, served, score=score), None, None
    if served.fusion:
        served.fused_folds()  # the three tracks' folds are there: fail before the slow transcription
    networks = FoldNetworks()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pianoeval-prepare") as pool:
        # Loading the models and running the audio track do not need the transcription: they run beside it.
        beside = pool.submit(prepare_beside_transcription, recording, served, networks)
        tick = time.perf_counter()
        perf, stats = transcribe_recording(recording, device, ahead)
        # Scored from a private copy; the user-visible MIDI is written only once scoring succeeded.
        midi = write_performance(perf, tmp / "transcription.mid")
        seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        prepared = beside.result()
        waited = time.perf_counter() - tick
    if served.fusion:
        scores = score_fused(midi, served, prepared["audio"], networks, score)
    else:
        scores = score_midi(midi, served, check_length=False, score=score, transcribed=True, networks=networks)
    # Seconds of the work done beside the transcription, and how long scoring waited for it after.
    scores["timings_s"].update(
        transcribe=seconds, audio=prepared["audio_s"], models_beside=prepared["models_s"], waited=waited
    )
    transcription = {
        "n_notes": len(perf.notes),
        "audio_s": stats["audio_s"],
        "wall_s": stats["wall_s"],
        "real_time_factor": stats["real_time_factor"],
        "ahead_windows": int(stats.get("ahead_windows", 0)),
    }
    return scores, transcription, midi


def score_record(
    recording: Path,
    score: Path | None,
    scores: dict[str, Any],
    served: ServedModels,
    origin: dict[str, Any],
    transcription: dict[str, Any] | None,
    paths: dict[str, Path],
) -> dict[str, Any]:
    """score.json's content (without timings): the input, which model scored, the data it learned from,
    the transcription, and the 19 dimensions with uncertainty and percentile."""
    pct = percentiles(scores["mean"], served.reference)
    used = served.description()
    if scores["track"] == "symbolic":
        used = {"symbolic": used["symbolic"]}
    warning = served.training_data.get("warning")
    return {
        "input": str(recording),
        "input_kind": "audio" if transcription else "midi",
        "score_midi": str(score) if score else None,
        "score_aligned": scores["score_aligned"],
        "model": scores["model"],
        "track": scores["track"],
        "n_fold_models": scores["n_models"],
        "models": used,
        "served_from": origin,
        "training_data": served.training_data,
        "warnings": [warning] if warning else [],
        "transcription": {"midi": str(paths["transcription"]), **transcription} if transcription else None,
        "reference": {
            "n_segments": len(served.reference),
            "source": "labels of the trained folds (fold_0 predictions)",
        },
        "dimensions": {
            d: {"score": float(m), "uncertainty": float(s), "percentile": float(p)}
            for d, m, s, p in zip(DIMENSIONS, scores["mean"], scores["std"], pct, strict=True)
        },
        "report": {"png": str(paths["png"]), "html": str(paths["html"])},
    }


def run_score(
    recording: Path,
    score: Path | None,
    results: Path | None,
    out: Path,
    device: str = "cpu",
    bundle: Path | None = None,
    ahead: Ahead | None = None,
) -> dict[str, Any]:
    """Score `recording` (audio or MIDI) with the models the DAG chose: from `bundle` (pianoeval export)
    when given, else from the results folder `results` (its fusion/winner.json and what it names).
    `ahead`: the recording's first TransKun windows, started before PyTorch was imported (`cli.cmd_score`)."""
    start = time.perf_counter()
    check_inputs(recording, score, results, bundle, out)
    paths = output_paths(out)
    # The trained models are checked before the (slow) transcription, so a missing pipeline fails at once.
    with served_models(results, bundle) as (served, origin), tempfile.TemporaryDirectory(prefix="pianoeval_") as tmp:
        # Seconds per phase (score.json `timings_s`); imports before run_score are not counted.
        timings = {"checks": time.perf_counter() - start, "transcribe": 0.0}
        scores, transcription, midi = score_input(recording, score, served, Path(tmp), device, ahead)
        result = score_record(recording, score, scores, served, origin, transcription, paths)
        timings.update(scores["timings_s"])
        tick = time.perf_counter()
        png = plot_report(scores, served.reference, recording.name)
        page = render_html(result, png)
        timings["report"] = time.perf_counter() - tick
        tick = time.perf_counter()
        if midi is not None:
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
