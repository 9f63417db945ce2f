"""Import shims that let the `muq` and `transkun` wheels run without torchaudio (see docs/audio_backbones.md).

Both packages are installed with `pip install --no-deps`: they declare `torchaudio`, which has no build
for our torch, and pip would replace torch to satisfy it. They use torchaudio only for mel filterbanks:

- transkun: `torchaudio.functional.melscale_fbanks` (Util.MelSpectrum);
- muq: `torchaudio.transforms.MelSpectrogram` and `torchaudio.transforms.AmplitudeToDB` (modules/features.py).

`torchaudio_shim()` puts a tiny stand-in module exposing exactly those three names into `sys.modules`
for the duration of a `with` block (importing muq, building a transkun model), and only when no real
torchaudio can be imported. `import_muq()` imports `muq.MuQ`
without running `muq/__init__.py`, whose eager import of the MuQ-MuLan text tower needs `x_clip`
(and through it torchvision), which we never use.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import math
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

# Marks our stand-in so callers (and tests) can tell it from a real torchaudio.
SHIM_ATTR = "__pianoeval_shim__"


def _hz_to_mel(freq: torch.Tensor, mel_scale: str) -> torch.Tensor:
    """Hz → mel on the HTK or Slaney scale (same formulas as torchaudio and librosa)."""
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(
        freq >= min_log_hz, min_log_mel + torch.log(freq.clamp_min(1e-10) / min_log_hz) / logstep, freq / f_sp
    )


def _mel_to_hz(mels: torch.Tensor, mel_scale: str) -> torch.Tensor:
    """Mel → Hz, the inverse of `_hz_to_mel`."""
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mels >= min_log_mel, min_log_hz * torch.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def melscale_fbanks(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    norm: str | None = None,
    mel_scale: str = "htk",
) -> torch.Tensor:
    """Triangular mel filterbank [n_freqs, n_mels] float32, as `torchaudio.functional.melscale_fbanks`."""
    if norm not in (None, "slaney") or mel_scale not in ("htk", "slaney"):
        raise ValueError(f"unsupported norm={norm!r} or mel_scale={mel_scale!r}")
    # float64 throughout so the filters match librosa to ~1e-7 before the final cast.
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_min = _hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64), mel_scale)
    m_max = _hz_to_mel(torch.tensor(float(f_max), dtype=torch.float64), mel_scale)
    f_pts = _mel_to_hz(torch.linspace(float(m_min), float(m_max), n_mels + 2, dtype=torch.float64), mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb.float()


class MelSpectrogram(nn.Module):
    """Power mel spectrogram [..., S] → [..., n_mels, T], as `torchaudio.transforms.MelSpectrogram`."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_mels: int = 128,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "reflect",
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.power = power
        self.center = center
        self.pad_mode = pad_mode
        self.register_buffer("window", torch.hann_window(self.win_length))
        fb = melscale_fbanks(n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels, sample_rate, norm, mel_scale)
        self.register_buffer("fb", fb)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[..., S] float → [..., n_mels, 1 + S // hop] power mel."""
        shape = waveform.shape
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        ).abs()
        spec = spec.pow(self.power)
        mel = torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)
        return mel.reshape(*shape[:-1], *mel.shape[-2:])


