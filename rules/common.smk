# Helpers shared by all rules: config validation, wildcard constraints, input functions.
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pianoeval.core import warm
from pianoeval.core.errors import ConfigError
from pianoeval.core.constants import SYMBOLIC_ENCODERS
from pianoeval.core.experiment import check_experiment, record_experiment
from pianoeval.core.provenance import EXPERIMENT_ENV
from pianoeval.symbolic.featurize import featurizer_version
from pianoeval.training.registry import audio_backbone

# The experiment: config/config.yaml (the demo) unless config files are named on the command line or
# by a profile (`--configfile config/experiments/NAME.yaml`, profiles/thunder): the Snakefile then does
# not read the demo's file, so a named experiment is complete by itself and nothing of the demo leaks in.
validate(config, schema="../config/config.schema.yaml", set_default=True)

# One results folder, one experiment: refuse (one line, before any job) to run another over it.
EXPERIMENT = config["run_name"]
try:
    check_experiment(Path("results"), EXPERIMENT)
except ConfigError as exc:
    raise WorkflowError(f"error: {exc}") from None
# Jobs record the name in their provenance; it is in no rule's config digest (a label reruns nothing).
os.environ[EXPERIMENT_ENV] = EXPERIMENT


# Warm start (core/warm.py): with PIANOEVAL_WARM_START=1 (`make demo`), a local run on CPU starts a
# server that imports torch and Lightning once, and each job's `pianoeval` runs in a child forked from it.
# A machine setting, in no rule's config: it reruns nothing.
WARM = {}


onstart:
    record_experiment(
        Path("results"),
        EXPERIMENT,
        [str(p) for p in workflow.overwrite_configfiles],
    )
    if PREFLIGHT:
        run_preflight_or_stop()
    if warm.wanted(workflow.local_exec, GPUS):
        WARM["server"] = warm.start_server(Path("logs/warm_start.log"))


# Durable copies for ephemeral instances (docs/thunder.md). A machine setting: no resolved config
# includes the `persist` section, so turning it on or off reruns nothing.
PERSIST = config["persist"]
PERSIST_REMOTE = PERSIST["remote"]

FOLDS = list(range(config["folds"]["k"]))
INNER_FOLDS = list(range(config["stacking"]["inner_folds"]))
SYMBOLIC_MODELS = list(config["symbolic"]["models"])
BASELINES = [f"baseline_{name}" for name in config["symbolic"]["baselines"]]
AUDIO_BASELINES = [f"baseline_{name}" for name in config["audio"]["baselines"]]
# Audio baselines only beside at least one audio model (alone they could not pick a winner).
AUDIO_MODELS = (
    list(config["audio"]["models"]) + AUDIO_BASELINES
    if config["render"]["enabled"] and config["audio"]["models"]
    else []
)
TRACK_MODELS = {"symbolic": SYMBOLIC_MODELS + BASELINES, "audio": AUDIO_MODELS}
# The train rule fits networks (weights, spec, curves); train_baseline the baselines (none of those).
BASELINE_MODELS = sorted(
    {m for models in TRACK_MODELS.values() for m in models if m.startswith("baseline_")}
)
NETWORK_MODELS = sorted(
    {m for models in TRACK_MODELS.values() for m in models} - set(BASELINE_MODELS)
)
# What loads a trained fold model (training/checkpoints.py, evaluation/inference.py), beside its
# metrics.json: the network's spec, the resolved config and the weights (core/layout.py FoldDir).
MODEL_FILES = ["model_spec.json", "config.yaml", "model.ckpt"]
TRACKS = [track for track, models in TRACK_MODELS.items() if models]
# The comparisons of the compare checkpoint; the audio track's is compare_audio (rules/compare.smk).
NON_AUDIO_TRACKS = [track for track in TRACKS if track != "audio"] + ["fusion"]
FUSION_MODELS = [
    f"{name}_score" if cond else name
    for name in config["fusion"]["models"]
    for cond in config["fusion"]["score_conditioning"]
]
# Which cached features each symbolic model reads (`<encoder>_deep`: its encoder's).
FEATURE_KIND = {
    "s1": "tokens",
    "s2": "graphs",
    "s3": "curves",
    "s1_deep": "tokens",
    "s2_deep": "graphs",
    "s3_deep": "curves",
    "baseline_mean": "stats",
    "baseline_ridge": "stats",
    "baseline_trees": "stats",
    "baseline_segment_mean": "stats",
    "baseline_blend": "stats",
}
# The pretrained encoder each model starts from: a deep-only ablation reads its encoder's.
PRETRAINED = {
    "s1": "s1",
    "s2": "s2",
    "s3": "s3",
    "s1_deep": "s1",
    "s2_deep": "s2",
    "s3_deep": "s3",
}


