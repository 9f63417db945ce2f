"""How well TransKun transcribes rendered piano audio: note F1 against the MIDI the audio came from.

`run_transcribe_check` picks a stratified subset of a manifest (`per_group` performances of each
piece and bar length), renders the rows that have no audio yet, transcribes each file with
`audio.transcribe.transcribe_timed` and scores the notes with `mir_eval.transcription`: onsets
only (offset_ratio=None), onsets + offsets (key releases), and onsets + offsets with both sides'
notes held by their own sustain pedal (the sounding length). Transcriptions are cached per file, so
a killed run resumes and a scoring change needs no new transcription.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json, write_json
from pianoeval.data.midi import Performance

log = logging.getLogger(__name__)

# mir_eval's standard note-matching tolerances (MIREX): onsets within 50 ms; offsets within
# 20 % of the reference note's duration or 50 ms, whichever is larger.
ONSET_TOLERANCE_S: float = 0.05
OFFSET_RATIO: float = 0.2
OFFSET_MIN_TOLERANCE_S: float = 0.05
# mir_eval refuses notes of zero length (MIDI allows them): they are given this length.
MIN_NOTE_S: float = 1e-3
# Bump when a cached transcription would change for the same audio, length and transkun version.
CACHE_VERSION: int = 2  # 2: the fewest-windows plan (audio.transcribe.plan_windows)
# The three scores: onsets; onsets + key-release offsets; onsets + offsets held by the sustain pedal.
SCORE_KINDS: tuple[str, ...] = ("onset", "onset_offset", "onset_offset_pedal")
# A cut performance's notes end this long before the cut, so that a rendering of it holds their release.
CUT_TAIL_S: float = 0.5
# PercePiano segment ids name their cut length ("..._8bars_..."): one stratum per piece and length.
_BARS = re.compile(r"_(\d+bars)_")


def stratum(segment_id: str, piece_id: str) -> str:
    """The stratum of a segment: its piece, plus the bar length when the id names one."""
    match = _BARS.search(segment_id)
    return f"{piece_id}/{match.group(1)}" if match else piece_id


def select_stratified(df: pd.DataFrame, per_group: int, seed: int = 0) -> pd.DataFrame:
    """`per_group` rows drawn at random (seeded) from each stratum, ordered by stratum and id."""
    df = df.assign(stratum=[stratum(s, p) for s, p in zip(df["segment_id"], df["piece_id"], strict=True)])
    rng = np.random.default_rng(seed)
    picks = []
    for _, group in df.sort_values("segment_id").groupby("stratum", sort=True):
        idx = rng.choice(len(group), size=min(per_group, len(group)), replace=False)
        picks.append(group.iloc[np.sort(idx)])
    return pd.concat(picks, ignore_index=True) if picks else df.iloc[:0]


def crop_notes(notes: np.ndarray, max_seconds: float | None) -> np.ndarray:
    """Notes [N, 4] starting before `max_seconds`, offsets cut there; every note at least MIN_NOTE_S long."""
    notes = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
    if max_seconds is not None:
        notes = notes[notes[:, 0] < max_seconds].copy()
        notes[:, 1] = np.minimum(notes[:, 1], max_seconds)
    else:
        notes = notes.copy()
    notes[:, 1] = np.maximum(notes[:, 1], notes[:, 0] + MIN_NOTE_S)
    return notes


def cut_performance(src: Path, start: float, seconds: float, dst: Path) -> Path:
    """MIDI of `src` from `start` for `seconds` (notes starting before the end - CUT_TAIL_S, cut at the end,
    the sustain pedal as it stands at the cut) written to `dst`."""
    from pianoeval.data.corpus import window
    from pianoeval.data.midi import load_performance, write_performance

    return write_performance(window(load_performance(src), start, seconds - CUT_TAIL_S), dst)


def sustain_offsets(notes: np.ndarray, pedal: np.ndarray) -> np.ndarray:
    """Notes [N, 4] with offsets held by the sustain pedal: a note released while the pedal is
    down (CC64 >= 64) sounds until the pedal is lifted, or until its key is struck again."""
    from pianoeval.data.midi import pedal_intervals

    notes = np.asarray(notes, dtype=np.float64).reshape(-1, 4).copy()
    # A pedal still down at the end is lifted when the last note ends.
    intervals = pedal_intervals(Performance(notes, pedal))
    if len(notes) == 0 or len(intervals) == 0:
        return notes
    # The pedal interval holding each offset (start <= offset < end), if any.
    k = np.searchsorted(intervals[:, 0], notes[:, 1], side="right") - 1
    held = (k >= 0) & (notes[:, 1] < intervals[np.clip(k, 0, None), 1])
    extended = np.where(held, intervals[np.clip(k, 0, None), 1], notes[:, 1])
    for pitch in np.unique(notes[:, 2]):
        idx = np.flatnonzero(notes[:, 2] == pitch)
        idx = idx[np.argsort(notes[idx, 0], kind="stable")]
        # A re-struck key cuts the held note at the new onset (but never before its own release).
        nxt = np.r_[notes[idx[1:], 0], np.inf]
        extended[idx] = np.maximum(notes[idx, 1], np.minimum(extended[idx], nxt))
    notes[:, 1] = extended
    return notes


def note_scores(reference: np.ndarray, estimate: np.ndarray) -> dict[str, Any]:
    """Precision/recall/F1 of estimated notes [M, 4] against reference notes [N, 4] (onset, offset,
    pitch, velocity), onsets only and onsets + offsets, with mir_eval."""
    import warnings

    from mir_eval.transcription import precision_recall_f1_overlap
    from mir_eval.util import midi_to_hz

    ref, est = crop_notes(reference, None), crop_notes(estimate, None)
    scores: dict[str, Any] = {"n_reference": len(ref), "n_estimate": len(est)}
    for name, ratio in (("onset", None), ("onset_offset", OFFSET_RATIO)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mir_eval warns when one side is empty, and scores it 0
            p, r, f, _ = precision_recall_f1_overlap(
                ref[:, :2],
                midi_to_hz(ref[:, 2]),
                est[:, :2],
                midi_to_hz(est[:, 2]),
                onset_tolerance=ONSET_TOLERANCE_S,
                offset_ratio=ratio,
                offset_min_tolerance=OFFSET_MIN_TOLERANCE_S,
            )
        scores[name] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return scores


def _settings(max_seconds: float | None) -> dict[str, Any]:
    """What a transcription depends on besides the audio (its cache key), and the scoring tolerances."""
    import importlib.metadata

    from pianoeval.audio.transcribe import resolve_engine

    return {
        "onset_tolerance_s": ONSET_TOLERANCE_S,
        "offset_ratio": OFFSET_RATIO,
        "offset_min_tolerance_s": OFFSET_MIN_TOLERANCE_S,
        "max_seconds": max_seconds,
        "transkun": importlib.metadata.version("transkun"),
        "engine": resolve_engine(None),
        "cache_version": CACHE_VERSION,
    }


def transcribe_cached(
    audio_path: Path, max_seconds: float | None, sample_rate: int, cache_dir: Path
) -> tuple[Performance, dict[str, float]]:
    """TransKun's transcription of `audio_path` (its first `max_seconds`) and its timing, cached per file."""
    from pianoeval.audio.io import load_audio
    from pianoeval.audio.transcribe import transcribe_timed

    settings = _settings(max_seconds)
    # The engines agree to float rounding, not bit for bit: each has its own cache entries.
    key = f"{max_seconds}|{settings['transkun']}|{CACHE_VERSION}|{sample_rate}|{settings['engine']}"
    cached = cache_dir / f"{hashlib.sha1(Path(audio_path).read_bytes() + key.encode()).hexdigest()}.json"
    if not cached.is_file():
        wave = load_audio(audio_path, sample_rate=sample_rate)
        if max_seconds is not None:
            wave = wave[: round(max_seconds * sample_rate)]
        estimate, timing = transcribe_timed(wave, sample_rate=sample_rate, progress=False, engine=settings["engine"])
        write_json({"notes": estimate.notes, "pedal": estimate.pedal, "timing": timing}, cached)
    data = read_json(cached)
    notes, pedal = np.array(data["notes"]).reshape(-1, 4), np.array(data["pedal"]).reshape(-1, 2)
    return Performance(notes, pedal), data["timing"]


