"""The audio models' network: `AudioScoreNetwork`, an optional waveform backbone in front of the shared
`EmbeddingSequenceEncoder` (`audio/encoders.py`: cached frames `audio_emb [B, F, D]` → z, the probe's
encoder). A plain `nn.Module`: A1-A3's training (LoRA, stages, unfreezing) lives in
`training/audio_modules.py`, as subclasses of the one training module base.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pianoeval.audio.encoders import EmbeddingSequenceEncoder
from pianoeval.core.errors import ConfigError, InputError

# Batch keys of each view: (waveform, cached frames, cached-frame mask). A waveform `wave` has its
# mask at `wave_mask` (and `wave_aug_mask`), as `multi_task_collate_fn` names them.
VIEW_KEYS: dict[str, tuple[str, str, str]] = {
    "clean": ("wave", "audio_emb", "audio_mask"),
    "aug": ("wave_aug", "audio_aug", "audio_aug_mask"),
}


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """Recompute each backbone block's activations during backward (less memory, ~30% more compute)."""
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = backbone.layers()
    # transformers' GradientCheckpointingLayer (MuQ's conformer blocks) checkpoints `forward` when
    # these two attributes are set; the hidden-state hooks sit on `__call__`, outside the checkpoint.
    if not blocks or not all(isinstance(block, GradientCheckpointingLayer) for block in blocks):
        raise ConfigError(
            f"gradient checkpointing is implemented for MuQ's conformer blocks, not for {type(backbone).__name__}"
        )
    for block in blocks:
        block.gradient_checkpointing = True
        block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)


class AudioScoreNetwork(nn.Module):
    """Audio batch → z [B, hidden]: `wave [B, S]` through `backbone`, or cached `audio_emb [B, F, D]`,
    then the shared `EmbeddingSequenceEncoder`.

    With a backbone, a batch carrying `wave` is embedded live (gradients reach whatever in the backbone
    is trainable); a batch with only `audio_emb` uses the cached frames. Backbone parts whose weights
    are all frozen run in eval mode even while training (see `train`).
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        in_dim: int | None = None,
        hidden: int = 512,
        context_layers: int = 1,
        heads: int = 8,
        dropout: float = 0.1,
        hidden_layers: Sequence[int] | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if backbone is None and in_dim is None:
            raise ConfigError("AudioScoreNetwork needs a backbone or `in_dim`, the size of the cached frames")
        if backbone is not None and in_dim is not None and in_dim != backbone.hidden_size:
            raise ConfigError(f"in_dim={in_dim} differs from the backbone's hidden size {backbone.hidden_size}")
        self.backbone = backbone
        self.in_dim = int(in_dim if in_dim is not None else backbone.hidden_size)
        # Which backbone layers (1..N) to average; None = the backbone's probe_layers (MuQ: the top 4).
        if hidden_layers is not None and backbone is not None:
            from pianoeval.audio.backbones import check_layers

            hidden_layers = check_layers(hidden_layers, backbone.num_layers, "audio.hidden_layers")
        self.hidden_layers = list(hidden_layers) if hidden_layers is not None else None
        self.sequence_encoder = EmbeddingSequenceEncoder(self.in_dim, hidden, context_layers, heads, dropout)
        self.hidden_size = hidden
        if gradient_checkpointing:
            if backbone is None:
                raise ConfigError("gradient_checkpointing needs a backbone (cached frames have no backbone pass)")
            enable_gradient_checkpointing(backbone)

    def backbone_trainable(self) -> bool:
        """True when some backbone weight (a LoRA adapter, an unfrozen block) requires a gradient."""
        return self.backbone is not None and any(p.requires_grad for p in self.backbone.parameters())

    def has_view(self, batch: dict[str, Any], view: str = "aug") -> bool:
        """Whether `batch` carries `view` ("clean" or "aug") in a form this network can read."""
        wave_key, emb_key, _ = VIEW_KEYS[view]
        return (self.backbone is not None and wave_key in batch) or emb_key in batch

    def frames(self, batch: dict[str, Any], view: str = "clean") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frame embeddings [B, F, D] and mask [B, F] of one view, live from the waveform or cached."""
        wave_key, emb_key, mask_key = VIEW_KEYS[view]
        if self.backbone is not None and wave_key in batch:
            wave, wave_mask = batch[wave_key], batch.get(f"{wave_key}_mask")
            if self.backbone_trainable():
                return self.backbone(wave, wave_mask, layers=self.hidden_layers)
            # A fully frozen backbone needs no graph: this keeps activation memory at inference level.
            with torch.no_grad():
                return self.backbone(wave, wave_mask, layers=self.hidden_layers)
        if emb_key in batch:
            emb = batch[emb_key]
            if emb.shape[-1] != self.in_dim:
                raise InputError(
                    f"cached frames {emb_key!r} have size {emb.shape[-1]}, the network expects {self.in_dim}; "
                    "re-run the embed rule with this backbone"
                )
            return emb, batch.get(mask_key)
        wanted = f"{wave_key!r} or {emb_key!r}" if self.backbone is not None else repr(emb_key)
        raise InputError(f"the batch has no {view} audio: expected {wanted}, got keys {sorted(batch)}")

    def forward(self, batch: dict[str, Any], view: str = "clean") -> torch.Tensor:
        """z [B, hidden] of one view ("clean": `wave`/`audio_emb`; "aug": `wave_aug`/`audio_aug`)."""
        emb, mask = self.frames(batch, view)
        return self.sequence_encoder({"audio_emb": emb, "audio_mask": mask})

    def train(self, mode: bool = True) -> AudioScoreNetwork:
        """Set train/eval mode; frozen backbone parts stay in eval mode."""
        super().train(mode)
        if mode and self.backbone is not None:
            # Weights nobody learns should not see dropout noise, and their BatchNorm running
            # statistics (MuQ's conv front end and conformer conv modules) must not drift.
            for module in self.backbone.modules():
                params = list(module.parameters())
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self
