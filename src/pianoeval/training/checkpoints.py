"""Rebuild a trained module from a train/fuse fold folder (spec, config, best checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pianoeval.core.io import read_json

log = logging.getLogger(__name__)


def load_trained_module(fold_dir: Path) -> Any:
    """Rebuild a trained module (PerformanceModule, or A1-A3's) from a train/fuse fold folder (spec,
    config, best checkpoint)."""
    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.training.registry import build_module

    spec = read_json(fold_dir / "model_spec.json")
    config = validate_config(yaml.safe_load((fold_dir / "config.yaml").read_text()), fold_dir / "config.yaml")
    if spec["kind"] == "network":
        from pianoeval.training.registry import build_network

        net = build_network(spec["model"], spec["meta"], config)
    else:
        from pianoeval.networks.fusion import build_fusion

        net = build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    # Built before loading: A1/A2 add their LoRA adapters in the constructor.
    module = build_module(spec["model"], net, config, label_mean=None)
    ckpt = fold_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        ckpt = fold_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        from pianoeval.core.errors import InputError

        raise InputError("no checkpoint in this training folder; rerun its rule", fold_dir)
    module.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    module.eval()
    return module
