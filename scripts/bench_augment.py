"""Recording conditions: our `audio/augmentation.py` against audiomentations, on the robustness report's work.

For a trained audio model (its fold checkpoints under `--results`, e.g. the demo's probe), every
validation recording of every fold is degraded under each condition of `robustness.conditions`, once
by our augmentor (as `pianoeval audio-robustness` does, seeded per fold) and once by the nearest
audiomentations chain (p=1, the same parameters), and scored: the score drop, Pearson r, pairwise
accuracy and R² of each condition, as the robustness report computes them. Also measured: seconds of
compute per second of audio for each condition, and determinism (the same seed twice gives the same
wave; whether the global random state is read or changed).

The audiomentations chains: room_ir = ApplyImpulseResponse over our synthetic room bank written as WAV
files (it needs IR files); noise = AddColorNoise (pink to brown) at the SNR; phone = 300 Hz high-pass +
3.4 kHz low-pass (36 dB/octave) + 8-bit BitCrush; eq = low shelf 200 Hz + peak 400-4000 Hz + high shelf
4 kHz, ±9 dB; lowpass = LowPassFilter 2-8 kHz, 24 dB/octave; pitch = PitchShift (signalsmith stretch).

    .venv/bin/python scripts/bench_augment.py --config config/config.yaml --model probe --out bench_augment.json
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.audio.augmentation import AudioAugmentor
from pianoeval.core.io import write_json
from pianoeval.core.settings import BackboneSettings

Chain = list[tuple[str, dict[str, Any]]]


def library_transform(name: str, params: dict[str, Any], ir_dir: Path) -> Any:
    """The audiomentations transform (p=1) nearest to our augmentation `name` with `params`."""
    import audiomentations as am

    if name == "room_ir":
        return am.ApplyImpulseResponse(ir_path=ir_dir, p=1.0)
    if name == "noise":
        snr = float(params["snr_db"])
        return am.AddColorNoise(min_snr_db=snr, max_snr_db=snr, min_f_decay=-6.0, max_f_decay=-3.01, p=1.0)
    if name == "phone":
        return am.Compose(
            [
                am.HighPassFilter(300.0, 300.0, min_rolloff=36, max_rolloff=36, p=1.0),
                am.LowPassFilter(3400.0, 3400.0, min_rolloff=36, max_rolloff=36, p=1.0),
                am.BitCrush(min_bit_depth=8, max_bit_depth=8, p=1.0),
            ]
        )
    if name == "eq":
        return am.Compose(
            [
                am.LowShelfFilter(200.0, 200.0, -9.0, 9.0, min_q=0.707, max_q=0.707, p=1.0),
                am.PeakingFilter(400.0, 4000.0, -9.0, 9.0, min_q=1.0, max_q=1.0, p=1.0),
                am.HighShelfFilter(4000.0, 4000.0, -9.0, 9.0, min_q=0.707, max_q=0.707, p=1.0),
            ]
        )
    if name == "lowpass":
        return am.LowPassFilter(2000.0, 8000.0, min_rolloff=24, max_rolloff=24, p=1.0)
    if name == "pitch_shift":
        semitones = float(params["cents"]) / 100.0
        return am.PitchShift(semitones, semitones, method="signalsmith_stretch", p=1.0)
    raise ValueError(f"no audiomentations equivalent for {name!r}")


def library_degrader(chain: Chain, ir_dir: Path, sample_rate: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """wave [S], seed -> degraded wave [S]: the chain's audiomentations transforms, with the global
    `random` and `numpy.random` states (which audiomentations draws from) seeded and then restored."""
    transforms = [library_transform(name, params, ir_dir) for name, params in chain]

    def run(wave: np.ndarray, seed: int) -> np.ndarray:
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            out = np.asarray(wave, dtype=np.float32)
            for t in transforms:
                out = t(out, sample_rate)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return np.asarray(out, dtype=np.float32)[: len(wave)]

    return run


def write_ir_bank(augmentor: AudioAugmentor, folder: Path, sample_rate: int) -> Path:
    """Our synthetic room bank as WAV files (audiomentations reads impulse responses from files)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for i, ir in enumerate(augmentor.synthetic_irs()):
        sf.write(str(folder / f"ir_{i}.wav"), ir, sample_rate, subtype="FLOAT")
    return folder


def speed(conds: list[tuple[str, Chain]], wave: np.ndarray, sr: int, ir_dir: Path, repeats: int) -> dict:
    """Compute seconds per second of audio of every condition, ours and the library's (median of repeats)."""
    from pianoeval.evaluation.robustness import degrade

    out: dict[str, dict[str, float]] = {}
    seconds = len(wave) / sr
    for name, chain in conds:
        lib = library_degrader(chain, ir_dir, sr)
        ours = AudioAugmentor(seed=0, sample_rate=sr)
        walls: dict[str, list[float]] = {"ours": [], "audiomentations": []}
        for k in range(repeats + 1):  # the first call warms caches (IR files, filter design)
            start = time.perf_counter()
            degrade(wave, chain, ours)
            middle = time.perf_counter()
            lib(wave, k)
            if k:
                walls["ours"].append(middle - start)
                walls["audiomentations"].append(time.perf_counter() - middle)
        out[name] = {key: float(np.median(v)) / seconds for key, v in walls.items()}
    return out


