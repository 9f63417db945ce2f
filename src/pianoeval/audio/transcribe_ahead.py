"""A recording's first TransKun windows, started before PyTorch is imported.

`pianoeval score` on a recording used to spend its first 2-3 s on one core: importing PyTorch (1.5 s
here), loading TransKun and the fold models, creating the ONNX Runtime session; only then did the encoder's
windows (6-7 s each on one core of the 2-core test machine) start. None of that is needed to run the encoder:
its exported graph (`audio.transkun_onnx`) runs in ONNX Runtime on NumPy input (`audio.transkun_windows`).
So the score command starts the windows first (`started`), on the cores PyTorch's import leaves idle, and
`transcribe_timed` takes them over (`Ahead.take`) once TransKun is loaded.

What it needs of the model is its *card* (`Card`): the graph's path, the window layout and the analysis
windows. The PyTorch path writes it (`save_card`) the first time it loads TransKun's wheel checkpoint, keyed
by that checkpoint file and the versions of torch, transkun and onnxruntime (`card_path`); without a card
(the first transcription on a machine) nothing starts ahead. Before taking the windows over,
`transcribe_timed` checks the card against the loaded model's and the plan against its own: on any
difference the windows started ahead are stopped and computed again, so the notes never depend on the card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianoeval.audio import onnx_runtime
from pianoeval.audio.transkun_windows import SCORED_OUTPUTS, WindowPlan, plan_windows, power_spectrum, window_frames
from pianoeval.core.threads import threads_for_load

log = logging.getLogger(__name__)

# Bump when the card's content or meaning changes.
CARD_VERSION: int = 1
# Where a card's analysis windows go, beside its JSON.
WINDOWS_SUFFIX = ".windows.npy"


@dataclass(frozen=True, eq=False)
class Card:
    """What running a TransKun model's windows without PyTorch takes: `graph` (the exported graph of a whole
    window, power spectrum → SCORED_OUTPUTS), the sample rate `fs`, the frame `hop` and `width`, the window
    length `segment_s`, the FFT bins [lo, hi) its mel filters weigh and the analysis `windows` [K, width]."""

    graph: str
    fs: int
    hop: int
    width: int
    segment_s: float
    lo: int
    hi: int
    windows: np.ndarray

    def same_as(self, other: Card) -> bool:
        """Whether both describe the same graph and front end."""
        fields = [f.name for f in dataclasses.fields(self) if f.name != "windows"]
        return all(getattr(self, n) == getattr(other, n) for n in fields) and np.array_equal(
            self.windows, other.windows
        )


def checkpoint() -> Path | None:
    """TransKun's checkpoint in its wheel (what `audio.backbones.load_transkun_model` loads), found without
    importing transkun (which imports PyTorch); None if transkun is not installed."""
    spec = importlib.util.find_spec("transkun")
    return Path(spec.origin).parent / "pretrained" / "2.0.pt" if spec and spec.origin else None


def card_path(ckpt: Path) -> Path:
    """Where the card of the model loaded from `ckpt` goes: keyed by the file (path, size, modification time)
    and the versions of what built the graph and runs it."""
    stat = ckpt.stat()
    versions = [_version(name) for name in ("torch", "transkun", "onnxruntime")]
    key = f"{CARD_VERSION}|{ckpt.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{versions}"
    return onnx_runtime.cache_dir() / "transkun" / f"card-{hashlib.sha1(key.encode()).hexdigest()[:20]}.json"


def _version(name: str) -> str:
    """The installed version of `name`, or "" if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def read_card(ckpt: Path | None = None) -> Card | None:
    """The card of TransKun's wheel checkpoint (or of `ckpt`), or None if there is none yet, it is unreadable
    or its graph is gone."""
    ckpt = ckpt or checkpoint()
    if ckpt is None or not ckpt.is_file():
        return None
    path = card_path(ckpt)
    try:
        fields = json.loads(path.read_text())
        card = Card(**fields, windows=np.load(path.with_suffix(WINDOWS_SUFFIX)))
    except (OSError, ValueError, TypeError) as exc:
        if path.exists():
            log.warning("ignoring an unreadable TransKun card %s (%s)", path, exc)
        return None
    return card if Path(card.graph).is_file() else None


def save_card(card: Card, ckpt: Path) -> None:
    """Write `card` as the card of the model loaded from `ckpt` (atomically), unless it is there already.
    A cache that cannot be written only costs the head start: logged, not raised."""
    from pianoeval.core.errors import OutputError
    from pianoeval.core.io import atomic_path

    known = read_card(ckpt)
    if known is not None and known.same_as(card):
        return
    path = card_path(ckpt)
    fields = {f.name: getattr(card, f.name) for f in dataclasses.fields(card) if f.name != "windows"}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path.with_suffix(WINDOWS_SUFFIX), suffix=".npy") as tmp:
            np.save(tmp, card.windows)
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(fields))
    except (OSError, OutputError) as exc:
        log.warning("could not keep TransKun's card in %s (%s): transcriptions will not start ahead", path, exc)


