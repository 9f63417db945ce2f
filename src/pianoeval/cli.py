"""The `pianoeval` command: one CLI whose subcommands are the pipeline's steps.

Each subcommand parses its arguments and calls a plain, importable function, so every step can
be tested without Snakemake. Expected failures print `error: <file>: <problem>` on one line and
exit with status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pianoeval import __version__
from pianoeval.core import warm
from pianoeval.core.errors import PianoevalError

log = logging.getLogger("pianoeval")
# The training commands' --devices: the rule passes the GPUs it reserved (resources.gpu).
DEVICES_HELP = "devices to train on; more than 1 = Lightning DDP, one process per device"
# The inference commands' --devices: GPUs the rule reserved; 0 = CPU, >0 = the GPU when CUDA has one.
INFERENCE_DEVICES_HELP = "GPUs reserved for this step (0 = CPU; default: the GPU when CUDA has one)"
CHECKPOINT_DIR_HELP = "Lightning's resumable checkpoints (a cache; default: <out-dir>/checkpoints)"
# The per-file steps' --skipped: the rules pass their declared output; by hand it defaults to a file beside --out.
SKIPPED_HELP = "the skipped-files report (JSON; default: {})"
# The render rules' --cache-dir: the WAVs are rendered (and kept) there and linked into --audio-dir.
RENDER_CACHE_HELP = "per-file cache of rendered WAVs, linked into --audio-dir (default: render into --audio-dir)"


def _beside(value: str | None, out: str, name: str) -> Path:
    """An explicit output path, or (by hand: the rules always pass one) the file `name` in --out's folder;
    a `name` starting with "." is a suffix in place of --out's (`features.pt` -> `features.skipped.json`)."""
    if value:
        return Path(value)
    return Path(out).with_suffix(name) if name.startswith(".") else Path(out).parent / name


def _config(args: argparse.Namespace) -> dict:
    """Load the validated config named by --config (defaults if none)."""
    from pianoeval.core.config import load_config, validate_config

    return load_config(args.config) if args.config else validate_config({})


def cmd_demo(args: argparse.Namespace) -> None:
    """Generate the demo corpus and its manifest."""
    from pianoeval.steps.demo import run_demo

    run_demo(_config(args), Path(args.out_dir))


def cmd_fetch(args: argparse.Namespace) -> None:
    """Fetch a public dataset into a folder (from `data.fetch_sources` when the config names one)."""
    from pianoeval.core.io import write_json
    from pianoeval.core.settings import DataSettings
    from pianoeval.data.fetch import dataset_source, fetch_dataset

    url, commit = dataset_source(args.dataset, DataSettings.from_config(_config(args)).fetch_sources)
    fetch_dataset(args.dataset, Path(args.root), url=url, commit=commit)
    if args.out:
        write_json({"dataset": args.dataset, "root": args.root, "url": url, "commit": commit}, Path(args.out))


def cmd_preflight(args: argparse.Namespace) -> None:
    """Check, before any other job, that weights load, data is there or fetchable, CUDA and the remote answer."""
    from pianoeval.steps.preflight import run_preflight

    run_preflight(_config(args), Path(args.out), gpus=args.gpus, remote=args.remote)


def cmd_muq_small(args: argparse.Namespace) -> None:
    """Write a small MuQ of the released architecture in the released format (the CPU rehearsal's weights)."""
    from pianoeval.audio.muq_weights import write_small_release

    size = {
        "encoder_dim": args.encoder_dim,
        "encoder_depth": args.depth,
        "heads": args.heads,
        "conv_dim": args.conv_dim,
    }
    print(write_small_release(Path(args.out), seed=args.seed, **size))