def _alternatives(values):
    """A regex matching exactly one of the configured values."""
    return "|".join(sorted(map(str, values), key=len, reverse=True)) or "__none__"


wildcard_constraints:
    track=_alternatives(TRACKS + ["fusion"]),
    # With the encoders they pretrain (s1 for s1_deep), also when only a `_deep` model is configured.
    model=_alternatives(
        sorted(set(SYMBOLIC_MODELS + [PRETRAINED[m] for m in SYMBOLIC_MODELS]))
        + BASELINES
        + AUDIO_MODELS
    ),
    fold=_alternatives(FOLDS),
    fusion=_alternatives(FUSION_MODELS),
    kind="tokens|graphs|curves|stats",
    inner=_alternatives(INNER_FOLDS),


def resolved_config(*sections, model=None):
    """Path of the resolved config restricted to `sections` (content-addressed, so edits rerun).

    Only what the rule reads (`seed` and `max_skipped_fraction` are sections too); `run_name`, a
    label, is in none, so renaming an experiment or changing another rule's settings reruns nothing.
    With `model`, `training` is merged with `training.by_model[model]`: one model's budget reruns it alone.
    """
    from pianoeval.core.config import write_resolved

    return str(write_resolved(config, "results/config", sections, model=model))


def _gpus():
    """The GPUs this run reserves: Snakemake's global `gpu` resource (the thunder profile's 1), else 0."""
    value = workflow.global_resources.get("gpu")
    return int(getattr(value, "value", value) or 0)


# The preflight (steps/preflight.py): when the run needs released weights, data it may fetch, a GPU
# or a results remote, it is checked before the first job starts (onstart), one line per problem. It
# is no job of the DAG: a machine check must not make finished jobs look out of date on a new instance.
from pianoeval.steps.preflight import needs as preflight_needs

GPUS = _gpus()
PREFLIGHT = bool(preflight_needs(config, GPUS, PERSIST_REMOTE))
PREFLIGHT_SECTIONS = (
    "data",
    "render",
    "audio",
    "transcription",
    "robustness",
    "unlabelled_audio",
    "seed",
)


def run_preflight_or_stop():
    """Check this machine for the run before any job starts; stop with one line per problem."""
    import subprocess

    args = ["pianoeval", "preflight", "--config", resolved_config(*PREFLIGHT_SECTIONS)]
    args += ["--gpus", str(GPUS), "--out", "logs/preflight/ok.json"]
    if PERSIST_REMOTE:
        args += ["--remote", PERSIST_REMOTE]
    print("Checking what this run needs (preflight) before its first job", flush=True)
    if subprocess.run(args).returncode != 0:
        raise WorkflowError(
            "stopped before the first job: the preflight found the problems above"
        )


def fetch_marker(dataset, root):
    """Nothing when the dataset's folder exists, else the fetch job's record (the folder is fetched)."""
    return [] if Path(root).exists() else f"resources/{dataset}.fetched.json"


def manifest_source(wildcards):
    """The demo manifest when the demo is configured, else the fetch records of missing datasets (a
    present folder is read directly)."""
    data = config["data"]
    if data["source"] == "demo":
        inputs = {"demo": "results/demo/manifest.parquet"}
    else:
        inputs = {"percepiano": fetch_marker("percepiano", data["percepiano_root"])}
    if data["asap_root"]:
        inputs["asap"] = fetch_marker("asap", data["asap_root"])
    return {name: path for name, path in inputs.items() if path}


def demo_manifest_flag(wildcards, input):
    """`--demo-manifest PATH` when prepare reads the demo's manifest, else nothing."""
    return f"--demo-manifest {input.demo}" if "demo" in input.keys() else ""


def unlabelled_root():
    """The folder of a2's unlabelled performances: the configured one, else where fetch puts ASAP."""
    root = config["unlabelled_audio"]["root"]
    return root if Path(root).exists() else "resources/asap"