def default_threads() -> int:
    """The intra-op threads PyTorch would start with (OMP_NUM_THREADS, else the usable cores), as
    `transcribe_timed` reads them from torch.get_num_threads()."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Ahead:
    """The first windows of `plan` on `audio` [S, C] (at the card's rate; read from the file `source`), started
    on worker threads: the first `workers` windows on one intra-op thread each when two or more run at once,
    else the first one on `threads` (as `FastWindows.prefetching` would run them)."""

    def __init__(
        self, audio: np.ndarray, card: Card, plan: WindowPlan, threads: int, source: Path | None = None
    ) -> None:
        import onnxruntime as ort

        self.audio, self.card, self.plan, self.source = audio, card, plan, source
        workers = min(threads, plan.n_windows)
        per_window = 1 if workers > 1 else threads
        self._run_options = ort.RunOptions()
        self._session: Any = None
        self._lock = threading.Lock()  # the first worker opens the session, the others wait for it
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="transkun-ahead")
        frames = window_frames(audio, plan, card.hop, card.width)
        self._items: list[tuple[np.ndarray, Future[Any]]] = []
        for _, window in zip(range(workers), frames, strict=False):
            self._items.append((window, self._pool.submit(self._outputs, window, per_window)))

    def _outputs(self, frames: np.ndarray, threads: int) -> tuple[np.ndarray, ...]:
        """One window's graph outputs (ctx, raw, diag), on a session shared by the workers."""
        power = power_spectrum(frames, self.card.windows, (self.card.lo, self.card.hi)).astype(np.float32)
        with self._lock:
            if self._session is None:
                self._session = onnx_runtime.open_session(Path(self.card.graph), threads)
        return tuple(self._session.run(list(SCORED_OUTPUTS), {"feats": power}, self._run_options))

    def take(self, card: Card, plan: WindowPlan) -> list[tuple[np.ndarray, Future[Any]]]:
        """The started windows as (frames, future outputs), for a model whose card is `card` and the plan
        `plan`; none (and the windows stopped) if either differs from what they were started with."""
        items, self._items = self._items, []
        if items and (plan != self.plan or not card.same_as(self.card)):
            log.warning("TransKun's card or window plan changed: the windows started ahead are recomputed")
            self.close()
            return []
        return items

    def close(self) -> None:
        """Stop what is still running (ONNX Runtime's terminate flag) and release the workers."""
        self._run_options.terminate = True
        self._pool.shutdown(wait=False, cancel_futures=True)


def start(recording: Path, device: str | None = None) -> Ahead | None:
    """The first windows of `recording`'s transcription by `pianoeval score`, started now; None where they
    would not be used: for a MIDI, on a GPU (or `device` other than cpu/auto), with the torch engine, without
    a card, or for audio the score command will refuse (it says why itself)."""
    from pianoeval.audio.io import load_audio
    from pianoeval.audio.transkun_windows import resolve_engine
    from pianoeval.core.constants import AUDIO_SUFFIXES, MAX_SECONDS
    from pianoeval.core.errors import ConfigError, InputError

    if recording.suffix.lower() not in AUDIO_SUFFIXES:
        return None
    if device not in (None, "auto", "cpu") or (device != "cpu" and _gpu_present()):
        return None
    try:
        if resolve_engine(None, "cpu") != "onnx":
            return None
    except ConfigError:
        return None
    card = read_card()
    if card is None:
        return None
    try:
        audio = load_audio(recording, sample_rate=card.fs, max_seconds=MAX_SECONDS)
    except InputError:
        return None
    audio = audio[:, None] if audio.ndim == 1 else audio
    plan = plan_windows(audio.shape[0], card.fs, card.hop, card.segment_s)
    return Ahead(audio, card, plan, threads_for_load(default_threads()), source=recording)


def _gpu_present() -> bool:
    """Whether an NVIDIA GPU driver is loaded (then `--device auto` transcribes on the GPU, not here)."""
    return Path("/proc/driver/nvidia/gpus").is_dir()


@contextlib.contextmanager
def started(recording: Path, device: str | None = None) -> Iterator[Ahead | None]:
    """`start(recording, device)` for the block; what is still running at its end is stopped."""
    ahead = start(recording, device)
    try:
        yield ahead
    finally:
        if ahead is not None:
            ahead.close()
