"""Experiments are named, complete files; profiles say where and which experiment, never science; a rule's
config holds only the sections it reads, without labels; two experiments never share a results folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pianoeval.core.config import RuleConfig, load_config, validate_config, write_resolved
from pianoeval.core.errors import ConfigError
from pianoeval.core.experiment import MARKER, check_experiment, record_experiment
from pianoeval.core.settings import FitSettings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = sorted((REPO / "config" / "experiments").glob("*.yaml"))
# Snakemake options a profile may set: where and how jobs run, and which experiment file.
PROFILE_KEYS = {
    "configfiles", "cores", "jobs", "executor", "resources", "default-resources", "set-resources", "printshellcmds",
    "keep-going", "rerun-incomplete", "latency-wait", "retries",
}  # fmt: skip


def test_shipped_experiments_are_complete_validated_files_named_after_their_run_name() -> None:
    assert {p.stem for p in EXPERIMENTS} >= {"percepiano", "percepiano_muq", "percepiano_muq_rehearsal"}
    for path in EXPERIMENTS:
        raw = yaml.safe_load(path.read_text())
        assert raw["run_name"] == path.stem, path
        load_config(path)  # validates alone: no other file is merged in
    assert yaml.safe_load((REPO / "config" / "config.yaml").read_text())["run_name"] == "demo"
    # The old overlays are gone: no experiment is a stack to remember.
    assert sorted(p.name for p in (REPO / "config").glob("*.yaml")) == ["config.schema.yaml", "config.yaml"]


def test_profiles_name_an_experiment_and_set_no_science() -> None:
    for profile in sorted((REPO / "profiles").iterdir()):
        files = sorted(p.name for p in profile.iterdir())
        assert files == ["config.yaml"], f"{profile}: a profile is one file of Snakemake options, got {files}"
        options = yaml.safe_load((profile / "config.yaml").read_text())
        assert set(options) <= PROFILE_KEYS, f"{profile}: {set(options) - PROFILE_KEYS}"
        for configfile in options.get("configfiles", []):
            assert configfile.startswith("config/experiments/") and (REPO / configfile).is_file(), configfile
    thunder = yaml.safe_load((REPO / "profiles" / "thunder" / "config.yaml").read_text())
    assert thunder["configfiles"] == ["config/experiments/percepiano_muq.yaml"]


def test_the_thunder_experiment_is_the_plans() -> None:
    config = load_config(REPO / "config" / "experiments" / "percepiano_muq.yaml")
    audio = config["audio"]
    assert audio["models"] == ["probe", "probe_logmel", "probe_transkun", "a1", "a2", "a3"]
    assert (audio["backbone"], audio["muq_pretrained"]) == ("muq", True)
    assert audio["muq_name_or_path"] == "OpenMuQ/MuQ-large-msd-iter"
    assert (audio["lora_rank"], audio["lora_alpha"], audio["lora_layers"], audio["hidden_layers"]) == (
        16,
        32,
        None,
        None,
    )
    assert audio["unfreeze_schedule"] is None and audio["backbone_lr"] is None  # layers 12..9, lr / 10
    assert config["unlabelled_audio"]["root"] == "../shared/data/asap_full"
    assert config["transcription"]["views"] == ["clean", "augmented"]


def test_the_rehearsal_differs_from_the_thunder_experiment_only_in_sizes() -> None:
    """Same models and settings; what differs is a size (or where the small MuQ lives)."""
    full = load_config(REPO / "config" / "experiments" / "percepiano_muq.yaml")
    small = load_config(REPO / "config" / "experiments" / "percepiano_muq_rehearsal.yaml")
    sizes = {
        "run_name", "data.limit_groups", "data.limit_per_group", "folds.k", "render.max_seconds",
        "features.max_seq_len", "features.frame_rate", "symbolic.hidden", "symbolic.layers", "symbolic.heads",
        "audio.muq_name_or_path", "audio.hidden", "audio.heads", "audio.self_supervised_epochs",
        "audio.clip_seconds", "audio.accumulate_grad_batches", "unlabelled_audio.pieces",
        "robustness.audio_per_fold", "robustness.transcribe_per_fold", "fusion.hidden", "training.max_epochs",
        "training.pretrain_epochs", "training.patience", "training.batch_size", "training.num_workers",
        "training.precision",
    }  # fmt: skip
    # The per-model budgets are sizes too (the encoders' epochs, patience and batches, and the weight
    # average's decay, a horizon in steps).
    sizes |= {
        f"training.by_model.{m}.{k}"
        for m in ("s1_deep", "s2_deep", "s3_deep", "s1", "s2", "s3")
        for k in ("batch_size", "max_epochs", "patience", "ema_decay")
    }

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "unfreeze_schedule" else {prefix + k: v}
        return out

    a, b = flat(dict(full)), flat(dict(small))
    assert {k for k in a if a[k] != b.get(k)} <= sizes


def test_a_rule_config_holds_only_its_sections_and_no_label(tmp_path: Path) -> None:
    config = validate_config({"run_name": "one", "training": {"max_epochs": 3}})
    path = write_resolved(config, tmp_path, ("training", "seed"))
    renamed = write_resolved({**config, "run_name": "two"}, tmp_path, ("training", "seed"))
    assert path == renamed  # the experiment's name is in no digest
    loaded = load_config(path)
    assert isinstance(loaded, RuleConfig) and set(loaded) == {"training", "seed"}
    assert loaded["training"]["max_epochs"] == 3
    with pytest.raises(ConfigError, match="config section 'audio' is not among this rule's"):
        loaded["audio"]
    # A person's own config file (no section list) still gets every section's defaults.
    assert "audio" in load_config(REPO / "config" / "config.yaml")


def test_results_folder_refuses_another_experiment(tmp_path: Path) -> None:
    results = tmp_path / "results"
    check_experiment(results, "demo")  # nothing recorded yet
    record_experiment(results, "demo", [])
    check_experiment(results, "demo")
    with pytest.raises(ConfigError, match="holds experiment 'demo', not 'percepiano_cpu'"):
        check_experiment(results, "percepiano_cpu")


def checkout(dest: Path) -> Path:
    """A copy of the workflow (what a fresh clone holds) beside a link to the shared data."""
    dest.mkdir(parents=True)
    for name in ("Snakefile", "rules", "config", "workflow", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    shared = REPO.parent / "shared"
    if shared.exists() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(shared.resolve())
    return dest


def snakemake(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`snakemake ARGS` in `cwd` with the venv first on PATH."""
    env = {**os.environ, **(env or {}), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "snakemake"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_workflow_refuses_to_run_an_experiment_over_another_ones_results(tmp_path: Path) -> None:
    work = checkout(tmp_path / "repo")
    record_experiment(work / "results", "demo", [])
    run = snakemake(work, "-n", "--cores", "1", "--configfile", "config/experiments/percepiano_cpu.yaml")
    assert run.returncode != 0
    expected = f"error: results/{MARKER}: holds experiment 'demo', not 'percepiano_cpu'"
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(expected), run.stdout + run.stderr
    assert snakemake(work, "-n", "--cores", "1").returncode == 0  # the demo itself goes on


def test_the_exact_command_of_the_readme_dry_runs_after_the_profiles_are_linked(tmp_path: Path) -> None:
    """`snakemake --profile thunder results/fusion/winner.json` as typed, from the repository root, after
    bootstrap's profile link (scripts/link_profiles.sh into a private XDG_CONFIG_HOME)."""
    command = "snakemake --profile thunder results/fusion/winner.json"
    assert command in (REPO / "README.md").read_text()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    work = checkout(tmp_path / "repo")
    before = snakemake(work, *command.split()[1:], "-n", env=env)
    assert before.returncode != 0 and "no profile.yaml (or config.yaml) found" in before.stderr
    link = subprocess.run(["bash", str(REPO / "scripts" / "link_profiles.sh")], env={**os.environ, **env})
    assert link.returncode == 0
    assert (tmp_path / "xdg" / "snakemake" / "thunder").resolve() == (REPO / "profiles" / "thunder").resolve()
    run = snakemake(work, *command.split()[1:], "-n", env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout + run.stderr
    assert "config/experiments/percepiano_muq.yaml" in out
    for job in ("render_unlabelled", "embed", "train", "fuse", "robustness", "fusion"):
        assert any(line.split()[:1] == [job] for line in out.splitlines()), job


def test_profile_links_replace_a_dangling_link_and_keep_a_foreign_one(tmp_path: Path) -> None:
    """A link left by a deleted checkout is replaced; a profile of another project is left alone and
    not reported as linked."""
    dest = tmp_path / "xdg" / "snakemake"
    dest.mkdir(parents=True)
    (dest / "thunder").symlink_to(tmp_path / "deleted" / "profiles" / "thunder")
    foreign = tmp_path / "other" / "profiles" / "local"
    foreign.mkdir(parents=True)
    (dest / "local").symlink_to(foreign)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    run = subprocess.run(["bash", str(REPO / "scripts" / "link_profiles.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (dest / "thunder").resolve() == (REPO / "profiles" / "thunder").resolve()
    assert (dest / "local").resolve() == foreign.resolve()
    assert "local" not in run.stdout.split("profiles ", 1)[1].split(" linked")[0].split()


def test_the_audio_tracks_networks_build_from_the_audio_rules_sections_alone(tmp_path: Path) -> None:
    """The train rule gives the audio track `audio, render, training, seed`: no audio network reads more."""
    from pianoeval.training.registry import build_module, build_network

    config = validate_config(
        {
            "audio": {
                "backbone": "muq",
                "muq_pretrained": False,
                "muq_small": {"encoder_dim": 16, "encoder_depth": 2, "heads": 2, "conv_dim": 4},
            }
        }
    )
    rule = load_config(write_resolved(config, tmp_path, ("audio", "render", "training", "seed")))
    settings = FitSettings.from_config(rule)
    assert settings.symbolic is None and settings.features is None  # not the audio track's sections
    meta = {"dim": 8, "n_stats": 16}
    for model in ("probe", "probe_logmel", "a1", "a3"):
        build_module(model, build_network(model, meta, settings), settings, label_mean=None)
