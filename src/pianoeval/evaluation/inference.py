"""Trained fold models as plain `nn.Module`s for scoring, loaded without Lightning.

`pianoeval score` needs only the encoder and the regression heads of each fold model. Building the
`PerformanceModule` would import Lightning (and through it torchmetrics, scipy.signal, torch._dynamo):
5-12 s on a 2-core CPU, more than everything else a MIDI score takes. `ScoringNetwork` holds the same
`encoder` and `heads` submodules under the same names, so the checkpoint's `encoder.*` and `heads.*`
weights load into it unchanged; the projection head (contrastive pretraining only) is left out. The
same holds for every model a `PerformanceModule` trains: the symbolic encoders, the audio probe and
the fusion networks (the served winners of a demo run); A1-A3 load through their own modules.
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
from pianoeval.networks.heads import ScoreHeads, scores_from

# The checkpoint entries that scoring uses (PerformanceModule's attribute names).
SCORING_PREFIXES = ("encoder.", "heads.")


class ScoringNetwork(nn.Module):
    """Encoder + score heads: batch → scores [B, 19] in (0, 1), as `PerformanceModule.forward`."""

    def __init__(self, encoder: nn.Module, n_dims: int = N_DIMS, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = ScoreHeads(encoder.hidden_size, n_dims, dropout=dropout)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scores [B, 19] in (0, 1): the same `scores_from` as PerformanceModule.forward."""
        # The encoder runs first: a wide & deep encoder sets batch["wide_logits"] for the heads.
        return self.scores_from(self.encoder(batch), batch)

    def scores_from(self, z: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Scores [B, 19] from the encoder's embedding z [B, H] of `batch` (as PerformanceModule.scores_from)."""
        return scores_from(self.encoder, self.heads, z, batch)


def scoring_encoder(spec: dict[str, Any], config: dict[str, Any]) -> nn.Module | None:
    """The encoder a `PerformanceModule` trained for `spec` (model_spec.json): a symbolic encoder, an
    audio probe on cached frames, or a fusion network; None for the models trained by other modules
    (A1-A3) or not by a network (baselines), which load through their LightningModule or not at all."""
    from pianoeval.training.registry import AUDIO_TRACK_MODELS, BASELINES, build_network

    if spec["kind"] == "fusion":
        from pianoeval.networks.fusion import build_fusion

        return build_fusion(spec["model"], spec["audio_dim"], spec["symbolic_dim"], hidden=spec["hidden"])
    if spec["kind"] == "network" and spec["model"] not in (*AUDIO_TRACK_MODELS, *BASELINES):
        return build_network(spec["model"], spec["meta"], config)
    return None


def load_scoring_network(fold_dir: Path, config: dict[str, Any]) -> nn.Module:
    """The trained scorer of a fold folder (model_spec.json + checkpoint), in eval mode, without Lightning:
    symbolic encoders, the audio probe and the fusion networks (`scoring_encoder`).

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
    net = ScoringNetwork(encoder, n_dims=int(hparams.get("n_dims", N_DIMS)), dropout=float(hparams.get("dropout", 0.1)))
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(SCORING_PREFIXES)}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch lists every missing, unexpected and mis-shaped entry
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise InputError(
            f"checkpoint does not fit this version's {spec['model']} network ({first}); rerun its training rule",
            fold_dir,
        ) from exc
    return net.eval()