def render_unlabelled_flag(wildcards):
    """`--unlabelled` when the unlabelled rows' renderings are read: their transcriptions feed the
    symbolic pretraining (transcription views + pretraining), else nothing is rendered that no model reads.
    """
    sym = config["symbolic"]
    read = config["transcription"]["views"] and sym["pretrain"] and sym["models"]
    return "--unlabelled" if read else ""


def transcription_views(wildcards):
    """The transcription views' manifest when views are configured (and audio is rendered), else nothing."""
    if config["transcription"]["views"] and config["render"]["enabled"]:
        return "results/transcribe/manifest.parquet"
    return []


# symbolic.deep_start: each wide & deep encoder and the deep-only model its deep part starts from.
DEEP_START = (
    {m: f"{m}_deep" for m in SYMBOLIC_MODELS if m in SYMBOLIC_ENCODERS}
    if config["symbolic"]["deep_start"]
    else {}
)
_no_deep = [m for m, deep in DEEP_START.items() if deep not in SYMBOLIC_MODELS]
if _no_deep:
    raise WorkflowError(
        f"error: symbolic.deep_start: {', '.join(_no_deep)} start from "
        f"{', '.join(DEEP_START[m] for m in _no_deep)}, which symbolic.models lacks; add it or turn deep_start off"
    )


def deep_start_model(wildcards):
    """The model.ckpt the wide & deep model's deep part starts from (train, or train_inner's same inner fold)."""
    deep = DEEP_START[wildcards.model]
    if "inner" in wildcards.keys():
        return f"results/train_inner/symbolic/{deep}/fold_{wildcards.fold}/inner_{wildcards.inner}/model.ckpt"
    return f"results/train/symbolic/{deep}/fold_{wildcards.fold}/model.ckpt"


def train_inputs(wildcards):
    """Features, folds and (for pretrained models) the fold's pretrained encoder."""
    inputs = {
        "manifest": "results/prepare/manifest.parquet",
        "folds": "results/folds/folds.json",
    }
    if wildcards.track == "audio":
        # The rendered manifest: same rows and labels, plus the audio_path live backbones read.
        inputs["manifest"] = "results/render/manifest.parquet"
        inputs["features"] = (
            f"results/embed/{audio_backbone(wildcards.model, config['audio']['backbone'])}.pt"
        )
        if wildcards.model == "a2" and config["unlabelled_audio"]["root"]:
            # A2's self-supervised stage also reads unlabelled music (never the fold's dev/val music).
            inputs["unlabelled"] = "results/render_unlabelled/manifest.parquet"
    else:
        inputs["features"] = f"results/featurize/{FEATURE_KIND[wildcards.model]}.pt"
        if wildcards.model in DEEP_START:
            # The deep part starts from the deep-only model of the same rows (an inner fold's for stacking).
            inputs["pretrained"] = deep_start_model(wildcards)
        elif wildcards.model in PRETRAINED and config["symbolic"]["pretrain"]:
            encoder = PRETRAINED[wildcards.model]
            inputs["pretrained"] = (
                f"results/pretrain/{encoder}/fold_{wildcards.fold}/encoder.pt"
            )
    return inputs


def track_metrics(wildcards):
    """Every fold's metrics of every model of a track (the fusion variants for `fusion`)."""
    if wildcards.track == "fusion":
        return fusion_metrics(wildcards)
    return expand(
        "results/train/{track}/{model}/fold_{fold}/metrics.json",
        track=wildcards.track,
        model=TRACK_MODELS[wildcards.track],
        fold=FOLDS,
    )


def audio_model_metrics(wildcards):
    """Every fold's metrics and model files of one audio model (what its robustness test loads)."""
    return expand(
        "results/train/audio/{model}/fold_{fold}/{name}",
        model=wildcards.model,
        fold=FOLDS,
        name=["metrics.json", *MODEL_FILES],
    )


def track_robustness(wildcards):
    """The audio models' robustness reports (baselines have none): the audio comparison's veto."""
    if wildcards.track != "audio":
        return []
    return expand(
        "results/audio_robustness/{model}/report.json",
        model=[m for m in AUDIO_MODELS if not m.startswith("baseline_")],
    )


def fusion_metrics(wildcards):
    """Every fold's metrics of every fusion variant."""
    return expand(
        "results/fuse/{fusion}/fold_{fold}/metrics.json",
        fusion=FUSION_MODELS,
        fold=FOLDS,
    )


