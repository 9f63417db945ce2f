"""TransKun's encoder (`Backbone`) run by ONNX Runtime: the same network, about half the CPU time.

The encoder is about 70 % of a transcription window's time on CPU. PyTorch runs it as hundreds of
separate ops (GELU on [13k, 1024] tensors, a copy at every transpose between the frequency and time
attention); ONNX Runtime's graph optimiser fuses GELU, the attention and the layout changes, and on this
2-core machine ran the encoder of one 16 s window in 2.0-2.7 CPU s against 4.0-4.8 (docs/benchmarks.md,
"Transcription speed"). The numbers agree with PyTorch's to float rounding (max abs difference 8e-4 on
outputs of magnitude 30), not bit for bit: `transcribe(engine="torch")` keeps the exact old path.

The ONNX graph is exported from the loaded model on first use (about 10-20 s) and cached per user
(`cache_dir()`), keyed by the weights, the input shape and the versions of torch, transkun and this
export (`EXPORT_VERSION`); concurrent processes take a file lock so only one exports.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pianoeval.audio.onnx_runtime import cache_dir, check_available, open_session
from pianoeval.audio.transkun_fast import raw_interval_scores
from pianoeval.audio.transkun_windows import SCORED_OUTPUTS
from pianoeval.core.errors import ConfigError

log = logging.getLogger(__name__)

# Bump when the exported graph would change for the same weights (e.g. a change to the patched attention).
EXPORT_VERSION: int = 1
# The legacy (TorchScript) exporter: no onnxscript needed; opset 17 has every op the encoder uses.
OPSET: int = 17
# The graph's outputs: the encoder's context, and with the interval scorer its raw scores (transkun_fast).
OUTPUTS: tuple[str, ...] = ("ctx",)


def graph_key(
    backbone: nn.Module,
    output_indices: list[int],
    shape: tuple[int, ...],
    scorer: nn.Module | None = None,
    front: nn.Module | None = None,
) -> str:
    """Hash of what the exported graph depends on: weights (the encoder's and, if given, the interval scorer's
    and the mel projection's), output pitches, input shape ([T, F, C], or the power spectrum's), versions."""
    h = hashlib.sha1()
    modules = {"": backbone, "scorer.": scorer, "front.": front}
    for prefix, module in modules.items():
        if module is None:
            continue
        for name, tensor in sorted(module.state_dict().items()):
            h.update((prefix + name).encode())
            h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    meta = [output_indices, list(shape), torch.__version__, importlib.metadata.version("transkun"), EXPORT_VERSION]
    h.update(repr(meta).encode())
    return h.hexdigest()[:20]


class _Wrapped(nn.Module):
    """What gets exported: the encoder with its output pitches fixed, feats [N, T, F, C] → ctx [N, P, T, D].
    With a `scorer`, also TransKun's raw interval scores ([N, P, T, T] and [N, P, T], `transkun_fast`); with a
    `front` (`transkun_fast.MelProjection`), the input is the power spectrum [N, T, windows, bins]."""

    def __init__(
        self,
        backbone: nn.Module,
        output_indices: list[int],
        scorer: nn.Module | None = None,
        front: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.scorer = scorer
        self.front = front
        self.register_buffer("indices", torch.tensor(output_indices), persistent=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TransKun's Backbone.forward (after the mel projection, and with the raw interval scores, if given)."""
        if self.front is not None:
            feats = self.front(feats)
        ctx = self.backbone(feats, outputIndices=self.indices)
        if self.scorer is None:
            return ctx
        return (ctx, *raw_interval_scores(self.scorer, ctx))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def export_backbone(
    backbone: nn.Module,
    output_indices: list[int],
    shape: tuple[int, ...],
    target: Path,
    scorer: nn.Module | None = None,
    front: nn.Module | None = None,
) -> Path:
    """Export `_Wrapped(backbone, output_indices, scorer, front)` for inputs [N, *shape] (N dynamic), atomically."""
    from pianoeval.core.io import atomic_path

    wrapped = _Wrapped(backbone, output_indices, scorer, front).eval()
    outputs = list(OUTPUTS if scorer is None else SCORED_OUTPUTS)
    dummy = torch.zeros(1, *shape)
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        # The tracer warns about TransKun's shape asserts and Python ints: the shapes are fixed per graph.
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                wrapped,
                (dummy,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["feats"],
                output_names=outputs,
                dynamic_axes={name: {0: "n"} for name in ["feats", *outputs]},
            )
    return target


