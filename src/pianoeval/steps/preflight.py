"""The preflight: before the first job, check what a long (rented) run will need, in about a minute.

A run whose config needs released weights, data it may have to fetch, a GPU or a results remote
starts with it (rules/common.smk, `onstart`: no job of the DAG, so it never makes finished jobs look
out of date on a new instance). It checks
that the MuQ weights and TransKun load, that PercePiano and ASAP are present or their repositories
answer, that CUDA sees the GPUs the run reserves, and that the `persist` remote takes a file. Each
problem is one line; it fails after listing them all, so no job starts. What it checks
follows the config: a run that needs none of these has no preflight (`needs`).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pianoeval.core.errors import PianoevalError
from pianoeval.core.io import write_json
from pianoeval.core.settings import (
    AudioSettings,
    BackboneSettings,
    DataSettings,
    RenderSettings,
    RobustnessSettings,
    TranscriptionSettings,
    UnlabelledAudioSettings,
)

log = logging.getLogger(__name__)

# Seconds a repository or the remote has to answer (the whole check should take about a minute).
NETWORK_TIMEOUT_S = 30
# Where each dataset is fetched when its configured folder is missing, and its finished-fetch marker.
FETCH_ROOTS = {"percepiano": Path("resources/percepiano"), "asap": Path("resources/asap")}
MARKERS = {"percepiano": "index.csv", "asap": "metadata.csv"}


@dataclass(frozen=True)
class PreflightSettings:
    """The sections the preflight reads (its rule's config, or the workflow's whole config), typed once."""

    data: DataSettings
    render: RenderSettings
    audio: AudioSettings
    transcription: TranscriptionSettings
    robustness: RobustnessSettings
    unlabelled_audio: UnlabelledAudioSettings
    seed: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PreflightSettings:
        """The preflight's sections of a validated config (ConfigError naming one it was not given)."""
        sections = (DataSettings, RenderSettings, AudioSettings, TranscriptionSettings, RobustnessSettings)
        given = {s.NAME: s.from_config(config) for s in (*sections, UnlabelledAudioSettings)}
        return cls(**given, seed=int(config["seed"]))

    @property
    def backbone(self) -> BackboneSettings:
        """The audio backbone's keys with the seed (what the embed and train jobs load MuQ from)."""
        return BackboneSettings.from_config({"audio": vars(self.audio), "seed": self.seed})


def audio_models(settings: PreflightSettings) -> list[str]:
    """The configured audio models (none when nothing is rendered)."""
    return list(settings.audio.models) if settings.render.enabled else []


def backbones(settings: PreflightSettings) -> set[str]:
    """Every audio backbone a configured audio model reads (cached frames or live)."""
    from pianoeval.training.registry import PROBE_BACKBONES

    models = audio_models(settings)
    out = {PROBE_BACKBONES[m] for m in models if m in PROBE_BACKBONES}
    if set(models) - set(PROBE_BACKBONES):
        out.add(settings.audio.backbone)
    return out


def needs_released_muq(settings: PreflightSettings) -> bool:
    """Whether a configured model reads MuQ with its released weights (a download on a fresh machine)."""
    return "muq" in backbones(settings) and bool(settings.audio.muq_pretrained)


def needs_transkun(settings: PreflightSettings) -> bool:
    """Whether TransKun runs: transcription views, a TransKun probe, or the robustness check's transcriptions."""
    if not settings.render.enabled:
        return False
    views = bool(settings.transcription.views)
    robustness = bool(audio_models(settings)) and bool(settings.robustness.transcribe_conditions)
    return views or robustness or "transkun" in backbones(settings)


def dataset_roots(settings: PreflightSettings) -> list[tuple[str, str]]:
    """(dataset, configured folder) of every external dataset the config reads."""
    data = settings.data
    roots = []
    if data.source == "percepiano":
        roots.append(("percepiano", data.percepiano_root))
    if data.asap_root:
        roots.append(("asap", data.asap_root))
    if "a2" in audio_models(settings) and settings.unlabelled_audio.root:
        roots.append(("asap", settings.unlabelled_audio.root))
    return roots


def needs(config: Mapping[str, Any], gpus: int, remote: str | None) -> list[str]:
    """Why this run needs a preflight (empty: it does not, e.g. the demo on a CPU)."""
    settings = PreflightSettings.from_config(config)
    reasons = []
    if needs_released_muq(settings):
        reasons.append("released MuQ weights")
    if dataset_roots(settings):
        reasons.append("datasets")
    if gpus > 0:
        reasons.append("GPU")
    if remote:
        reasons.append("persist remote")
    return reasons


def check_muq(settings: BackboneSettings) -> None:
    """Load the released MuQ weights exactly as the embed and train jobs will (hub or local folder)."""
    from pianoeval.training.registry import build_audio_backbone

    build_audio_backbone("muq", settings)


def check_transkun() -> None:
    """Load TransKun with the wheel's weights (what transcribe, the TransKun probe and robustness run)."""
    from pianoeval.audio.backbones import load_transkun_model

    load_transkun_model(pretrained=True)


