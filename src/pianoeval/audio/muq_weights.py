"""Released MuQ weights: load them (hub name or local folder) with errors that name their real cause,
and write a model in the released on-disk format (for tests and the CPU rehearsal).

The released folder (`OpenMuQ/MuQ-large-msd-iter`) is what `MuQ.from_pretrained` reads: `config.json`
(the fairseq model config, see `audio.muq_large`) and `model.safetensors` (huggingface_hub's
PyTorchModelHubMixin). A local folder must hold both (the mixin reads no other weights file from a
folder); from the hub it falls back to `pytorch_model.bin`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from pianoeval.core.errors import ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# A hub repository id: "namespace/name" (letters, digits, - _ .), nothing else.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The weights our frames depend on: the conv front end and the conformer (not the pretraining heads).
ENCODER_PREFIXES = ("model.conv.", "model.conformer.")
_PACKAGES = ("muq", "transformers", "huggingface_hub", "safetensors", "torch")


def _versions() -> str:
    """Installed versions of the packages a MuQ load goes through, for incompatibility messages."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in _PACKAGES:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} missing")
    return ", ".join(out)


def is_local(name_or_path: str) -> bool:
    """Whether `name_or_path` means a folder (an existing one, or anything that is not a hub id)."""
    return os.path.isdir(name_or_path) or not _HUB_ID.match(name_or_path)


def check_local_folder(folder: Path) -> None:
    """A ConfigError naming the missing file when `folder` is not a released-format MuQ folder."""
    if not folder.is_dir():
        raise ConfigError(
            "MuQ weights folder not found (audio.muq_name_or_path: a hub name such as "
            "OpenMuQ/MuQ-large-msd-iter, or a folder with config.json and model.safetensors)",
            folder,
        )
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            present = sorted(p.name for p in folder.iterdir())[:8]
            raise ConfigError(f"missing file {name} in the MuQ weights folder (it holds {present})", folder)


def _no_network(source: str) -> str:
    """The message for a hub download that could not reach the hub."""
    from huggingface_hub import constants

    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub did not answer"
    return (
        f"no network: cannot download MuQ weights {source!r} ({why}) and they are not in the local hub "
        "cache; run once with network access, or set audio.muq_name_or_path to a local folder"
    )


def _size_mismatch(exc: Exception) -> str | None:
    """'tensor X is [a] in the file, [b] in the model (and n more)' from a load_state_dict error."""
    found = re.findall(
        r"size mismatch for ([\w.]+): copying a param with shape torch.Size\((\[[^\]]*\])\) from checkpoint, "
        r"the shape in current model is torch.Size\((\[[^\]]*\])\)",
        str(exc),
    )
    if not found:
        return None
    name, have, want = found[0]
    more = f" (and {len(found) - 1} more tensors)" if len(found) > 1 else ""
    return f"shape mismatch: tensor {name} is {have} in the weights file but {want} in the model{more}"


def explain_load_error(source: str, exc: BaseException) -> str:
    """One line saying why loading MuQ weights from `source` failed: missing file, shape mismatch,
    library incompatibility, no network, or the hub's own answer."""
    from huggingface_hub import errors as hub

    kind = type(exc).__name__
    if isinstance(exc, hub.OfflineModeIsEnabled | hub.LocalEntryNotFoundError):
        return _no_network(source)
    if isinstance(exc, ConnectionError | TimeoutError) or kind in ("ConnectError", "ConnectTimeout", "ReadTimeout"):
        return _no_network(source)
    if isinstance(exc, hub.GatedRepoError):
        return f"the hub repository {source!r} is gated: log in (hf auth login) with access to it"
    if isinstance(exc, hub.RepositoryNotFoundError):
        return f"no hub repository {source!r} (and no local folder of that name)"
    if isinstance(exc, hub.EntryNotFoundError):
        return f"missing file in the hub repository {source!r}: {str(exc).splitlines()[0]}"
    if isinstance(exc, FileNotFoundError):
        return f"missing file: {exc.filename or str(exc).splitlines()[0]}"
    mismatch = _size_mismatch(exc)
    if mismatch is not None:
        return f"{mismatch}: config.json does not describe the architecture these weights were saved from"
    if isinstance(exc, ImportError | AttributeError) or "unexpected keyword argument" in str(exc):
        return f"library incompatibility ({kind}: {str(exc).splitlines()[0]}); installed: {_versions()}"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"could not load MuQ weights {source!r} ({kind}: {first})"


def _weights_file(source: str) -> Path | None:
    """The safetensors file a load of `source` read: the folder's, or the hub cache's (None if unknown)."""
    if is_local(source):
        return Path(source) / WEIGHTS_NAME
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, WEIGHTS_NAME)
    return Path(cached) if isinstance(cached, str) else None


def check_encoder_weights(muq: nn.Module, source: str) -> None:
    """ConfigError when the weights file lacks encoder tensors the model has: the mixin loads with
    strict=False, which would leave them silently at their random initial values."""
    path = _weights_file(source)
    if path is None or not path.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        present = set(handle.keys())
    missing = [k for k in muq.state_dict() if k.startswith(ENCODER_PREFIXES) and k not in present]
    if missing:
        raise ConfigError(
            f"missing tensors: the weights file lacks {len(missing)} of the encoder's (e.g. {missing[0]}); "
            "a truncated file or another model's weights",
            path,
        )


def load_released_muq(name_or_path: str, **kwargs: Any) -> nn.Module:
    """`MuQ.from_pretrained(name_or_path)` (the released weights: hub name or local folder), or a
    one-line ConfigError naming the cause."""
    from pianoeval.audio.compat import import_muq

    source = str(name_or_path)
    try:
        muq_cls, _ = import_muq()
    except Exception as exc:  # a missing or incompatible muq / transformers / torch
        raise ConfigError(f"cannot load MuQ weights {source!r}: {explain_load_error(source, exc)}") from exc
    if is_local(source):
        check_local_folder(Path(source))
    try:
        muq = muq_cls.from_pretrained(source, **kwargs)
    except Exception as exc:  # classified: file, shape, library, network, hub
        raise ConfigError(f"cannot load MuQ weights {source!r}: {explain_load_error(source, exc)}") from exc
    check_encoder_weights(muq, source)
    return muq


def save_released_format(muq: nn.Module, folder: str | Path, config: dict[str, Any]) -> Path:
    """Write `muq` as the released folder is laid out: `model.safetensors` (PyTorchModelHubMixin) and
    `config.json` = `config`, as MuQ's converter (convert_muq_fairseq_ckpt_to_huggingface.py) writes it."""
    folder = Path(folder)
    muq.save_pretrained(folder)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return folder


def write_small_release(folder: str | Path, seed: int = 0, **size: Any) -> Path:
    """A MuQ of the released architecture at a small size (`muq_small_config(**size)`, random weights
    seeded by `seed`) written in the released format: what the CPU rehearsal loads through
    `audio.muq_pretrained: true`, exactly as the GPU run loads MuQ-large."""
    from pianoeval.audio.backbones import MuQBackbone, muq_small_config

    config = muq_small_config(**size)
    return save_released_format(MuQBackbone.from_config(config, seed=seed).muq, folder, config)
