"""Trained fold models for scoring, loaded without Lightning: the very `ScoreNetwork` a training module
held as `net`.

`pianoeval score` needs only the network (encoder + score heads) of each fold model. Building the
training module would import Lightning (and through it torchmetrics, scipy.signal, torch._dynamo):
5-12 s on a 2-core CPU, more than everything else a MIDI score takes. The module's `net.*` weights
load into a freshly built `ScoreNetwork` unchanged; what only training uses (the contrastive
projection) is left out. The same holds for every model `PerformanceModule` trains: the symbolic
encoders, the audio probe and the fusion networks (the served winners of a demo run); A1-A3 load
through their own modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pianoeval.core.constants import N_DIMS
from pianoeval.core.errors import InputError
from pianoeval.core.io import read_json
from pianoeval.core.layout import FoldDir
from pianoeval.networks.scorer import ScoreNetwork


def network_state(state_dict: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of a training module's state dict that belong to its network `net`, named as in it.

    Current checkpoints hold them under `net.`; checkpoints written before the network was one class
    held `encoder.*` and `heads.*` at the top. A ranking utility no loss trained (older symbolic and F3
    checkpoints) is dropped when `net` has none.
    """
    from pianoeval.networks.heads import without_untrained

    if any(k.startswith("net.") for k in state_dict):
        state = {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")}
    else:
        state = {k: v for k, v in state_dict.items() if k.startswith(("encoder.", "heads."))}
    return without_untrained(state, net)


def scoring_encoder(spec: dict[str, Any], config: dict[str, Any]) -> nn.Module | None:
    """The encoder a `PerformanceModule` trained for `spec` (model_spec.json): a symbolic encoder, an
    audio probe on cached frames, or a fusion network; None for the models trained by other modules
    (A1-A3) or not by a network (baselines), which load through their LightningModule or not at all."""
    from pianoeval.core.settings import AudioSettings, FitSettings, SymbolicSettings
    from pianoeval.training.registry import AUDIO_TRACK_MODELS, BASELINES, SYMBOLIC_MODELS, build_network

    if spec["kind"] == "fusion":
        from pianoeval.networks.fusion import build_fusion

        return build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    if spec["kind"] == "network" and spec["model"] not in (*AUDIO_TRACK_MODELS, *BASELINES):
        # Only the section build_network reads for this model (symbolic, or audio for a probe): a fold's
        # other sections (training, fusion, ...) may hold keys of an older version, which loading ignores.
        section = SymbolicSettings if spec["model"] in SYMBOLIC_MODELS else AudioSettings
        settings = FitSettings(seed=int(config["seed"]), **{section.NAME: section.from_config(config)})
        return build_network(spec["model"], spec["meta"], settings)
    return None


def load_scoring_network(fold_dir: Path, config: dict[str, Any]) -> nn.Module:
    """The trained network of a fold folder (model_spec.json + model.ckpt), in eval mode, without Lightning:
    a `ScoreNetwork` for the symbolic encoders, the audio probe and the fusion networks (`scoring_encoder`).

    `config` is the fold's validated config. A1-A3 fall back to their LightningModule, whose forward
    gives the same scores [B, 19].
    """
    folder = FoldDir(fold_dir)
    spec = read_json(folder.model_spec)
    encoder = scoring_encoder(spec, config)
    if encoder is None:
        from pianoeval.training.checkpoints import load_trained_module

        return load_trained_module(fold_dir)
    ckpt = torch.load(folder.checkpoint(), map_location="cpu", weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    net = ScoreNetwork(encoder, n_dims=int(hparams.get("n_dims", N_DIMS)), dropout=float(hparams.get("dropout", 0.1)))
    try:
        net.load_state_dict(network_state(ckpt["state_dict"], net), strict=True)
    except RuntimeError as exc:  # torch lists every missing, unexpected and mis-shaped entry
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise InputError(
            f"checkpoint does not fit this version's {spec['model']} network ({first}); rerun its training rule",
            fold_dir,
        ) from exc
    return net.eval()