def check_dataset(name: str, root: str, url: str) -> None:
    """The dataset's folder holds a finished copy, or its git repository answers (the fetch job clones it)."""
    for folder in (Path(root), FETCH_ROOTS[name]):
        if (folder / MARKERS[name]).is_file() or (name == "asap" and folder.is_dir() and any(folder.iterdir())):
            return
    if shutil.which("git") is None:
        raise PianoevalError(f"{name}: {root} is missing and git is not installed to fetch it")
    try:
        proc = subprocess.run(
            ["git", "ls-remote", "--heads", url],
            capture_output=True,
            text=True,
            timeout=NETWORK_TIMEOUT_S,
            env={"GIT_TERMINAL_PROMPT": "0", "PATH": _path()},
        )
    except subprocess.TimeoutExpired:
        raise PianoevalError(
            f"{name}: {root} is missing and its repository {url} did not answer in {NETWORK_TIMEOUT_S} s"
        ) from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise PianoevalError(f"{name}: {root} is missing and its repository {url} cannot be fetched ({detail})")


def check_cuda(gpus: int) -> None:
    """CUDA sees at least the `gpus` GPUs the run reserves (Snakemake's `gpu` resource)."""
    import torch

    if not torch.cuda.is_available():
        raise PianoevalError(
            f"the run reserves {gpus} GPU(s) (resources gpu={gpus}) but CUDA sees none "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); install the CUDA build of "
            "torch or run without the GPU profile"
        )
    if torch.cuda.device_count() < gpus:
        raise PianoevalError(f"the run reserves {gpus} GPU(s) but CUDA sees {torch.cuda.device_count()}")


def check_remote(remote: str) -> None:
    """The persist remote takes a file: copy a small one there, read it back, delete it."""
    from pianoeval.core.errors import RemoteError

    exe = shutil.which("rclone")
    if exe is None:
        raise RemoteError("rclone is not installed: `apt-get install rclone` (scripts/bootstrap.sh does it)", remote)
    probe = f"{remote.rstrip('/')}/.pianoeval-preflight"
    stamp = f"preflight {time.time()}"
    steps = (["rcat", probe], ["cat", probe], ["deletefile", probe])
    for args in steps:
        try:
            proc = subprocess.run(
                [exe, *args], input=stamp if args[0] == "rcat" else None, capture_output=True, text=True,
                timeout=NETWORK_TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RemoteError(
                f"persist remote did not answer in {NETWORK_TIMEOUT_S} s (rclone {args[0]})", remote
            ) from None
        if proc.returncode != 0 or (args[0] == "cat" and proc.stdout != stamp):
            detail = (proc.stderr.strip().splitlines() or ["the file read back differs"])[-1]
            raise RemoteError(f"persist remote is not writable (rclone {args[0]}: {detail})", remote)


def _path() -> str:
    """The PATH git runs with (only PATH and no prompt: ls-remote must never wait for a password)."""
    import os

    return os.environ.get("PATH", "/usr/bin:/bin")


def planned_checks(config: Mapping[str, Any], gpus: int, remote: str | None) -> list[tuple[str, Callable[[], None]]]:
    """(what, check) for everything this config needs, in the order they run."""
    from pianoeval.data.fetch import dataset_source

    settings = PreflightSettings.from_config(config)
    checks: list[tuple[str, Callable[[], None]]] = []
    if needs_released_muq(settings):
        checks.append((f"MuQ weights {settings.audio.muq_name_or_path}", lambda: check_muq(settings.backbone)))
    if needs_transkun(settings):
        checks.append(("TransKun", check_transkun))
    seen = set()
    for name, root in dataset_roots(settings):
        if (name, root) not in seen:
            seen.add((name, root))
            url = dataset_source(name, settings.data.fetch_sources)[0]
            checks.append((f"{name} at {root}", lambda n=name, r=root, u=url: check_dataset(n, r, u)))
    if gpus > 0:
        checks.append((f"CUDA with {gpus} GPU(s)", lambda: check_cuda(gpus)))
    if remote:
        checks.append((f"persist remote {remote}", lambda: check_remote(remote)))
    return checks


def run_preflight(config: Mapping[str, Any], out: Path, gpus: int = 0, remote: str | None = None) -> dict[str, Any]:
    """Run every check the config needs; print one line per problem and raise, or write `out` (JSON)."""
    report: dict[str, Any] = {"checks": {}, "problems": []}
    for what, check in planned_checks(config, gpus, remote):
        tick = time.perf_counter()
        try:
            check()
        except PianoevalError as exc:
            report["problems"].append(f"{what}: {' '.join(str(exc).split())}")
        except Exception as exc:  # a library's own failure (import, CUDA, ...) is a problem to list too
            first = (str(exc).strip().splitlines() or [""])[0]
            report["problems"].append(f"{what}: {type(exc).__name__}: {first}")
        report["checks"][what] = round(time.perf_counter() - tick, 2)
        log.info("preflight: %s (%.1f s)", what, report["checks"][what])
    if report["problems"]:
        for line in report["problems"]:
            print(f"preflight: {line}", file=sys.stderr, flush=True)
        raise PianoevalError(f"preflight: {len(report['problems'])} problem(s) above; no other job was started")
    write_json(report, out)
    log.info("preflight: %d checks passed -> %s", len(report["checks"]), out)
    return report
