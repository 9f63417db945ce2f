"""Dataset fetching against a local bare git repository, and rebuilding PercePiano's index.csv."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pianoeval.core.constants import N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.data.asap import load_asap
from pianoeval.data.fetch import build_percepiano_index, count_note_ons, fetch_dataset
from pianoeval.data.manifest import labelled_mask
from pianoeval.data.percepiano import load_percepiano

MEAN = "label_2round_mean_reg_19_with0_rm_highstd0.json"
STD = "label_2round_std_reg_19_with0_rm_highstd0.json"
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=main"]


def _bare_remote(work: Path) -> tuple[Path, str]:
    """Commit `work` and return (bare clone standing in for the GitHub URL, commit sha)."""
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-q", "-m", "data"], check=True)
    sha = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    remote = work.parent / f"{work.name}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(remote)], check=True)
    return remote, sha.stdout.strip()


@pytest.fixture
def percepiano_remote(tmp_path: Path, tiny_midi: Callable[..., Path]) -> tuple[Path, str]:
    """A miniature PercePiano repository in the GitHub layout (leading-space file name included)."""
    for name in ("Foo_8bars_1_1", " Foo_8bars_2_1", "Foo_8bars_Score_1"):
        tiny_midi(f"raw/virtuoso/data/all_2rounds/{name}.mid")
    tiny_midi("raw/virtuoso/data/score_midi/Foo_8bars_Score_1.mid")
    raw = tmp_path / "raw"
    (raw / "virtuoso/data/score_xml").mkdir(parents=True)
    (raw / "virtuoso/data/score_xml/Foo_8bars_Score_1.musicxml").write_text("<score-partwise/>")
    (raw / "labels").mkdir()
    mean = {"Foo_8bars_1_1": [0.5] * N_DIMS + [0], "Foo_8bars_2_1": [0.25] * N_DIMS + [1]}
    std = {k: [0.1] * N_DIMS for k in mean}
    for folder in (raw / "labels", raw):
        (folder / MEAN).write_text(json.dumps(mean))
        (folder / STD).write_text(json.dumps(std))
    questions = [f"Question_{i}_1_1" for i in range(20)]
    ratings = pd.DataFrame(
        [
            [1, 1, "Foo_8bars_1_1.wav", *([4] * 20), ""],
            [2, 2, "Foo_8bars_1_1.wav", *([4] * 20), ""],
            [3, 3, "Foo_8bars_2_1.wav", *([4] * 20), ""],
            [4, 4, "Foo_8bars_2_1.wav", 9, *([4] * 19), ""],
        ],
        columns=["user", "dataID", "filename", *questions, "message"],
    )
    ratings.to_csv(raw / "labels/total_2rounds.csv", index=False)
    (raw / "LICENSE").write_text("MIT")
    return _bare_remote(raw)


def test_fetch_percepiano_from_local_remote(tmp_path: Path, percepiano_remote: tuple[Path, str]) -> None:
    remote, sha = percepiano_remote
    root = tmp_path / "data" / "percepiano"
    assert fetch_dataset("percepiano", root, url=str(remote), commit=sha) == root
    assert sorted(p.name for p in (root / "midi/performances").iterdir()) == [
        "Foo_8bars_1_1.mid", "Foo_8bars_2_1.mid", "Foo_8bars_Score_1.mid",
    ]  # fmt: skip
    index = pd.read_csv(root / "index.csv", dtype={"segment": str, "performer": str}).set_index("id")
    assert index["labeled"].to_dict() == {"Foo_8bars_1_1": 1, "Foo_8bars_2_1": 1, "Foo_8bars_Score_1": 0}
    assert index.at["Foo_8bars_1_1", "n_ratings"] == 2
    assert index.at["Foo_8bars_2_1", "n_ratings"] == 1  # the rater row with a 9 is dropped
    assert index.at["Foo_8bars_1_1", "n_notes"] == 5
    assert (root / "labels/repo_root_version" / MEAN).is_file()
    assert len(pd.read_csv(root / "labels/label_names.csv")) == N_DIMS
    df = load_percepiano(root)
    assert labelled_mask(df).tolist() == [True, True, False]
    assert [p.name for p in root.parent.iterdir()] == ["percepiano"]  # no temporary folder left
    # A finished fetch is not repeated: a dead URL is never contacted.
    assert fetch_dataset("percepiano", root, url=str(tmp_path / "gone.git")) == root


def test_fetch_asap_from_local_remote(tmp_path: Path, tiny_midi: Callable[..., Path]) -> None:
    tiny_midi("raw/Comp/Set/1/midi_score.mid")
    tiny_midi("raw/Comp/Set/1/Ann01M.mid")
    (tmp_path / "raw/metadata.csv").write_text("folder,midi_performance\nComp/Set/1,Comp/Set/1/Ann01M.mid\n")
    remote, sha = _bare_remote(tmp_path / "raw")
    root = fetch_dataset("asap", tmp_path / "asap", url=str(remote), commit=sha)
    assert not (root / ".git").exists()
    assert load_asap(root)["segment_id"].tolist() == ["asap::Comp/Set/1/Ann01M"]


@pytest.mark.parametrize("case", ["bad_url", "bad_commit"], ids=["bad_url", "bad_commit"])
def test_failed_fetch_leaves_nothing(case: str, tmp_path: Path, percepiano_remote: tuple[Path, str]) -> None:
    remote, _ = percepiano_remote
    url = str(tmp_path / "missing.git") if case == "bad_url" else str(remote)
    commit = "0" * 40 if case == "bad_commit" else None
    parent = tmp_path / "data"
    parent.mkdir()
    with pytest.raises(InputError, match="git") as info:
        fetch_dataset("percepiano", parent / "percepiano", url=url, commit=commit)
    assert info.value.path == url
    assert list(parent.iterdir()) == []


def test_fetch_refuses_unknown_name_and_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown dataset"):
        fetch_dataset("maestro", tmp_path / "m")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a finished percepiano fetch"):
        fetch_dataset("percepiano", tmp_path / "p", url=str(tmp_path / "none.git"))


def test_index_rebuilt_from_real_files_matches_index_csv(shared_data: Path) -> None:
    root = shared_data / "percepiano"
    ref = pd.read_csv(root / "index.csv", dtype={"segment": str, "performer": str})
    ours = build_percepiano_index(root, count_notes=False).set_index("id").loc[ref["id"]].reset_index()
    for col in ref.columns.drop("n_notes"):
        pd.testing.assert_series_equal(ours[col], ref[col], check_dtype=False, check_names=False, obj=col)
    # n_notes counts raw note-on events (pretty_midi drops unpaired ones: 98 for this file).
    n = ref.set_index("id")["n_notes"]
    for sid in (
        "Schubert_D935_no.3_4bars_Score_13",
        "Schubert_D960_mv2_16bars_8_06",
        "Beethoven_WoO80_thema_8bars_11_1",
    ):
        assert count_note_ons(root / f"midi/performances/{sid}.mid") == n[sid]


@pytest.mark.slow(reason="runs Snakemake over a scratch copy of the workflow: prepare, fetch from local git remotes")
def test_the_dag_fetches_missing_datasets_before_prepare(
    tmp_path: Path, percepiano_remote: tuple[Path, str], tiny_midi: Callable[..., Path]
) -> None:
    """A fresh instance without ../shared/data: the workflow requests `fetch` for PercePiano and ASAP
    (local git remotes standing in for GitHub, through data.fetch_sources), after the preflight
    checked that they answer, and `prepare` reads the fetched folders."""
    import os
    import sys

    import yaml
    from test_experiments import checkout

    tiny_midi("asap_raw/Comp/Set/1/midi_score.mid")
    tiny_midi("asap_raw/Comp/Set/1/Ann01M.mid")
    (tmp_path / "asap_raw/metadata.csv").write_text("folder,midi_performance\nComp/Set/1,Comp/Set/1/Ann01M.mid\n")
    asap_remote, asap_sha = _bare_remote(tmp_path / "asap_raw")
    remote, sha = percepiano_remote
    work = checkout(tmp_path / "instance" / "repo")
    experiment = {
        "run_name": "fresh_instance",
        "data": {
            "source": "percepiano",
            "percepiano_root": "missing/percepiano",
            "asap_root": "missing/asap",
            "fetch_sources": {
                "percepiano": {"url": str(remote), "commit": sha},
                "asap": {"url": str(asap_remote), "commit": asap_sha},
            },
        },
    }
    (work / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        ["snakemake", "--cores", "1", "--configfile", "experiment.yaml", "--", "results/prepare/manifest.parquet"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    ran = {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith(("rule ", "localrule "))}
    assert ran == {"fetch", "prepare"}  # the preflight is no job: it ran before them
    assert (work / "resources/percepiano/index.csv").is_file() and (work / "resources/asap/metadata.csv").is_file()
    manifest = pd.read_parquet(work / "results/prepare/manifest.parquet")
    assert set(manifest["source"]) == {"percepiano", "asap"}
    assert "asap::Comp/Set/1/Ann01M" in set(manifest["segment_id"])
    assert "Checking what this run needs (preflight)" in out and (work / "logs/preflight/ok.json").is_file()