class AmplitudeToDB(nn.Module):
    """Power (or amplitude) → decibels, as `torchaudio.transforms.AmplitudeToDB` with ref 1."""

    def __init__(self, stype: str = "power", top_db: float | None = None) -> None:
        super().__init__()
        self.multiplier = 10.0 if stype == "power" else 20.0
        self.amin = 1e-10
        self.top_db = top_db

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Any shape → same shape in dB (floored at `amax - top_db` per item when `top_db` is set)."""
        x_db = self.multiplier * torch.log10(torch.clamp(x, min=self.amin))
        if self.top_db is not None:
            # torchaudio floors per spectrogram (over the last two dims).
            peak = x_db.amax(dim=(-2, -1), keepdim=True)
            x_db = torch.maximum(x_db, peak - self.top_db)
        return x_db


def _real_torchaudio_available() -> bool:
    """True when a real torchaudio is importable (then no shim is used)."""
    module = sys.modules.get("torchaudio")
    if module is not None:
        return not getattr(module, SHIM_ATTR, False)
    try:
        return importlib.util.find_spec("torchaudio") is not None
    except (ImportError, ValueError):
        return False


def _make_shim_modules() -> dict[str, types.ModuleType]:
    """The three stand-in modules `torchaudio`, `torchaudio.functional`, `torchaudio.transforms`."""
    modules: dict[str, types.ModuleType] = {}
    for name in ("torchaudio", "torchaudio.functional", "torchaudio.transforms"):
        module = types.ModuleType(name, "pianoeval stand-in: only the mel filterbank API muq/transkun call.")
        # A spec without loader: importlib.util.find_spec() (used by availability probes such as
        # transformers') must not raise on a module that has none.
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name == "torchaudio")
        setattr(module, SHIM_ATTR, True)
        modules[name] = module
    modules["torchaudio.functional"].melscale_fbanks = melscale_fbanks
    modules["torchaudio.transforms"].MelSpectrogram = MelSpectrogram
    modules["torchaudio.transforms"].AmplitudeToDB = AmplitudeToDB
    modules["torchaudio"].functional = modules["torchaudio.functional"]
    modules["torchaudio"].transforms = modules["torchaudio.transforms"]
    return modules


@contextlib.contextmanager
def torchaudio_shim() -> Iterator[bool]:
    """Context in which `import torchaudio` gives the stand-in (if torchaudio is missing); True if shimmed.

    The stand-in lives in sys.modules only inside the block, so other libraries probing for torchaudio
    later (transformers, audiomentations) still see that it is absent. Modules imported inside keep
    their reference to it, which is all muq (module-level import) needs; transkun imports torchaudio
    when a model is built, so build it inside the block.
    """
    if _real_torchaudio_available():
        yield False
        return
    added = _make_shim_modules()
    sys.modules.update(added)
    try:
        yield True
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_muq() -> tuple[Any, Any]:
    """(MuQ, MuQConfig) classes from the installed `muq` wheel, without its MuQ-MuLan imports."""
    loaded = sys.modules.get("muq")
    if loaded is not None and hasattr(loaded, "MuQ"):
        return loaded.MuQ, loaded.MuQConfig
    spec = importlib.util.find_spec("muq")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("the `muq` package is not installed: pip install --no-deps muq==0.1.0")
    # Import transformers' pieces before the shim exists, so its import-time probes see no torchaudio.
    importlib.import_module("transformers.modeling_outputs")
    # An un-executed package object: submodule imports (muq.muq.*) resolve through its __path__,
    # and muq/__init__.py (which pulls in muq_mulan -> x_clip -> torchvision) never runs.
    package = importlib.util.module_from_spec(spec)
    sys.modules["muq"] = package
    try:
        with torchaudio_shim():
            core = importlib.import_module("muq.muq")
    except Exception:
        sys.modules.pop("muq", None)
        raise
    package.MuQ, package.MuQConfig = core.MuQ, core.MuQConfig
    return core.MuQ, core.MuQConfig


class _Deferred(types.ModuleType):
    """Stands in for a module that a third-party package imports but rarely uses: the real module is
    imported on the first attribute access."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


@contextlib.contextmanager
def deferred_import(name: str) -> Iterator[None]:
    """Within the block, `import name` binds a `_Deferred` stand-in (unless `name` is already imported);
    afterwards `name` imports normally."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = _Deferred(name)
    try:
        yield
    finally:
        if isinstance(sys.modules.get(name), _Deferred):
            del sys.modules[name]


def import_transkun() -> Any:
    """`transkun.ModelTransformer` (TransKun network, Config); build models inside `torchaudio_shim()`."""
    # transkun.Evaluation imports mir_eval (and through it scipy.stats: half a second) for training metrics
    # that inference never calls; mir_eval is then loaded only if something uses it.
    with deferred_import("mir_eval"):
        return importlib.import_module("transkun.ModelTransformer")