def config_for(*sections):
    """An input function giving the resolved config of `sections` (see resolved_config)."""

    def resolved(wildcards):
        return resolved_config(*sections)

    resolved.__name__ = "config_for_" + "_".join(sections)
    return resolved


# The sections each track's training reads (the audio track's waveforms: render.sample_rate).
TRAIN_SECTIONS = {
    "symbolic": ("features", "symbolic", "training", "seed"),
    "audio": ("audio", "render", "training", "seed"),
}


def train_config(wildcards):
    """The resolved config of the sections the train rule reads for this track and model."""
    return resolved_config(*TRAIN_SECTIONS[wildcards.track], model=wildcards.model)


def train_inner_config(wildcards):
    """train_inner: the train rule's sections for the track and model, and how the inner folds are cut."""
    return resolved_config(
        *TRAIN_SECTIONS[wildcards.track], "stacking", model=wildcards.model
    )


def pretrain_config(wildcards):
    """pretrain: the sections it reads, `training` as this encoder's (its pretrain_epochs)."""
    return resolved_config(
        "features", "symbolic", "training", "seed", model=wildcards.model
    )


def fuse_config(wildcards):
    """fuse: the sections it reads, `training` as this variant's (f1's entry for f1_score too)."""
    return resolved_config("fusion", "training", "seed", model=wildcards.fusion)


def pretrain_inputs(wildcards):
    """What a fold's pretraining reads: manifest, folds, the model's cached features, and the corpus
    encoder (pretrain_corpus, once per model) when symbolic.corpus.root is set."""
    inputs = {
        "manifest": "results/prepare/manifest.parquet",
        "folds": "results/folds/folds.json",
        "features": f"results/featurize/{FEATURE_KIND[wildcards.model]}.pt",
    }
    if config["symbolic"]["corpus"]["root"]:
        inputs["corpus"] = f"results/pretrain_corpus/{wildcards.model}/encoder.pt"
    return inputs


def corpus_flag(wildcards, input):
    """`--corpus PATH` when the fold's pretraining starts from the corpus encoder, else nothing."""
    return f"--corpus {input.corpus}" if "corpus" in input.keys() else ""


def pretrained_flag(wildcards, input):
    """`--pretrained PATH` when the model has a pretrained encoder input, else nothing."""
    return f"--pretrained {input.pretrained}" if "pretrained" in input.keys() else ""


# -- compare-trust: bootstrap inputs, the track winners (compare is a checkpoint), stacking ----------


def track_predictions(wildcards):
    """Every fold's predictions.csv of every model of a track (what compare's bootstrap resamples)."""
    return [
        path.replace("metrics.json", "predictions.csv")
        for path in track_metrics(wildcards)
    ]


def track_winner(track):
    """The winning model of `track`, read from its compare checkpoint's winner.json (the audio track's:
    compare_audio)."""
    comparison = checkpoints.compare_audio if track == "audio" else checkpoints.compare
    winner = comparison.get(track=track).output.winner
    with open(winner) as handle:
        return json.load(handle)["model"]


def track_references(wildcards):
    """fusion: the single-track winners' fold metrics, compared beside the fusion variants (never
    eligible); other tracks: none."""
    if wildcards.track != "fusion":
        return []
    return [
        f"results/train/{track}/{track_winner(track)}/fold_{fold}/metrics.json"
        for track in ("symbolic", "audio")
        for fold in FOLDS
    ]


def track_reference_predictions(wildcards):
    """The references' predictions.csv (see track_references)."""
    return [
        path.replace("metrics.json", "predictions.csv")
        for path in track_references(wildcards)
    ]


def winner_embeddings(track):
    """An input function: the fold's embeddings.pt of `track`'s winner (known once compare has run)."""

    def embeddings(wildcards):
        model = track_winner(track)
        return f"results/train/{track}/{model}/fold_{wildcards.fold}/embeddings.pt"

    embeddings.__name__ = f"{track}_winner_embeddings"
    return embeddings


def winner_out_of_fold(track):
    """An input function: the oof.pt of every inner fold (train_inner) of `track`'s winner in the fold."""

    def out_of_fold(wildcards):
        return expand(
            "results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/oof.pt",
            track=track,
            model=track_winner(track),
            fold=wildcards.fold,
            inner=INNER_FOLDS,
        )

    out_of_fold.__name__ = f"{track}_winner_out_of_fold"
    return out_of_fold