def determinism(conds: list[tuple[str, Chain]], wave: np.ndarray, sr: int, ir_dir: Path) -> dict:
    """Per condition: the same seed twice gives the same wave (ours, library); whether the library,
    called without our save/restore wrapper, draws from (changes) Python's or numpy's global random state."""
    from pianoeval.evaluation.robustness import degrade

    out = {}
    for name, chain in conds:
        ours = [degrade(wave, chain, AudioAugmentor(seed=7, sample_rate=sr)) for _ in range(2)]
        lib = library_degrader(chain, ir_dir, sr)
        saved = np.random.get_state(), random.getstate()
        np.random.seed(7)
        random.seed(7)
        first, py_first = np.random.get_state()[1].copy(), random.getstate()
        for t in [library_transform(n, p, ir_dir) for n, p in chain]:
            t(wave, sr)
        changed = not np.array_equal(first, np.random.get_state()[1]) or random.getstate() != py_first
        np.random.set_state(saved[0])
        random.setstate(saved[1])
        out[name] = {
            "ours_same_seed_same_wave": bool(np.array_equal(ours[0], ours[1])),
            "audiomentations_same_seed_same_wave": bool(np.array_equal(lib(wave, 7), lib(wave, 7))),
            "audiomentations_draws_global_random_state": bool(changed),
        }
    return out


def drops(config: dict, model: str, results: Path, ir_dir: Path, conds: list[tuple[str, Chain]]) -> dict:
    """The robustness report's per-condition figures for both implementations (clean audio as reference)."""
    from pianoeval.audio.io import load_audio
    from pianoeval.core.io import read_json
    from pianoeval.data.manifest import label_matrix, read_manifest
    from pianoeval.evaluation.robustness import _condition_entry, _metric, audio_outputs, degrade, group_subset
    from pianoeval.training.checkpoints import load_trained_module
    from pianoeval.training.registry import build_frozen_backbone

    manifest = read_manifest(results / "render" / "manifest.parquet")
    labels, row_of = label_matrix(manifest), {sid: i for i, sid in enumerate(manifest["segment_id"])}
    sr, rob = int(config["render"]["sample_rate"]), config["robustness"]
    backbone = build_frozen_backbone(config["audio"]["backbone"], BackboneSettings.from_config(config))
    preds: dict[str, list[np.ndarray]] = {"clean": []}
    targets, groups = [], []
    for spec in read_json(results / "folds" / "folds.json")["folds"]:
        fold = int(spec["fold"])
        module = load_trained_module(results / "train" / "audio" / model / f"fold_{fold}")
        ids = [s for s in spec["val"] if s in row_of and isinstance(manifest["audio_path"].iloc[row_of[s]], str)]
        g = manifest["segment_group"].iloc[[row_of[s] for s in ids]].to_numpy()
        rows = [row_of[ids[i]] for i in group_subset(g, int(rob["audio_per_fold"]))]
        targets.append(labels[rows])
        groups.append(manifest["segment_group"].iloc[rows].to_numpy())
        waves = [load_audio(manifest["audio_path"].iloc[r], sample_rate=sr) for r in rows]

        def score(ws: list[np.ndarray], module: Any = module) -> np.ndarray:
            return audio_outputs(module, backbone, ws, sr, float(config["audio"]["clip_seconds"]))[1].numpy()

        preds["clean"].append(score(waves))
        augmentor = AudioAugmentor(seed=int(config["seed"]) + fold, sample_rate=sr)
        for name, chain in conds:
            lib = library_degrader(chain, ir_dir, sr)
            preds.setdefault(f"ours/{name}", []).append(score([degrade(w, chain, augmentor) for w in waves]))
            seeds = [int(config["seed"]) + fold * 100_000 + r for r in rows]  # per recording, as views are
            preds.setdefault(f"audiomentations/{name}", []).append(
                score([lib(w, s) for w, s in zip(waves, seeds, strict=True)])
            )
    y, veto = np.concatenate(targets), float(rob["veto_drop_pct"])
    g = np.unique(np.concatenate(groups), return_inverse=True)[1]
    clean = np.concatenate(preds["clean"])
    out: dict[str, Any] = {"n_segments": len(y), "clean": _metric(clean, y, g)}
    for impl in ("ours", "audiomentations"):
        out[impl] = {n: _condition_entry(clean, np.concatenate(preds[f"{impl}/{n}"]), y, g, veto) for n, _ in conds}
        out[impl]["worst_drop_pct"] = float(max(c["score_drop_pct"] for c in out[impl].values()))
    return out


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
        "versions": {p: version(p) for p in ("audiomentations", "scipy", "numpy", "python-stretch")},
    }


def main() -> None:
    """Run the comparison on a trained model's folds and write the JSON report."""
    from pianoeval.audio.io import load_audio
    from pianoeval.core.config import load_config
    from pianoeval.data.manifest import read_manifest
    from pianoeval.evaluation.robustness import conditions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--model", default="probe")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--speed-seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    sr = int(config["render"]["sample_rate"])
    conds = conditions(config["robustness"]["snr_db"])
    report: dict[str, Any] = {"command": "scripts/bench_augment.py", "args": {k: str(v) for k, v in vars(args).items()}}
    report["machine_before"] = machine()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ir_dir = write_ir_bank(AudioAugmentor(seed=int(config["seed"]), sample_rate=sr), Path(tmp) / "irs", sr)
        paths = read_manifest(args.results / "render" / "manifest.parquet")["audio_path"].dropna()
        wave = np.concatenate([load_audio(p, sample_rate=sr) for p in paths.iloc[:12]])
        wave = wave[: round(args.speed_seconds * sr)]
        report["speed_s_per_audio_s"] = speed(conds, wave, sr, ir_dir, args.repeats)
        report["determinism"] = determinism(conds, wave[: 5 * sr], sr, ir_dir)
        report["robustness"] = drops(config, args.model, args.results, ir_dir, conds)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["machine_after"] = machine()
    write_json(report, args.out)


if __name__ == "__main__":
    main()
