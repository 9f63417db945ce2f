"""Bad input and a hostile machine, through the `pianoeval` command.

Every case must end in one `error: <file>: <problem>` line and exit status 1 with nothing partial
written, or, for the per-file steps (featurize, render, embed), skip the bad file, list it in the
skipped-files report and go on, failing only when too many files (or all) are bad. Clipped and
48 kHz stereo audio are accepted (with a warning for clipping): they are recordings, not errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pretty_midi
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import yaml

from pianoeval.cli import main
from pianoeval.core.io import read_json
from pianoeval.data.manifest import read_manifest, write_manifest
from pianoeval.data.midi import MAX_FILE_BYTES, Performance, write_performance

VENV_BIN = Path(sys.executable).parent
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="needs fluidsynth + FluidR3"
)


# -- helpers --------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """Run `pianoeval <args>` in this process; return (exit status, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The one `error:` line of a failed command's stderr (asserting there is exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def files(folder: Path) -> list[str]:
    """Every file below `folder` (hidden temporary files included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def write_config(path: Path, **sections: object) -> Path:
    """A config YAML with the given top-level sections (the rest default)."""
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A small demo corpus: 3 pieces x 3 performances, labelled, with score MIDIs."""
    from pianoeval.data.demo import generate_demo_corpus

    return generate_demo_corpus(tmp_path_factory.mktemp("corpus"), n_pieces=3, n_performances=3, seconds=3.0, seed=1)


def manifest_with(corpus: pd.DataFrame, path: Path, extra: dict[str, str | None] | None = None, keep: int = 9) -> Path:
    """Write the first `keep` corpus rows (plus one copy of the first row with `extra` fields, id `bad`)."""
    df = corpus.head(keep).copy()
    if extra is not None:
        bad = corpus.iloc[[0]].copy()
        bad["segment_id"] = "bad"
        for key, value in extra.items():
            bad[key] = value
        df = pd.concat([df, bad], ignore_index=True)
    return write_manifest(df, path)


# -- bad MIDI -------------------------------------------------------------------------------------


def _pedal_only(path: Path) -> None:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.control_changes += [pretty_midi.ControlChange(64, 127, 0.0), pretty_midi.ControlChange(64, 0, 2.0)]
    pm.instruments.append(piano)
    pm.write(str(path))


def _huge_file(path: Path) -> None:
    with open(path, "wb") as f:  # sparse: no disk space used, but st_size says 17 MiB
        f.write(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0")
        f.truncate(MAX_FILE_BYTES + 2**20)


BAD_MIDI: dict[str, tuple[Callable[[Path], object], str]] = {
    "corrupt": (lambda p: p.write_bytes(b"MThd this is not a MIDI file " * 8), "not a readable MIDI file"),
    "empty": (lambda p: p.write_bytes(b""), r"MIDI file is empty \(0 bytes\)"),
    "pedal_only": (_pedal_only, r"MIDI file has no notes \(only metadata or pedal events\)"),
    "huge_duration": (
        lambda p: write_performance(Performance(np.array([[0.0, 0.5, 60, 80], [4000.0, 4001.0, 62, 80]])), p),
        "MIDI lasts 4001 s, more than the 3600 s limit",
    ),
    "huge_file": (_huge_file, "MIDI file is 17 MB, more than the 16 MB limit"),
    "missing": (lambda p: None, r"cannot read MIDI file \(No such file or directory\)"),
}


def bad_midi(case: str, folder: Path) -> tuple[Path, str]:
    """Write one kind of unusable MIDI in `folder`: (path, regex of the reason)."""
    make, reason = BAD_MIDI[case]
    path = folder / f"{case}.mid"
    make(path)
    return path, reason


@pytest.mark.parametrize("case", list(BAD_MIDI), ids=list(BAD_MIDI))
def test_bad_midi_is_skipped_and_reported(
    case: str, corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    path, reason = bad_midi(case, tmp_path)
    manifest = manifest_with(corpus, tmp_path / "manifest.parquet", {"midi_path": str(path)})
    out = tmp_path / "out" / "stats.pt"
    config = write_config(tmp_path / "c.yaml", max_skipped_fraction=0.2)
    code, err = run_cli(
        capsys, "featurize", "stats", "--config", config, "--manifest", manifest, "--out", out,
        "--skipped", tmp_path / "reports" / "stats.json", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert code == 0, err
    assert files(tmp_path / "out") == ["stats.pt"]  # the report goes where --skipped says, nowhere else
    report = read_json(tmp_path / "reports" / "stats.json")
    assert [(s["key"], s["path"]) for s in report["skipped"]] == [("bad", str(path))]
    assert re.search(reason, report["skipped"][0]["reason"])
    items = torch.load(out, weights_only=False)["items"]
    assert "bad" not in items and set(corpus["segment_id"]) <= set(items)
    assert report["n_done"] == len(items) == 9 + corpus["score_midi_path"].nunique()


@pytest.mark.parametrize("case", list(BAD_MIDI), ids=list(BAD_MIDI))
def test_a_bad_midi_alone_fails_naming_it(
    case: str, corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    path, reason = bad_midi(case, tmp_path)
    df = corpus.iloc[[0]].assign(midi_path=str(path), score_midi_path=None)
    manifest = write_manifest(df, tmp_path / "manifest.parquet")
    code, err = run_cli(
        capsys, "featurize", "curves", "--manifest", manifest, "--out", tmp_path / "out" / "curves.pt",
        "--cache-dir", tmp_path / "out" / "cache",
    )  # fmt: skip
    assert code == 1
    line = error_line(err)
    assert line.startswith(f"error: {manifest}: featurize curves: the only file failed ({path}: ")
    assert re.search(reason, line)
    assert files(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["tokens", "graphs", "curves", "stats"])
def test_every_featurizer_keeps_going_below_the_threshold(
    kind: str, corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, _ = bad_midi("corrupt", tmp_path)
    pedal, _ = bad_midi("pedal_only", tmp_path)
    bad_rows = [
        corpus.iloc[[0]].assign(segment_id="bad1", midi_path=str(corrupt)),
        corpus.iloc[[1]].assign(segment_id="bad2", midi_path=str(pedal)),
    ]
    df = pd.concat([corpus, *bad_rows], ignore_index=True)
    manifest = write_manifest(df, tmp_path / "manifest.parquet")
    n_jobs = len(df) + corpus["score_midi_path"].nunique()
    args = ["featurize", kind, "--manifest", manifest, "--cache-dir", tmp_path / "cache"]

    # 2 of 14 files (14%) is more than the default 10%: the step fails and writes nothing...
    code, err = run_cli(capsys, *args, "--out", tmp_path / "strict" / f"{kind}.pt")
    assert code == 1
    assert f"2 of {n_jobs} files failed (14%, more than max_skipped_fraction 0.1)" in error_line(err)
    assert str(corrupt) in err and str(pedal) in err
    assert files(tmp_path / "strict") == []

    # ... and keeps going under a looser threshold, leaving the bad rows out.
    config = write_config(tmp_path / "c.yaml", max_skipped_fraction=0.25, features={"max_seq_len": 256})
    code, err = run_cli(capsys, *args, "--config", config, "--out", tmp_path / "loose" / f"{kind}.pt")
    assert code == 0, err
    store = torch.load(tmp_path / "loose" / f"{kind}.pt", weights_only=False)
    assert sorted(s["key"] for s in store["skipped"]) == ["bad1", "bad2"]
    assert len(store["items"]) == n_jobs - 2 and not {"bad1", "bad2"} & set(store["items"])
    assert read_json(tmp_path / "loose" / f"{kind}.skipped.json")["n_skipped"] == 2


def test_downstream_training_drops_skipped_rows(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, _ = bad_midi("corrupt", tmp_path)
    # The bad performance is a labelled member of a piece, so the folds list it.
    df = pd.concat([corpus, corpus.iloc[[0]].assign(segment_id="bad", midi_path=str(corrupt))], ignore_index=True)
    manifest = write_manifest(df, tmp_path / "manifest.parquet")
    config = write_config(tmp_path / "c.yaml", max_skipped_fraction=0.2, folds={"k": 2})
    code, _ = run_cli(capsys, "folds", "--config", config, "--manifest", manifest, "--out", tmp_path / "folds.json")
    assert code == 0
    features = tmp_path / "stats.pt"
    code, _ = run_cli(
        capsys, "featurize", "stats", "--config", config, "--manifest", manifest, "--out", features,
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert code == 0
    folds = read_json(tmp_path / "folds.json")
    fold = next(f["fold"] for f in folds["folds"] if "bad" in f["train"] + f["dev"] + f["val"])
    out = tmp_path / "train"
    code, err = run_cli(
        capsys, "train", "symbolic", "baseline_ridge", "--config", config, "--fold", fold, "--manifest", manifest,
        "--folds", tmp_path / "folds.json", "--features", features, "--out-dir", out,
    )  # fmt: skip
    assert code == 0, err
    metrics = read_json(out / "metrics.json")
    assert metrics["n_missing_features"] == 1
    predicted = pd.read_csv(out / "predictions.csv")["segment_id"]
    assert "bad" not in set(predicted) and len(predicted) == len(corpus)


# -- bad audio ------------------------------------------------------------------------------------


def _piano_like(seconds: float, rate: int) -> np.ndarray:
    """A mono test signal [S]: decaying harmonic tones, one per half second, peak about 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.zeros_like(t)
    for k, onset in enumerate(np.arange(0.0, seconds, 0.5)):
        f0 = 220.0 * 2 ** (k % 5 / 12)
        dt = np.clip(t - onset, 0.0, None)
        env = np.where(t >= onset, np.exp(-3.0 * dt), 0.0)
        wave += env * sum(np.sin(2 * np.pi * f0 * h * dt) / h for h in (1, 2, 3))
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def _audio(case: str, folder: Path) -> Path:
    """Write one kind of audio file in `folder`."""
    path = folder / f"{case}.wav"
    wave = _piano_like(3.0, 24_000)
    if case == "good":
        sf.write(path, wave, 24_000, subtype="FLOAT")
    elif case == "clipped":  # 3x gain into a hard limit: about 2% of the samples at full scale
        sf.write(path, np.clip(3 * wave, -1, 1), 24_000, subtype="FLOAT")
    elif case == "stereo_48k":
        mono = _piano_like(3.0, 48_000)
        sf.write(path, np.stack([mono, mono], axis=1), 48_000, subtype="PCM_16")
    elif case == "zero_length":
        sf.write(path, np.zeros(0, np.float32), 24_000, subtype="FLOAT")
    elif case == "nan":
        nan = np.where(np.arange(wave.size) % 1000 == 7, np.nan, wave).astype(np.float32)
        sf.write(path, nan, 24_000, subtype="FLOAT")  # PCM would turn the NaNs into zeros
    return path


def test_embed_accepts_clipped_and_stereo_48k_and_skips_broken_audio(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cases = ["good", "clipped", "stereo_48k", "zero_length", "nan"]
    df = corpus.head(len(cases)).copy()
    df["audio_path"] = [str(_audio(c, tmp_path)) for c in cases]
    manifest = write_manifest(df, tmp_path / "render.parquet")
    config = write_config(tmp_path / "c.yaml", max_skipped_fraction=0.5)
    out = tmp_path / "out" / "logmel.pt"
    with caplog.at_level("WARNING"):
        code, err = run_cli(
            capsys, "embed", "logmel", "--config", config, "--manifest", manifest, "--out", out,
            "--cache-dir", tmp_path / "cache",
        )  # fmt: skip
    assert code == 0, err
    store = torch.load(out, weights_only=False)
    by_case = dict(zip(cases, df["segment_id"], strict=True))
    assert set(store["items"]) == {by_case["good"], by_case["clipped"], by_case["stereo_48k"]}
    reasons = {s["path"]: s["reason"] for s in read_json(tmp_path / "out" / "logmel.skipped.json")["skipped"]}
    assert reasons == {
        str(tmp_path / "zero_length.wav"): "audio file has no samples",
        str(tmp_path / "nan.wav"): "audio contains NaN or infinite samples",
    }
    # Clipping is worth a warning naming the file, not a refusal.
    assert any("clipped.wav: audio is clipped" in r.getMessage() for r in caplog.records)
    # 48 kHz stereo is mixed down and resampled: the same frames as the 24 kHz mono take.
    good = store["items"][by_case["good"]]["audio_emb"]
    stereo = store["items"][by_case["stereo_48k"]]["audio_emb"]
    assert stereo.shape == good.shape
    assert torch.corrcoef(torch.stack([good.flatten(), stereo.flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize(
    ("case", "reason"),
    [("nan", "audio contains NaN or infinite samples"), ("zero_length", "audio file has no samples")],
    ids=["nan", "zero_length"],
)
def test_broken_audio_alone_fails_naming_it(
    case: str, reason: str, corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _audio(case, tmp_path)
    manifest = write_manifest(corpus.head(1).assign(audio_path=str(path)), tmp_path / "render.parquet")
    code, err = run_cli(
        capsys, "embed", "logmel", "--manifest", manifest, "--out", tmp_path / "out" / "logmel.pt",
        "--cache-dir", tmp_path / "out" / "cache",
    )  # fmt: skip
    assert code == 1
    assert error_line(err) == f"error: {manifest}: embed logmel: the only file failed ({path}: {reason})"
    assert files(tmp_path / "out") == []


@needs_fluidsynth
def test_render_skips_a_bad_midi_and_embed_drops_its_row(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, _ = bad_midi("corrupt", tmp_path)
    manifest = manifest_with(corpus, tmp_path / "manifest.parquet", {"midi_path": str(corrupt)}, keep=3)
    config = write_config(tmp_path / "c.yaml", max_skipped_fraction=0.3)
    rendered = tmp_path / "render" / "manifest.parquet"
    code, err = run_cli(
        capsys, "render", "--config", config, "--manifest", manifest, "--audio-dir", tmp_path / "render" / "audio",
        "--out", rendered,
    )  # fmt: skip
    assert code == 0, err
    report = read_json(tmp_path / "render" / "skipped.json")
    assert [(s["key"], s["path"]) for s in report["skipped"]] == [("bad", str(corrupt))]
    assert report["n_done"] == 3
    df = read_manifest(rendered)
    assert df.set_index("segment_id")["audio_path"].isna().to_dict() == {
        **dict.fromkeys(corpus["segment_id"].head(3), False),
        "bad": True,
    }
    code, err = run_cli(
        capsys, "embed", "logmel", "--config", config, "--manifest", rendered, "--out", tmp_path / "logmel.pt",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert code == 0, err
    assert set(torch.load(tmp_path / "logmel.pt", weights_only=False)["items"]) == set(corpus["segment_id"].head(3))


# -- bad manifests and labels ---------------------------------------------------------------------


def test_duplicated_segment_ids_fail_naming_the_manifest(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_manifest(corpus, tmp_path / "good.parquet")
    table = pq.read_table(good)
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.concat_tables([table, table.slice(4, 1)]), dup)  # write_manifest would refuse it
    sid = corpus["segment_id"].iloc[4]
    for args in (
        ["folds", "--manifest", dup, "--out", tmp_path / "out" / "folds.json"],
        ["featurize", "stats", "--manifest", dup, "--out", tmp_path / "out" / "s.pt", "--cache-dir", tmp_path / "c"],
    ):
        code, err = run_cli(capsys, *args)
        assert code == 1
        assert error_line(err) == f"error: {dup}: duplicated segment_id(s): {sid}"
    assert files(tmp_path / "out") == [] and files(tmp_path / "c") == []


def test_no_labels_at_all_fails_the_folds_naming_the_manifest(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(corpus.assign(labels=None, label_std=None), tmp_path / "unlabelled.parquet")
    config = write_config(tmp_path / "c.yaml", folds={"k": 2})
    code, err = run_cli(capsys, "folds", "--config", config, "--manifest", manifest, "--out", tmp_path / "f.json")
    assert code == 1
    assert error_line(err) == (f"error: {manifest}: cannot make k=2 folds from 0 segment group(s) of labelled segments")
    assert not (tmp_path / "f.json").exists()


def test_a_segment_that_lost_its_labels_fails_training_naming_the_manifest(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(corpus, tmp_path / "manifest.parquet")
    config = write_config(tmp_path / "c.yaml", folds={"k": 2})
    code, _ = run_cli(capsys, "folds", "--config", config, "--manifest", manifest, "--out", tmp_path / "folds.json")
    assert code == 0
    features = tmp_path / "stats.pt"
    assert run_cli(
        capsys, "featurize", "stats", "--manifest", manifest, "--out", features, "--cache-dir", tmp_path / "cache"
    )[0] == 0  # fmt: skip
    # The manifest is rebuilt without one segment's labels, but the folds still list it.
    sid = read_json(tmp_path / "folds.json")["folds"][0]["train"][0]
    relabelled = corpus.copy()
    relabelled.loc[relabelled["segment_id"] == sid, ["labels", "label_std"]] = None
    stale = write_manifest(relabelled, tmp_path / "relabelled.parquet")
    out = tmp_path / "train"
    code, err = run_cli(
        capsys, "train", "symbolic", "baseline_mean", "--config", config, "--fold", 0, "--manifest", stale,
        "--folds", tmp_path / "folds.json", "--features", features, "--out-dir", out,
    )  # fmt: skip
    assert code == 1
    assert error_line(err) == (
        f"error: {stale}: segment {sid} of fold 0 has no labels in the manifest; rebuild the folds from it"
    )
    assert not out.exists()


# -- bad configuration ----------------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown_model": (
        {"symbolic": {"models": ["s1", "s9"]}},
        "config key symbolic.models.1: 's9' is not one of ['s1', 's2', 's3', 's1_deep', 's2_deep', 's3_deep']",
    ),
    "unknown_audio_model": (
        {"audio": {"models": ["probe", "a9"]}},
        "config key audio.models.1: 'a9' is not one of "
        "['probe', 'probe_logmel', 'probe_muq', 'probe_transkun', 'a1', 'a2', 'a3']",
    ),
    "typo_key": (
        {"trainig": {"max_epochs": 3}},
        "config key (top level): Additional properties are not allowed ('trainig' was unexpected)",
    ),
    "bad_threshold": ({"max_skipped_fraction": 1.5}, "config key max_skipped_fraction: 1.5 is greater than"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_fails_naming_the_file_and_key(
    case: str, corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, message = BAD_CONFIGS[case]
    config = write_config(tmp_path / "bad.yaml", **content)
    manifest = write_manifest(corpus, tmp_path / "manifest.parquet")
    code, err = run_cli(capsys, "folds", "--config", config, "--manifest", manifest, "--out", tmp_path / "out" / "f")
    assert code == 1
    assert error_line(err).startswith(f"error: {config}: {message}")
    assert files(tmp_path / "out") == []


def test_workflow_refuses_an_unknown_model_before_running_anything(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", symbolic={"models": ["s1", "s9"]})
    result = subprocess.run(
        [VENV_BIN / "snakemake", "-s", Path(__file__).parents[1] / "Snakefile", "--directory", tmp_path, "-n",
         "--configfile", Path(__file__).parents[1] / "config" / "config.yaml", config],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "'s9' is not one of ['s1', 's2', 's3', 's1_deep', 's2_deep', 's3_deep']" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("track", "model"), [("symbolic", "s9"), ("symbolic", "probe"), ("audio", "s1")], ids=["unknown", "probe", "s1"]
)
def test_train_refuses_a_model_not_of_its_track_before_writing(
    track: str, model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train"
    code, err = run_cli(
        capsys, "train", track, model, "--fold", 0, "--manifest", tmp_path / "m.parquet", "--folds",
        tmp_path / "folds.json", "--features", tmp_path / "f.pt", "--out-dir", out,
    )  # fmt: skip
    assert code == 1
    assert error_line(err).startswith(f"error: unknown {track} model '{model}'; known: ")
    assert not out.exists()


# -- a hostile machine: read-only folder, full disk -----------------------------------------------


def _without_dac_override() -> None:
    """preexec_fn for root: drop CAP_DAC_OVERRIDE, without which root too obeys a folder's mode."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def test_read_only_results_folder(corpus: pd.DataFrame, tmp_path: Path) -> None:
    manifest = write_manifest(corpus, tmp_path / "manifest.parquet")
    config = write_config(tmp_path / "c.yaml", folds={"k": 2})
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        for out in (results / "folds.json", results / "folds" / "folds.json"):
            # A real process with real permissions: the mode is enforced by the kernel, not mocked.
            proc = subprocess.run(
                [VENV_BIN / "pianoeval", "folds", "--config", config, "--manifest", manifest, "--out", out],
                capture_output=True, text=True, timeout=300,
                preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
            )  # fmt: skip
            assert proc.returncode == 1, proc.stderr
            assert error_line(proc.stderr) == (
                f"error: {out}: cannot write (Permission denied); make the folder writable or choose another output"
                " folder"
            )
            assert "Traceback" not in proc.stderr
        assert files(results) == []
    finally:
        results.chmod(0o755)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder on a "full disk": every atomic write below it goes to /dev/full (ENOSPC on write)."""
    folder = tmp_path / "full"
    folder.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(suffix: str = "", prefix: str = "tmp", dir: str | None = None, text: bool = False):
        if dir is None or not Path(dir).resolve().is_relative_to(folder):
            return real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)
        fd, name = real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)  # writes through it fail as they would on a full disk
        return os.open(name, os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert os.path.exists("/dev/full")
    return folder


def _assert_disk_full_error(err: str, target: Path) -> None:
    assert error_line(err) == (
        f"error: {target}: cannot write (No space left on device); free some space (or write elsewhere) and rerun"
    )


def test_disk_full_while_writing_json(
    corpus: pd.DataFrame, tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(corpus, tmp_path / "manifest.parquet")
    config = write_config(tmp_path / "c.yaml", folds={"k": 2})
    out = full_disk / "folds" / "folds.json"
    code, err = run_cli(capsys, "folds", "--config", config, "--manifest", manifest, "--out", out)
    assert code == 1
    _assert_disk_full_error(err, out)
    assert files(full_disk) == []


def test_disk_full_stops_featurizing_instead_of_skipping_every_file(
    corpus: pd.DataFrame, tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(corpus, tmp_path / "manifest.parquet")
    # The cache cannot be written: that is no file's fault, so the step stops at the first file.
    code, err = run_cli(
        capsys, "featurize", "stats", "--manifest", manifest, "--out", tmp_path / "out" / "stats.pt",
        "--cache-dir", full_disk / "cache",
    )  # fmt: skip
    assert code == 1
    assert "skipped" not in err
    line = error_line(err)
    assert line.startswith(f"error: {full_disk / 'cache'}/") and "No space left on device" in line
    assert files(full_disk) == [] and files(tmp_path / "out") == []
    # With a warm cache the store itself is what cannot be written (torch.save through save_torch).
    cache = tmp_path / "cache"
    args = ["featurize", "stats", "--manifest", manifest, "--cache-dir", cache]
    assert run_cli(capsys, *args, "--out", tmp_path / "warm" / "stats.pt")[0] == 0
    out = full_disk / "features" / "stats.pt"
    code, err = run_cli(capsys, *args, "--out", out)
    assert code == 1
    _assert_disk_full_error(err, out)
    assert files(full_disk) == []


@needs_fluidsynth
def test_os_errors_outside_atomic_writes_are_one_line(
    corpus: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(corpus, tmp_path / "manifest.parquet")
    (tmp_path / "render").write_text("a file where the audio folder should go")
    code, err = run_cli(
        capsys, "render", "--manifest", manifest, "--audio-dir", tmp_path / "render" / "audio",
        "--out", tmp_path / "out" / "manifest.parquet",
    )  # fmt: skip
    assert code == 1
    audio_dir = tmp_path / "render" / "audio"
    assert error_line(err) == f"error: {audio_dir}: Not a directory (rerun with -v for the traceback)"
    assert "Traceback" not in err
    assert files(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("n_bad", "total", "max_fraction", "message"),
    [
        (0, 4, 0.0, None),
        (1, 10, 0.1, None),  # exactly the threshold: still fine
        (2, 10, 0.1, "step: 2 of 10 files failed (20%, more than max_skipped_fraction 0.1): f0.mid: bad; f1.mid: bad"),
        (3, 3, 1.0, "step: all 3 files failed (f0.mid: bad; f1.mid: bad; f2.mid: bad)"),
        (
            5,
            5,
            1.0,
            "step: all 5 files failed (f0.mid: bad; f1.mid: bad; f2.mid: bad; ... (5 in all, each in the log))",
        ),
    ],
    ids=["none", "at-threshold", "above-threshold", "all", "all-many"],
)
def test_skipped_share_threshold(n_bad: int, total: int, max_fraction: float, message: str | None) -> None:
    from pianoeval.core.errors import InputError
    from pianoeval.core.skipped import check_skipped, skip_entry

    skipped = [skip_entry(f"k{i}", f"f{i}.mid", InputError("bad")) for i in range(n_bad)]
    if message is None:
        check_skipped("step", skipped, total, max_fraction, "m.parquet")
        return
    with pytest.raises(InputError) as info:
        check_skipped("step", skipped, total, max_fraction, "m.parquet")
    assert str(info.value) == f"m.parquet: {message}"