def cmd_render_unlabelled(args: argparse.Namespace) -> None:
    """Render unlabelled performances (ASAP) for a2's self-supervised stage."""
    from pianoeval.steps.render_unlabelled import run_render_unlabelled

    skipped = _beside(args.skipped, args.out, "skipped.json")
    cache = _path_or_none(args.cache_dir)
    run_render_unlabelled(
        _config(args), Path(args.root), Path(args.audio_dir), Path(args.out), args.threads, skipped, cache_dir=cache
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    """Build the corpus manifest from the configured source."""
    from pianoeval.steps.prepare import run_prepare

    demo = Path(args.demo_manifest) if args.demo_manifest else None
    run_prepare(_config(args), Path(args.out), demo, summary=_beside(args.summary, args.out, "summary.json"))


def cmd_folds(args: argparse.Namespace) -> None:
    """Write leak-checked folds."""
    from pianoeval.steps.folds import run_folds

    run_folds(_config(args), Path(args.manifest), Path(args.out))


def cmd_render(args: argparse.Namespace) -> None:
    """Render every performance MIDI to audio."""
    from pianoeval.steps.render import run_render

    run_render(
        _config(args),
        Path(args.manifest),
        Path(args.audio_dir),
        Path(args.out),
        args.threads,
        args.unlabelled,
        skipped=_beside(args.skipped, args.out, "skipped.json"),
        cache_dir=_path_or_none(args.cache_dir),
    )


def cmd_transcribe(args: argparse.Namespace) -> None:
    """Transcribe every rendered recording with TransKun in each configured view (symbolic training data)."""
    from pianoeval.steps.transcribe import run_transcribe

    run_transcribe(
        _config(args),
        Path(args.manifest),
        Path(args.out),
        Path(args.cache_dir),
        args.threads,
        args.devices,
        skipped=_beside(args.skipped, args.out, "skipped.json"),
    )


def cmd_featurize(args: argparse.Namespace) -> None:
    """Featurize every MIDI of the manifest (tokens, graphs, curves or stats)."""
    from pianoeval.steps.featurize import run_featurize

    run_featurize(
        args.kind,
        _config(args),
        Path(args.manifest),
        Path(args.out),
        Path(args.cache_dir),
        args.threads,
        extra_manifests=[Path(p) for p in args.extra_manifest],
        skipped=_beside(args.skipped, args.out, ".skipped.json"),
    )


def cmd_embed(args: argparse.Namespace) -> None:
    """Embed rendered audio with a frozen backbone."""
    from pianoeval.steps.embed import run_embed

    skipped = _beside(args.skipped, args.out, ".skipped.json")
    config, cache = _config(args), Path(args.cache_dir)
    run_embed(args.backbone, config, Path(args.manifest), Path(args.out), cache, args.devices, skipped)


def cmd_pretrain(args: argparse.Namespace) -> None:
    """Self-supervised pretraining of a symbolic encoder on one fold's training MIDI."""
    from pianoeval.steps.pretrain import run_pretrain

    run_pretrain(
        args.model,
        _config(args),
        args.fold,
        Path(args.manifest),
        Path(args.folds),
        Path(args.features),
        Path(args.out),
        devices=args.devices,
        corpus=Path(args.corpus) if args.corpus else None,
    )


def cmd_pretrain_corpus(args: argparse.Namespace) -> None:
    """Self-supervised pretraining of a symbolic encoder, once, on the unlabelled corpus."""
    from pianoeval.steps.pretrain_corpus import run_pretrain_corpus

    run_pretrain_corpus(
        args.model,
        _config(args),
        Path(args.out),
        _beside(args.checkpoint_dir, args.out, "checkpoints"),
        Path(args.cache_dir) if args.cache_dir else None,
        devices=args.devices,
        threads=args.threads,
    )


def _path_or_none(value: str | None) -> Path | None:
    """An optional path argument."""
    return Path(value) if value else None


def cmd_train(args: argparse.Namespace) -> None:
    """Train and evaluate one model on one fold."""
    from pianoeval.steps.train import run_train

    run_train(
        args.track,
        args.model,
        _config(args),
        args.fold,
        Path(args.manifest),
        Path(args.folds),
        Path(args.features),
        Path(args.out_dir),
        Path(args.pretrained) if args.pretrained else None,
        devices=args.devices,
        unlabelled_manifest=Path(args.unlabelled_manifest) if args.unlabelled_manifest else None,
        checkpoint_dir=_path_or_none(args.checkpoint_dir),
    )


def cmd_train_inner(args: argparse.Namespace) -> None:
    """Retrain a track winner on one inner fold of an outer fold; predict its held-out part (stacking)."""
    from pianoeval.steps.train_inner import run_train_inner

    run_train_inner(
        args.track,
        args.model,
        _config(args),
        args.fold,
        args.inner,
        Path(args.manifest),
        Path(args.folds),
        Path(args.features),
        Path(args.out_dir),
        Path(args.pretrained) if args.pretrained else None,
        devices=args.devices,
        checkpoint_dir=_path_or_none(args.checkpoint_dir),
    )


def cmd_compare(args: argparse.Namespace) -> None:
    """Compare models across folds and pick the winner."""
    from pianoeval.steps.compare import run_compare

    run_compare(
        args.track,
        _config(args),
        [Path(p) for p in args.metrics],
        [Path(p) for p in args.predictions],
        Path(args.out_dir),
        [Path(p) for p in args.robustness],
        references=[Path(p) for p in args.reference],
    )


def cmd_fuse(args: argparse.Namespace) -> None:
    """Train one fusion variant on one fold from the track winners' embeddings."""
    from pianoeval.steps.fuse import WinnerInputs, run_fuse

    run_fuse(
        args.fusion,
        _config(args),
        args.fold,
        Path(args.manifest),
        Path(args.folds),
        WinnerInputs(Path(args.symbolic_winner), Path(args.symbolic_embeddings), [Path(p) for p in args.symbolic_oof]),
        WinnerInputs(Path(args.audio_winner), Path(args.audio_embeddings), [Path(p) for p in args.audio_oof]),
        Path(args.out_dir),
        devices=args.devices,
        stats_path=Path(args.stats) if args.stats else None,
        checkpoint_dir=_path_or_none(args.checkpoint_dir),
    )


def cmd_robustness(args: argparse.Namespace) -> None:
    """Evaluate the selected model under degraded recording conditions."""
    from pianoeval.steps.robustness import run_robustness

    run_robustness(
        _config(args),
        Path(args.manifest),
        Path(args.folds),
        Path(args.fusion_winner),
        Path(args.out_dir),
        args.devices,
        results=Path(args.results),
    )


def cmd_audio_robustness(args: argparse.Namespace) -> None:
    """Test one audio model on its validation folds under every recording condition (audio compare's veto)."""
    from pianoeval.steps.audio_robustness import run_audio_robustness

    run_audio_robustness(
        args.model,
        _config(args),
        Path(args.manifest),
        Path(args.folds),
        Path(args.results),
        Path(args.out),
        args.devices,
    )


def cmd_finalize(args: argparse.Namespace) -> None:
    """Write results/fusion/winner.json from the comparisons and the robustness report."""
    from pianoeval.steps.fusion import run_fusion

    run_fusion(Path(args.fusion), Path(args.symbolic), Path(args.audio), Path(args.robustness), Path(args.out))


def cmd_report(args: argparse.Namespace) -> None:
    """Gather comparison tables and plots into one HTML page."""
    from pianoeval.steps.report import run_report

    run_report(Path(args.results), Path(args.out))


def cmd_score(args: argparse.Namespace) -> None:
    """Score a recording or MIDI with the trained winner."""
    # Before torch is imported (it reads this once): large tensors (TransKun's 0.2 GB interval scores per
    # window) on transparent huge pages, which cut the page faults of a transcription from 3.7 M to 0.3 M.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    from pianoeval.audio.transcribe_ahead import started

    if args.model:
        from pianoeval.core.errors import ConfigError

        raise ConfigError("--model is gone: pass --results, the results folder (default: results)")
    recording = Path(args.recording)
    # A recording's first TransKun windows start now, on the cores that importing PyTorch (below) leaves idle.
    with started(recording, args.device) as ahead:
        from pianoeval.core.device import resolve_device
        from pianoeval.steps.score import run_score

        warm.gc_after_imports()
        device = resolve_device(None, args.device).type
        score = Path(args.score) if args.score else None
        bundle = Path(args.bundle) if args.bundle else None
        run_score(recording, score, Path(args.results), Path(args.out), device, bundle=bundle, ahead=ahead)


def cmd_export(args: argparse.Namespace) -> None:
    """Write the served models (fold weights, settings, reference, model card) into one bundle file."""
    from pianoeval.steps.export import run_export

    run_export(Path(args.results), Path(args.out), Path(args.manifest) if args.manifest else None)


def cmd_align_check(args: argparse.Namespace) -> None:
    """Align ASAP performances to their scores and report beat errors against the annotations."""
    from pianoeval.symbolic.alignment import run_align_check

    run_align_check(Path(args.asap_root), Path(args.out))


def cmd_transcribe_check(args: argparse.Namespace) -> None:
    """Transcribe a stratified subset of rendered performances with TransKun; note F1 against their MIDI."""
    from pianoeval.audio.transcription_check import run_transcribe_check

    run_transcribe_check(
        Path(args.manifest),
        Path(args.out),
        Path(args.cache_dir) if args.cache_dir else Path(args.out).parent / "cache",
        audio_dir=Path(args.audio_dir) if args.audio_dir else None,
        per_group=args.per_group,
        max_seconds=args.max_seconds,
        source=args.source,
        seed=args.seed,
        sample_rate=_config(args)["render"]["sample_rate"],
    )


def cmd_persist(args: argparse.Namespace) -> None:
    """Copy results to durable storage (push) or restore them (pull), with rclone."""
    from pianoeval.steps.persist import run_persist

    run_persist(args.action, _config(args), args.remote, args.paths, args.exclude, args.warn_only)


# add(name, func, config=True) -> the subcommand's parser (build_parser's helper).
AddCommand = Callable[..., argparse.ArgumentParser]


def cmd_warm_serve(args: argparse.Namespace) -> None:
    """serve warm starts to a local workflow's jobs (started by the workflow; docs in core/warm.py)"""
    preload = args.preload.split(",") if args.preload is not None else warm.PRELOAD
    warm.serve(Path(args.socket), args.parent, run_command, preload=[m for m in preload if m], idle_timeout=args.idle)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per pipeline step."""
    parser = argparse.ArgumentParser(prog="pianoeval", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pianoeval {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], None], config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=func.__doc__)
        # gc_after_imports: the command turns the garbage collector on itself once its imports are done.
        p.set_defaults(func=func, gc_after_imports=False)
        if config:
            p.add_argument("--config", help="resolved config YAML (defaults when omitted)")
        return p

    for commands in (_data_commands, _training_commands, _evaluation_commands, _tool_commands):
        commands(add)
    return parser


def _data_commands(add: AddCommand) -> None:
    """The data and feature steps: demo, fetch, prepare, folds, render, transcribe, featurize, embed."""
    p = add("demo", cmd_demo)
    p.add_argument("--out-dir", required=True)
    p = add("fetch", cmd_fetch)
    p.add_argument("dataset", choices=["percepiano", "asap"])
    p.add_argument("--root", required=True)
    p.add_argument("--out", help="JSON record of the finished fetch (the rule's output)")
    p = add("muq-small", cmd_muq_small, config=False)
    p.add_argument("--out", required=True, help="folder for config.json + model.safetensors")
    p.add_argument("--encoder-dim", type=int, default=32)
    p.add_argument("--depth", type=int, default=12, help="conformer blocks (MuQ-large: 12)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--conv-dim", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p = add("preflight", cmd_preflight)
    p.add_argument("--gpus", type=int, default=0, help="GPUs the run reserves (CUDA must see them)")
    p.add_argument("--remote", help="persist remote to check for writing")
    p.add_argument("--out", required=True)
    p = add("prepare", cmd_prepare)
    p.add_argument("--demo-manifest", help="the demo rule's manifest (data.source: demo)")
    p.add_argument("--out", required=True)
    p.add_argument("--summary", help="the manifest's summary (JSON; default: summary.json beside --out)")
    p = add("folds", cmd_folds)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p = add("render", cmd_render)
    p.add_argument("--manifest", required=True)
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--cache-dir", help=RENDER_CACHE_HELP)
    p.add_argument("--out", required=True)
    p.add_argument("--skipped", help=SKIPPED_HELP.format("skipped.json beside --out"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--unlabelled",
        action="store_true",
        help="also the unlabelled T2/T3 rows (their transcriptions feed pretraining)",
    )
    p = add("render-unlabelled", cmd_render_unlabelled)
    p.add_argument("--root", required=True, help="ASAP-style folder of unlabelled performances")
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--cache-dir", help=RENDER_CACHE_HELP)
    p.add_argument("--out", required=True)
    p.add_argument("--skipped", help=SKIPPED_HELP.format("skipped.json beside --out"))
    p.add_argument("--threads", type=int, default=1)
    p = add("transcribe", cmd_transcribe)
    p.add_argument("--manifest", required=True, help="the rendered manifest")
    p.add_argument("--out", required=True)
    p.add_argument("--skipped", help=SKIPPED_HELP.format("skipped.json beside --out"))
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--devices", type=int, default=None, help=INFERENCE_DEVICES_HELP)
    p = add("featurize", cmd_featurize)
    p.add_argument("kind", choices=["tokens", "graphs", "curves", "stats"])
    p.add_argument("--manifest", required=True)
    p.add_argument(
        "--extra-manifest", nargs="*", default=[], help="more rows to featurize (the transcription views' manifest)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--skipped", help=SKIPPED_HELP.format("--out with the suffix .skipped.json"))
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p = add("embed", cmd_embed)
    p.add_argument("backbone", choices=["logmel", "muq", "transkun"])
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--skipped", help=SKIPPED_HELP.format("--out with the suffix .skipped.json"))
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--devices", type=int, default=None, help=INFERENCE_DEVICES_HELP)


def _training_commands(add: AddCommand) -> None:
    """The training steps: pretrain and train."""
    p = add("pretrain", cmd_pretrain)
    p.add_argument("model")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=1, help=DEVICES_HELP)
    p.add_argument("--corpus", help="the pretrain_corpus encoder to start from")
    p = add("pretrain-corpus", cmd_pretrain_corpus)
    p.add_argument("model", choices=["s1", "s2", "s3"])
    p.add_argument("--out", required=True)
    p.add_argument(
        "--checkpoint-dir", help="Lightning's resumable checkpoints (a cache; default: checkpoints/ beside --out)"
    )
    p.add_argument("--cache-dir", help="where corpus feature stores are cached (keyed by their settings)")
    p.add_argument("--threads", type=int, default=1, help="processes that featurize the corpus")
    p.add_argument("--devices", type=int, default=1, help=DEVICES_HELP)
    p = add("train", cmd_train)
    p.add_argument("track", choices=["symbolic", "audio"])
    p.add_argument("model")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--pretrained")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--devices", type=int, default=1, help=DEVICES_HELP)
    p.add_argument("--checkpoint-dir", help=CHECKPOINT_DIR_HELP)
    p.add_argument(
        "--unlabelled-manifest",
        help="a2: rendered manifest whose unlabelled performances (with ASAP beat annotations) join the "
        "self-supervised stage; the fold's dev/val music is left out",
    )
    p = add("train-inner", cmd_train_inner)
    p.add_argument("track", choices=["symbolic", "audio"])
    p.add_argument("model")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--inner", type=int, required=True, help="inner fold, 0 .. stacking.inner_folds - 1")
    p.add_argument("--manifest", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--pretrained")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--devices", type=int, default=1, help=DEVICES_HELP)
    p.add_argument("--checkpoint-dir", help=CHECKPOINT_DIR_HELP)


def _evaluation_commands(add: AddCommand) -> None:
    """The evaluation steps: compare, fuse, robustness, audio-robustness, finalize, report."""
    p = add("compare", cmd_compare)
    p.add_argument("track", choices=["symbolic", "audio", "fusion"])
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument(
        "--predictions", nargs="+", required=True, help="each fold's predictions.csv, beside its metrics.json"
    )
    p.add_argument("--robustness", nargs="*", default=[], help="audio models' robustness reports (veto)")
    p.add_argument(
        "--reference",
        nargs="*",
        default=[],
        help="fusion: the track winners' fold metrics.json (predictions in --predictions); shown, never eligible",
    )
    p.add_argument("--out-dir", required=True)
    p = add("fuse", cmd_fuse)
    p.add_argument("fusion")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--folds", required=True)
    for track in ("symbolic", "audio"):
        p.add_argument(f"--{track}-winner", required=True, help=f"results/compare/{track}/winner.json")
        p.add_argument(f"--{track}-embeddings", required=True, help="the winner's embeddings.pt of this fold")
        p.add_argument(
            f"--{track}-oof", nargs="+", required=True, help="the winner's oof.pt of every inner fold (stacking)"
        )
    p.add_argument("--stats", help="featurize stats store (score-relative statistics; needed by *_score fusions)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--devices", type=int, default=1, help=DEVICES_HELP)
    p.add_argument("--checkpoint-dir", help=CHECKPOINT_DIR_HELP)
    p = add("robustness", cmd_robustness)
    p.add_argument("--manifest", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--fusion-winner", required=True)
    p.add_argument("--results", default="results", help="the results tree holding the winners' fold folders")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--devices", type=int, default=None, help=INFERENCE_DEVICES_HELP)
    p = add("audio-robustness", cmd_audio_robustness)
    p.add_argument("model")
    p.add_argument("--manifest", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--results", default="results")
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=None, help=INFERENCE_DEVICES_HELP)
    p = add("finalize", cmd_finalize, config=False)
    for name in ("fusion", "symbolic", "audio", "robustness", "out"):
        p.add_argument(f"--{name}", required=True)
    p = add("report", cmd_report, config=False)
    p.add_argument("--results", default="results")
    p.add_argument("--out", required=True)


def _tool_commands(add: AddCommand) -> None:
    """The commands outside the DAG (export is also a rule): score, export, align-check, transcribe-check, persist."""
    p = add("score", cmd_score, config=False)
    p.set_defaults(gc_after_imports=True)  # seconds count here: torch is imported with the collector off
    p.add_argument("recording", help="WAV/FLAC/MP3/OGG audio or a MIDI file")
    p.add_argument("--score", help="score MIDI of the piece (optional)")
    p.add_argument("--results", default="results", help="the results folder the pipeline wrote (its final winner)")
    p.add_argument("--model", help=argparse.SUPPRESS)  # replaced by --results: a one-line error says so
    p.add_argument("--bundle", help="a bundle from `pianoeval export` (instead of --results)")
    p.add_argument("--out", default="score.json")
    p.add_argument("--device", default="auto", help="where TransKun transcribes: auto (the GPU if any), cpu, cuda")
    p = add("export", cmd_export, config=False)
    p.add_argument("--results", default="results", help="the results folder whose served models are exported")
    p.add_argument("--manifest", help="the corpus manifest (the model card counts its sources)")
    p.add_argument("--out", required=True, help="the bundle file to write")
    p = add("align-check", cmd_align_check, config=False)
    p.add_argument("--asap-root", required=True, help="ASAP folder (<composer>/.../<piece>/ with annotations)")
    p.add_argument("--out", default="results/alignment/report.json")
    p = add("transcribe-check", cmd_transcribe_check)
    p.add_argument("--manifest", required=True, help="manifest with midi_path (and audio_path)")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--cache-dir", help="per-file results (default: <out folder>/cache)")
    p.add_argument("--audio-dir", help="where rows without audio are rendered (FluidSynth)")
    p.add_argument("--per-group", type=int, default=1, help="performances per piece and bar length")
    p.add_argument("--max-seconds", type=float, help="transcribe and score only each file's first N seconds")
    p.add_argument("--source", help="only rows of this source (percepiano, asap, ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified draw")
    p = add("warm-serve", cmd_warm_serve, config=False)
    p.add_argument("--socket", required=True, help="the Unix socket to listen on")
    p.add_argument("--parent", type=int, help="stop when this process (the Snakemake run) has ended")
    p.add_argument("--preload", help="comma-separated modules to import first (default: torch, Lightning, the steps)")
    p.add_argument("--idle", type=float, default=3600, help="stop after this many seconds without a request")
    p = add("persist", cmd_persist, config=False)
    # push and pull as sub-commands, so that paths may follow the options.
    persist_actions = p.add_subparsers(dest="action", required=True)
    for action, what in (("push", "copy outputs to the remote"), ("pull", "restore outputs from the remote")):
        a = persist_actions.add_parser(action, help=what)
        a.add_argument("paths", nargs="*", help="files/folders of the working directory (default: persist.include)")
        a.add_argument("--config", help="config YAML whose persist section gives the defaults")
        a.add_argument("--remote", help="rclone remote: s3:bucket/pianoeval, a local folder (default: persist.remote)")
        a.add_argument("--exclude", action="append", help="rclone glob pattern not to copy (default: persist.exclude)")
        a.add_argument("--warn-only", action="store_true", help="a failed copy is a warning, exit status 0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one subcommand, in a child of the workflow's warm-start server when it has one
    (core/warm.py), else in this process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    status = warm.run_warm(argv)  # None: no warm-start server for this process
    if status is not None:
        return status
    return run_command(argv)


def run_command(argv: Sequence[str]) -> int:
    """Run one subcommand in this process; expected failures print one line and return 1."""
    args = build_parser().parse_args(argv)
    if not args.gc_after_imports:
        warm.gc_after_imports()  # the command imports what it needs as it goes: the collector is on for all of it
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except PianoevalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The machine, not the code: a missing or unreadable file, a full disk, a read-only folder.
        log.debug("OS error", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc} (rerun with -v for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> NoReturn:
    """The `pianoeval` console script: `main`, then out as a warm-start child leaves (core/warm.py): the exit
    handlers run and the streams are flushed, but the interpreter's teardown is skipped. With torch loaded
    that teardown takes 0.5-0.7 s for nothing (a quarter of scoring a MIDI); every pool and thread the
    commands start is shut down before they return. The cyclic garbage collector is off until the command's
    imports are done (`warm.gc_after_imports`)."""
    import gc

    gc.disable()
    status = warm.status_of(main, sys.argv[1:])
    warm.flush_streams()
    os._exit(status)


if __name__ == "__main__":
    entry()
