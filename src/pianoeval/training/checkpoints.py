"""Rebuild a trained module from a train/fuse fold folder (spec, config, best checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pianoeval.core.io import read_json
from pianoeval.core.layout import FoldDir

log = logging.getLogger(__name__)


def load_trained_module(fold_dir: Path) -> Any:
    """Rebuild a trained module (PerformanceModule, or A1-A3's) from a train/fuse fold folder (spec,
    config, best checkpoint)."""
    import yaml

    from pianoeval.core.config import validate_config
    from pianoeval.training.registry import build_module

    folder = FoldDir(fold_dir)
    spec = read_json(folder.model_spec)
    config = validate_config(yaml.safe_load(folder.config.read_text()), folder.config)
    if spec["kind"] == "network":
        from pianoeval.training.registry import build_network

        net = build_network(spec["model"], spec["meta"], config)
    else:
        from pianoeval.networks.fusion import build_fusion

        net = build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    # Built before loading: A1/A2 add their LoRA adapters in the constructor.
    module = build_module(spec["model"], net, config, label_mean=None)
    module.load_state_dict(torch.load(folder.checkpoint(), weights_only=False)["state_dict"])
    module.eval()
    return module