# -- robustness: the winners' fold folders it loads ---------------------------------------------------


def winner_folds(track, *names):
    """An input function: files `names` of every fold folder of `track`'s winner (known once compare has run)."""

    def files(wildcards):
        return expand(
            "results/train/{track}/{model}/fold_{fold}/{name}",
            track=track,
            model=track_winner(track),
            fold=FOLDS,
            name=names,
        )

    files.__name__ = f"{track}_winner_{names[0].split('.')[0]}"
    return files


def symbolic_winner_models(wildcards):
    """The symbolic winner's model files when robustness scores transcriptions with it, else nothing."""
    if not config["robustness"]["transcribe_conditions"]:
        return []
    return winner_folds("symbolic", *MODEL_FILES)(wildcards)


def fusion_winner_folds(wildcards):
    """Every fold's metrics and model files of the fusion winner (the fold models robustness loads)."""
    return expand(
        "results/fuse/{fusion}/fold_{fold}/{name}",
        fusion=track_winner("fusion"),
        fold=FOLDS,
        name=["metrics.json", *MODEL_FILES],
    )


def robustness_score_stats(wildcards):
    """The statistics store when the fusion winner is score-conditioned (it reads its statistics), else nothing."""
    return (
        "results/featurize/stats.pt"
        if track_winner("fusion").endswith("_score")
        else []
    )


def fusion_score_stats(wildcards):
    """The score-relative statistics a `_score` fusion reads (the featurize stats store), else nothing."""
    return "results/featurize/stats.pt" if wildcards.fusion.endswith("_score") else []


def stats_flag(wildcards, input):
    """`--stats PATH` when the fusion reads the score-relative statistics, else nothing."""
    return f"--stats {input.stats}" if input.stats else ""


def unlabelled_flag(wildcards, input):
    """`--unlabelled-manifest PATH` when a2 reads unlabelled music, else nothing."""
    return (
        f"--unlabelled-manifest {input.unlabelled}"
        if "unlabelled" in input.keys()
        else ""
    )


if PERSIST["remote"]:
    from pianoeval.core.persist import rclone_filters

    # A bad path fails now, not after the first job.
    rclone_filters(PERSIST["include"], PERSIST["exclude"])


def persist_push(wildcards, output):
    """` && pianoeval persist push ...` when persist.remote is set, else nothing.

    It takes `output`, so Snakemake counts it as derived from the outputs rather than as a
    parameter whose change would rerun the job. The push copies every included path (the job's
    folder, the inputs it was made from, anything an earlier failed push missed) and only warns on
    failure: a failed upload must not make Snakemake delete the job's outputs.
    """
    if not PERSIST["remote"]:
        return ""
    import shlex

    args = ["pianoeval", "persist", "push", "--warn-only"]
    args += ["--remote", PERSIST["remote"]]
    for pattern in PERSIST["exclude"]:
        args += ["--exclude", pattern]
    return f" && {shlex.join([*args, *PERSIST['include']])}"


def persist_at_end():
    """Push once more when the workflow ends: the last jobs' records and the outputs of the rules
    that do not push themselves (compare, robustness, report)."""
    if not PERSIST["remote"]:
        return
    from snakemake.logging import logger

    from pianoeval.core.errors import RemoteError
    from pianoeval.core.persist import copy

    remote = PERSIST["remote"]
    try:
        n_files = copy("push", remote, PERSIST["include"], PERSIST["exclude"])
        logger.info(f"persist: pushed {n_files} files to {remote}")
    except RemoteError as exc:
        logger.warning(f"persist: the final push failed ({exc}); push by hand")


onsuccess:
    warm.stop_server(WARM.get("server"))
    persist_at_end()


onerror:
    warm.stop_server(WARM.get("server"))
    persist_at_end()


# -- serve: what the export rule bundles -------------------------------------------------------------


def export_folds(wildcards):
    """The files of every fold folder `export` may bundle: the track winners' (known once their
    compare checkpoints ran) and every fusion variant's, with what rebuilds their networks.
    """
    winners = [
        f"results/train/{track}/{track_winner(track)}/fold_{fold}/metrics.json"
        for track in TRACKS
        for fold in FOLDS
    ]
    return [
        metrics.replace("metrics.json", name)
        for metrics in winners + fusion_metrics(wildcards)
        for name in ["metrics.json", "provenance.json", *MODEL_FILES]
    ]
