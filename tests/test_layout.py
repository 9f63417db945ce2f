"""The results layout: one type names a fold folder's files and results/'s folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pianoeval.core.errors import InputError
from pianoeval.core.layout import FoldDir, Results


def test_fold_dir_names_every_file(tmp_path: Path) -> None:
    fold = Results(tmp_path).fold("symbolic", "s3", 2)
    assert fold.path == tmp_path / "train" / "symbolic" / "s3" / "fold_2"
    assert fold.metrics.name == "metrics.json" and fold.predictions.name == "predictions.csv"
    assert fold.embeddings.name == "embeddings.pt" and fold.model_spec.name == "model_spec.json"
    assert fold.config.name == "config.yaml" and fold.provenance.name == "provenance.json"
    assert fold.last_checkpoint == fold.path / "checkpoints" / "last.ckpt"
    assert Results(tmp_path).fold("fusion", "f2", 0).path == tmp_path / "fuse" / "f2" / "fold_0"


def test_checkpoint_prefers_best_and_names_the_folder_without_any(tmp_path: Path) -> None:
    fold = FoldDir(tmp_path / "fold_0")
    with pytest.raises(InputError, match="no checkpoint") as info:
        fold.checkpoint()
    assert info.value.path == str(fold.path)
    fold.checkpoints.mkdir(parents=True)
    fold.last_checkpoint.write_bytes(b"x")
    assert fold.checkpoint() == fold.last_checkpoint
    fold.best_checkpoint.write_bytes(b"y")
    assert fold.checkpoint() == fold.best_checkpoint
    fold.model.write_bytes(b"z")  # the declared weights come first (best/last: older folders, bundles)
    assert fold.checkpoint() == fold.model == fold.path / "model.ckpt"


def test_rules_declare_the_fold_files_by_their_layout_names() -> None:
    """The train, train_inner and fuse rules declare every file FoldDir names (train_inner: no
    predictions or embeddings, it writes oof.pt), and the curves as logs."""
    import re

    rules = Path(__file__).resolve().parents[1] / "rules"
    text = (rules / "train.smk").read_text() + (rules / "fusion.smk").read_text()
    for rule in ("train", "train_inner", "fuse"):
        body = re.search(rf"^rule {rule}:\n(.*?)^    benchmark:|^rule {rule}:\n(.*?)^    conda:", text, re.M | re.S)
        block = next(g for g in body.groups() if g)
        declared = set(re.findall(r'fold_\{fold\}(?:/inner_\{inner\})?/([\w./]+)"', block))
        expected = set(FoldDir.FILES.values()) | {FoldDir.CURVES, FoldDir.HPARAMS}
        if rule == "train_inner":
            expected = expected - {"predictions.csv", "embeddings.pt"} | {"oof.pt"}
        assert declared == expected, (rule, declared ^ expected)


def test_folds_in_fold_order_and_a_missing_model_is_one_error(tmp_path: Path) -> None:
    results = Results(tmp_path)
    for k in (10, 2, 0):
        results.fold("audio", "probe", k).path.mkdir(parents=True)
    assert [f.path.name for f in results.folds("audio", "probe")] == ["fold_0", "fold_2", "fold_10"]
    with pytest.raises(InputError, match="no trained folds of audio/a1"):
        results.folds("audio", "a1")


@dataclass(frozen=True)
class Job:
    """One job of a dry run: its rule, declared files and shell command (split into words)."""

    rule: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    logs: tuple[str, ...]
    words: tuple[str, ...]

    def folders(self, option: str) -> list[str]:
        """The folders the command gives its step with `option` (`--out-dir`, `--audio-dir`)."""
        return [self.words[i + 1] for i, w in enumerate(self.words[:-1]) if w == option]


def dry_run(work: Path, *args: str) -> list[Job]:
    """The jobs `snakemake -n -p` lists for the full target in the workflow copy `work`."""
    from test_experiments import snakemake

    run = snakemake(work, "-n", "-p", "--cores", "1", *args, "results/fusion/winner.json")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs, block = [], {}
    for line in (run.stdout + run.stderr).splitlines():
        if line.startswith(("rule ", "localrule ", "checkpoint ")):
            block = {"rule": line.split()[1].rstrip(":")}
        elif block and line.strip().startswith(("input:", "output:", "log:")):
            key, _, value = line.strip().partition(": ")
            block[key] = tuple(v.strip() for v in value.split(","))
        elif block and line.startswith("Shell command: "):
            words = tuple(line.removeprefix("Shell command: ").split())
            files = (block.get(k, ()) for k in ("input", "output", "log"))
            jobs.append(Job(block["rule"], *files, words))
            block = {}
    return jobs


# Folders a rule gives its step besides its declared files: the content-addressed rule configs the
# workflow writes itself and caches (per-file features and renderings, Lightning's working checkpoints).
UNDECLARED_OK = ("results/config/", "results/cache/")


@pytest.mark.parametrize(
    ("experiment", "rules"),
    [
        (None, {"prepare", "folds", "render", "transcribe", "featurize", "embed", "train", "compare"}),
        ("percepiano_muq_rehearsal", {"render_unlabelled", "train_baseline", "audio_robustness"}),
        ("percepiano_cpu_corpus", {"pretrain_corpus", "pretrain"}),
    ],
    ids=["demo", "muq_rehearsal", "cpu_corpus"],
)
def test_every_step_is_given_the_files_its_rule_declares(tmp_path: Path, experiment: str | None, rules: set) -> None:
    """Each job's command names every output and log of its rule (or the folder, --out-dir, that holds it):
    no step derives a results/ path from another output's location, and every results/ path in a command
    is a declared file (the render rules' --audio-dir a declared folder), a folder the step writes in
    (--out-dir) or a cache."""
    from test_experiments import checkout

    work = checkout(tmp_path / "repo")
    jobs = dry_run(work, *(["--configfile", f"config/experiments/{experiment}.yaml", "--"] if experiment else []))
    assert rules <= {job.rule for job in jobs}
    for job in jobs:
        folders = [f"{d}/" for d in job.folders("--out-dir")]
        undeclared = [f for f in (*job.outputs, *job.logs) if f not in job.words and not f.startswith(tuple(folders))]
        assert not undeclared, (job.rule, undeclared, " ".join(job.words))
        if "<TBD>" in job.inputs:
            continue  # after the compare checkpoint: a dry run shows placeholders for the winners' files
        allowed = {*job.inputs, *job.outputs, *job.logs, *job.folders("--out-dir")}
        unknown = [w for w in job.words if w.startswith("results/") and w not in allowed]
        assert all(w.startswith(UNDECLARED_OK) for w in unknown), (job.rule, unknown)
    for job in (j for j in jobs if j.rule == "pretrain_corpus"):
        assert job.words[job.words.index("--checkpoint-dir") + 1].startswith("results/cache/pretrain_corpus/")