def check_file(
    audio_path: Path, midi_path: Path, max_seconds: float | None, sample_rate: int, cache_dir: Path
) -> dict[str, Any]:
    """Scores of one file's transcription (its first `max_seconds`) against its MIDI, and the timing."""
    from pianoeval.data.midi import load_performance

    estimate, timing = transcribe_cached(audio_path, max_seconds, sample_rate, cache_dir)
    reference = load_performance(midi_path)
    ref, est = crop_notes(reference.notes, max_seconds), crop_notes(estimate.notes, max_seconds)
    scores = note_scores(ref, est)
    held = note_scores(
        crop_notes(sustain_offsets(reference.notes, reference.pedal), max_seconds),
        crop_notes(sustain_offsets(estimate.notes, estimate.pedal), max_seconds),
    )
    scores["onset_offset_pedal"] = held["onset_offset"]
    return {**scores, **timing}


def _summary(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof=1) of every score over files, and the total cost."""
    out: dict[str, Any] = {"n_files": len(files)}
    for kind in SCORE_KINDS:
        for metric in ("precision", "recall", "f1"):
            values = np.array([f[kind][metric] for f in files])
            out[f"{kind}_{metric}"] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            }
    audio_s = float(sum(f["audio_s"] for f in files))
    wall_s = float(sum(f["wall_s"] for f in files))
    out.update({"audio_s": audio_s, "transcribe_wall_s": wall_s, "real_time_factor": wall_s / audio_s})
    return out


def run_transcribe_check(
    manifest: Path,
    out: Path,
    cache_dir: Path,
    audio_dir: Path | None = None,
    per_group: int = 1,
    max_seconds: float | None = None,
    source: str | None = None,
    seed: int = 0,
    sample_rate: int = 24_000,
) -> dict[str, Any]:
    """Check TransKun on a stratified subset of `manifest` (optionally only `source` rows); write JSON to `out`.

    Rows without `audio_path` are rendered (FluidSynth, the standard SoundFont) into `audio_dir`.
    """
    from pianoeval.audio.render import find_soundfont, render_key, render_midi
    from pianoeval.data.manifest import read_manifest

    start = time.perf_counter()
    load_start = os.getloadavg()
    df = read_manifest(manifest)
    df = df[df["midi_path"].notna()]
    if source is not None:
        df = df[df["source"] == source]
    rows = select_stratified(df, per_group, seed)
    if rows.empty:
        raise InputError(f"no rows with a MIDI path{f' from source {source!r}' if source else ''}", manifest)
    settings = _settings(max_seconds)
    soundfont = None
    files: list[dict[str, Any]] = []
    for row in rows.itertuples(index=False):
        audio = row.audio_path
        if audio is None or pd.isna(audio):
            if audio_dir is None:
                raise InputError(f"{row.segment_id} has no audio; pass an audio folder to render it into", manifest)
            soundfont = soundfont or find_soundfont()
            stem = row.segment_id.replace("/", "_").replace("::", "__")
            audio = audio_dir / f"{stem}.{render_key(row.midi_path, soundfont, sample_rate)}.wav"
            if not audio.is_file():
                render_midi(row.midi_path, audio, soundfont=soundfont, sample_rate=sample_rate)
        result = check_file(Path(audio), Path(row.midi_path), max_seconds, sample_rate, cache_dir)
        record = {"segment_id": row.segment_id, "stratum": row.stratum, "audio_path": str(audio), **result}
        files.append(record)
        log.info(
            "%s: onset F1 %.3f, onset+offset F1 %.3f, with pedal %.3f (%.1f s audio in %.1f s)",
            row.segment_id,
            result["onset"]["f1"],
            result["onset_offset"]["f1"],
            result["onset_offset_pedal"]["f1"],
            result["audio_s"],
            result["wall_s"],
        )
    report = {
        "manifest": str(manifest),
        "source": source,
        "per_group": per_group,
        "seed": seed,
        "settings": settings,
        "summary": _summary(files),
        "wall_s": round(time.perf_counter() - start, 1),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg()), "cpus": os.cpu_count()},
        "files": files,
    }
    write_json(report, out)
    s = report["summary"]
    log.info(
        "%d files: onset F1 %.3f ± %.3f, onset+offset F1 %.3f ± %.3f, with pedal %.3f ± %.3f -> %s",
        s["n_files"],
        s["onset_f1"]["mean"],
        s["onset_f1"]["std"],
        s["onset_offset_f1"]["mean"],
        s["onset_offset_f1"]["std"],
        s["onset_offset_pedal_f1"]["mean"],
        s["onset_offset_pedal_f1"]["std"],
        out,
    )
    return report