def graph_path(
    backbone: nn.Module,
    output_indices: list[int],
    shape: tuple[int, ...],
    scorer: nn.Module | None = None,
    front: nn.Module | None = None,
) -> Path:
    """The cached ONNX graph of `_Wrapped(...)` for inputs [N, *shape], exported first if missing."""
    key = graph_key(backbone, output_indices, shape, scorer, front)
    name = "backbone" if scorer is None and front is None else "transkun"
    target = cache_dir() / "transkun" / f"{name}-{key}.onnx"
    if target.is_file():
        return target
    with _locked(target.with_suffix(".lock")):
        if not target.is_file():  # another process may have exported it while we waited
            log.info("exporting TransKun's encoder to ONNX (once per machine): %s", target)
            export_backbone(backbone, output_indices, shape, target, scorer, front)
    return target


class _OnnxGraph(nn.Module):
    """An exported `_Wrapped(backbone, output_indices, scorer, front)` run by ONNX Runtime: one session per
    (input shape, threads), the graph exported on first use (`graph_path`)."""

    def __init__(
        self,
        backbone: nn.Module,
        output_indices: list[int],
        scorer: nn.Module | None = None,
        front: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.torch_backbone = backbone
        self.scorer = scorer
        self.front = front
        self.output_indices = list(output_indices)
        self._sessions: dict[tuple[tuple[int, ...], int], Any] = {}
        self._paths: dict[tuple[int, ...], Path] = {}  # hashing the weights takes a tenth of a second
        # Windows computed on several threads at once share one session per thread count (ONNX Runtime runs
        # concurrent calls on one session): created once, under this lock, instead of once per thread.
        self._lock = threading.RLock()

    def path_for(self, shape: tuple[int, ...]) -> Path:
        """The graph for inputs [N, *shape] (exported first if missing)."""
        with self._lock:
            if shape not in self._paths:
                self._paths[shape] = graph_path(
                    self.torch_backbone, self.output_indices, shape, self.scorer, self.front
                )
            return self._paths[shape]

    def session(self, shape: tuple[int, ...], threads: int) -> Any:
        """The session for inputs [N, *shape] on `threads` threads (exporting the graph if needed)."""
        key = (tuple(shape), int(threads))
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = open_session(self.path_for(key[0]), threads)
            return self._sessions[key]

    def run(self, x: torch.Tensor | np.ndarray, outputs: tuple[str, ...], threads: int | None = None) -> list[Any]:
        """The graph's `outputs` (NumPy arrays) for the input x [N, ...], on `threads` intra-op threads
        (default: PyTorch's number at the call, so `torch_threads` and `threads_for_load` govern both engines)."""
        session = self.session(tuple(x.shape[1:]), threads or torch.get_num_threads())
        feats = x.detach().to(torch.float32).cpu().numpy() if isinstance(x, torch.Tensor) else x
        return session.run(list(outputs), {"feats": np.ascontiguousarray(feats, dtype=np.float32)})


class OnnxBackbone(_OnnxGraph):
    """Drop-in for TransKun's `Backbone` at inference: forward(x [N, T, F, C], outputIndices) → [N, P, T, D]."""

    def __init__(self, backbone: nn.Module, output_indices: list[int]) -> None:
        super().__init__(backbone, output_indices)

    def forward(self, x: torch.Tensor, outputIndices: torch.Tensor) -> torch.Tensor:
        """TransKun's Backbone.forward, by ONNX Runtime."""
        if outputIndices.tolist() != self.output_indices:
            raise ConfigError(f"the exported encoder predicts pitches {self.output_indices}, not {outputIndices}")
        return torch.from_numpy(self.run(x, OUTPUTS)[0])


class OnnxWindow(_OnnxGraph):
    """A TransKun window from the power spectrum on: mel projection (`front`), encoder and the raw interval
    scores of `scorer`, in one graph: power [N, T, windows, bins] → (ctx [N, P, T, D], raw [N, P, T, T],
    diag [N, P, T]) (`transkun_fast.FastWindows` runs it by `run(power, SCORED_OUTPUTS)`)."""

    def __init__(self, backbone: nn.Module, output_indices: list[int], scorer: nn.Module, front: nn.Module) -> None:
        super().__init__(backbone, output_indices, scorer, front)


def use_onnx_backbone(model: nn.Module) -> nn.Module:
    """Swap a (CPU, eval) TransKun model's encoder for `OnnxBackbone`; the model is changed in place."""
    check_available()
    model.backbone = OnnxBackbone(model.backbone, list(model.targetMIDIPitch))
    return model
