"""A fold folder's weights: `model.ckpt` written from Lightning's chosen checkpoint, and the trained
module rebuilt from a train/fuse fold folder (spec, config, model.ckpt)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pianoeval.core.io import read_json, save_torch
from pianoeval.core.layout import FoldDir

log = logging.getLogger(__name__)

# The checkpoint entries a trained model loads (the rest is training state: optimiser, schedulers, loops).
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters")


def slim_checkpoint(checkpoint: Path | dict[str, Any]) -> dict[str, Any]:
    """A Lightning checkpoint's weights and hyper-parameters (what scoring loads): the same tensors.
    `checkpoint` is its path, or its contents already loaded onto the CPU."""
    if isinstance(checkpoint, dict):
        return {k: checkpoint[k] for k in CHECKPOINT_KEYS if k in checkpoint}
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return {k: ckpt[k] for k in CHECKPOINT_KEYS if k in ckpt}


def write_model(checkpoint: Path | dict[str, Any], out_dir: Path) -> Path:
    """Write the fold folder's declared `model.ckpt` from Lightning's chosen `checkpoint` (its path or its
    contents on the CPU; slimmed), atomically."""
    target = FoldDir(out_dir).model
    save_torch(slim_checkpoint(checkpoint), target)
    return target


def module_state(state_dict: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict in `module`'s layout. Checkpoints written before the training modules
    held their network as `net` name its parts `encoder.*`, `heads.*` (now `net.encoder.*`,
    `net.heads.*`), and may hold parameters no loss trained (a ranking utility, the contrastive
    projection at weight 0) that the module no longer has: those are dropped."""
    from pianoeval.networks.heads import without_untrained

    if not any(k.startswith("net.") for k in state_dict):
        state_dict = {(f"net.{k}" if k.startswith(("encoder.", "heads.")) else k): v for k, v in state_dict.items()}
    return without_untrained(state_dict, module, prefixes=("projection.",))


def load_trained_module(fold_dir: Path) -> Any:
    """Rebuild a trained module (PerformanceModule, or A1-A3's) from a train/fuse fold folder (spec,
    config, model.ckpt)."""
    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.core.settings import FitSettings
    from pianoeval.training.registry import build_module

    folder = FoldDir(fold_dir)
    spec = read_json(folder.model_spec)
    config = validate_config(yaml.safe_load(folder.config.read_text()), folder.config)
    settings = FitSettings.from_config(config).for_model(str(spec["model"]))
    if spec["kind"] == "network":
        from pianoeval.training.registry import build_network

        net = build_network(spec["model"], spec["meta"], settings)
    else:
        from pianoeval.networks.fusion import build_fusion

        net = build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    # Built before loading: A1/A2 add their LoRA adapters in the constructor.
    module = build_module(spec["model"], net, settings, label_mean=None)
    module.load_state_dict(module_state(torch.load(folder.checkpoint(), weights_only=False)["state_dict"], module))
    module.eval()
    return module
