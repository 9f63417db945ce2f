"""ONNX Runtime without PyTorch: where exported graphs are cached, and CPU sessions on them.

`audio.transkun_onnx` exports TransKun's encoder (that needs PyTorch); running a cached graph does not, so
`audio.transcribe_ahead` can start a recording's first windows while PyTorch is still being imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from pianoeval.core.errors import ConfigError

log = logging.getLogger(__name__)

# Where exported graphs go unless PIANOEVAL_CACHE_DIR says otherwise.
CACHE_ENV = "PIANOEVAL_CACHE_DIR"


def available() -> bool:
    """Whether onnxruntime (to run the graph) and onnx (which torch's exporter needs) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def check_available() -> None:
    """ConfigError saying what to install unless `available()`."""
    if not available():
        raise ConfigError(
            "the onnx engine needs onnxruntime and onnx: pip install onnxruntime==1.31.1 onnx==1.16.1 "
            "(or set PIANOEVAL_TRANSCRIBE_ENGINE=torch)"
        )


def cache_dir() -> Path:
    """$PIANOEVAL_CACHE_DIR, else $XDG_CACHE_HOME/pianoeval, else ~/.cache/pianoeval."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pianoeval"


def cpu_tag() -> str:
    """Short hash of what an optimised graph is specific to: ONNX Runtime's version and the CPU's instruction
    sets (its NCHWc layout transform picks the vector width)."""
    import platform

    import onnxruntime as ort

    flags = f"{platform.machine()} {platform.processor()}"
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next((line for line in lines if line.startswith("flags")), flags)
    return hashlib.sha1(f"{ort.__version__} {flags}".encode()).hexdigest()[:10]


def open_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session on `path` with `threads` intra-op threads.

    ONNX Runtime's graph optimisation takes 0.2-0.4 s at every session start; the optimised graph is kept
    beside `path` (per CPU, `cpu_tag`) and later sessions load it as it is.
    """
    import onnxruntime as ort

    from pianoeval.core.errors import OutputError
    from pianoeval.core.io import atomic_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers and hardware-specific graphs are noise
    optimised = path.with_name(f"{path.stem}.opt-{cpu_tag()}.onnx")
    if optimised.is_file():
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(optimised), options, providers=["CPUExecutionProvider"])
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        with atomic_path(optimised, suffix=".onnx") as tmp:
            options.optimized_model_filepath = str(tmp)
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except OutputError as exc:  # a read-only cache: optimise at every start
        log.warning("could not keep the optimised graph (%s)", exc)
        options.optimized_model_filepath = ""
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
