"""A1-A3's training: subclasses of the one training module base (`training/module.py: ScoreModule`),
around the plain `audio/models.py: AudioScoreNetwork`.

- `AudioTrackModule`: their shared losses (ranking on the heads' ranking utility, supervised
  contrastive against the whole optimisation step, regression, clean/augmented invariance), optimiser
  groups and the DDP handling of parameters that become trainable late.
- `MuQLoRAModel` (A1): LoRA adapters on the backbone's attention projections, or a frozen backbone /
  cached frames.
- `MuQStagedModel` (A2): a self-supervised stage (cross-performer contrastive + augmentation
  invariance), then A1's supervised loss with a fresh optimiser.
- `MuQFullUnfreezeModel` (A3): the whole backbone, unfrozen block by block on an epoch schedule, with
  layer-wise decayed learning rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pianoeval.audio.models import AudioScoreNetwork
from pianoeval.core.constants import AMBIGUOUS_THRESHOLD, N_DIMS
from pianoeval.core.errors import ConfigError
from pianoeval.networks.scorer import ScoreNetwork
from pianoeval.training.module import ScoreModule

# A3's default schedule unfreezes one more layer every this many epochs.
UNFREEZE_EVERY = 2


class AudioTrackModule(ScoreModule):
    """Shared training logic of A1-A3: score heads, projection head, the supervised loss, dev metrics.

    Loss = w_rank * ranking + w_contrastive * contrastive + w_reg * regression + w_inv * invariance:
    ranking is the within-group logistic loss on the ranking head's pair logits, contrastive the
    supervised-contrastive loss with same-segment-group positives, regression the MSE of the scores,
    invariance 1 - cos(z_clean, z_aug) (only when the batch carries an augmented view).
    """

    # backbone_lr=None trains backbone weights at lr times this (LoRA adapters are new weights: 1).
    default_backbone_lr_factor = 1.0

    def __init__(
        self,
        network: AudioScoreNetwork,
        n_dims: int = N_DIMS,
        lr: float = 3e-4,
        backbone_lr: float | None = None,
        weight_decay: float = 0.01,
        w_rank: float = 1.0,
        w_contrastive: float = 0.1,
        w_reg: float = 1.0,
        w_inv: float = 0.1,
        temperature: float = 0.1,
        threshold: float = AMBIGUOUS_THRESHOLD,
        max_epochs: int = 40,
        dropout: float = 0.1,
        projection_dim: int = 128,
        label_mean: list[float] | None = None,
    ) -> None:
        super().__init__()
        # Subclass arguments are collected too (Lightning walks the __init__ frames).
        self.save_hyperparameters(ignore=["network"])
        from pianoeval.networks.heads import ProjectionHead

        # The ranking loss trains the heads' ranking utility (ranking_logits).
        self.net = ScoreNetwork(network, n_dims, dropout=dropout, ranking=True)
        self.projection: nn.Module | None = ProjectionHead(network.hidden_size, projection_dim)
        if not any(w != 0.0 for w in self.contrastive_weights()):
            # No loss trains it, so it is not kept (nor saved). Built first all the same: the random
            # stream, and so the seeded results, stay those of the modules that kept it.
            self.projection = None
        self.loss_weights = self.supervised_weights()
        if not any(v != 0.0 for v in self.loss_weights.values()):
            raise ConfigError("all supervised loss weights (w_rank, w_contrastive, w_reg, w_inv) are 0")
        if label_mean is not None:
            # Start the regression head at the training mean: the first epochs then learn deviations.
            self.heads.init_bias(torch.tensor(label_mean, dtype=torch.float32))
        from pianoeval.audio.step_contrastive import StepMemory

        # The rest of the optimisation step (other micro-batches and ranks) for the contrastive term.
        self.step_memory = StepMemory()

    def supervised_weights(self) -> dict[str, float]:
        """Weights of A1's loss terms, from the constructor."""
        h = self.hparams
        return {
            "ranking": float(h.w_rank),
            "contrastive": float(h.w_contrastive),
            "regression": float(h.w_reg),
            "invariance": float(h.w_inv),
        }

    def contrastive_weights(self) -> list[float]:
        """The contrastive term's weight in each stage this module trains (the projection's only use)."""
        return [self.supervised_weights()["contrastive"]]

    # --- inference: forward, embed, embed_and_score come from ScoreModule (the network's) ---------
    def predict_scores(self, batch: dict[str, Any]) -> torch.Tensor:
        """Scores [B, n_dims] in [0, 1] from the batch's clean view."""
        return self.net(batch)

    def ranking_logits(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_dims] that performance a ranks above b per dimension, from z_a, z_b [B, H]."""
        return self.heads.rank_logits(z_a, z_b)

    # --- losses ----------------------------------------------------------------------------------
    def loss_terms(self, batch: dict[str, Any], z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted loss terms with a nonzero weight that this batch can feed (z [B, H])."""
        from pianoeval.networks.losses import invariance_loss, pairwise_ranking_loss, regression_loss

        w, h = self.loss_weights, self.hparams
        terms: dict[str, torch.Tensor] = {}
        labels, groups = batch.get("labels"), batch.get("group")
        label_mask = batch.get("label_mask")
        if labels is not None and w["ranking"] != 0.0 and groups is not None:
            # Unlabelled rows form no pair: the ranking loss skips NaN targets.
            targets = labels if label_mask is None else labels.masked_fill(~label_mask.bool()[:, None], float("nan"))
            # On utilities u(z): u(z_i) - u(z_j) is exactly ranking_logits(z_i, z_j) for every in-group pair.
            terms["ranking"] = pairwise_ranking_loss(self.heads.utility(z), targets, groups, threshold=h.threshold)
        if labels is not None and w["regression"] != 0.0:
            terms["regression"] = regression_loss(self.heads(z), labels, kind="mse", mask=label_mask)
        if w["contrastive"] != 0.0 and groups is not None:
            # Other performances of the same segment are the positives: what differs between them
            # is the playing, so the projection must keep it while the music itself is shared.
            terms["contrastive"] = self.contrastive_term(self.projection(z), groups)
        if w["invariance"] != 0.0 and self.encoder.has_view(batch, "aug"):
            terms["invariance"] = invariance_loss(z, self.encoder(batch, view="aug"), kind="cosine")
        return terms

    def contrastive_term(self, proj: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Supervised contrastive loss of projections [B, P]; in training under a trainer, against the
        whole optimisation step (the other micro-batches and DDP ranks, `audio.step_contrastive`)."""
        from pianoeval.audio.step_contrastive import contrastive_with_keys

        temperature = self.hparams.temperature
        if not (self.training and self._trainer is not None):
            return contrastive_with_keys(proj, groups, temperature=temperature)
        keys, key_groups = self.step_memory.keys(proj, groups, int(self.trainer.accumulate_grad_batches))
        return contrastive_with_keys(proj, groups, keys, key_groups, temperature=temperature)

    def compute_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Weighted total loss, its unweighted parts (detached), and z [B, H]."""
        z = self.encoder(batch)
        terms = self.loss_terms(batch, z)
        if not terms:
            # Nothing to learn from (e.g. only invariance weighted, no augmented view): a zero on the graph.
            return z.sum() * 0.0, {}, z
        total = sum(self.loss_weights[name] * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}, z

    # --- Lightning hooks -------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Lightning does not call .train() at fit start (it restores per-module flags after
        # validation), so apply the network's rule, frozen backbone parts in eval mode, here.
        self.encoder.train(True)
        # Projections of the last epoch (before validation and maybe a stage switch) are no keys.
        self.step_memory.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        total, parts, z = self.compute_losses(batch)
        bs = z.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        if "contrastive" in parts:
            # Keys beyond this micro-batch: what the step-wide contrastive term saw.
            self.log("train/contrastive_extra_keys", float(self.step_memory.last_n_keys), batch_size=bs)
        if "unlabelled" in batch:
            # A2's self-supervised epochs with unlabelled clips: their share of the batch.
            self.log("train/unlabelled_share", batch["unlabelled"].float().mean(), batch_size=bs)
        return total

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        total, _, z = self.compute_losses(batch)
        self.log("dev/loss", total, batch_size=z.shape[0], sync_dist=True)
        if "labels" in batch and "group" in batch:
            self.record_dev(self.heads(z), batch)

    # --- optimiser -------------------------------------------------------------------------------
    def top_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the backbone: shared encoder, score heads, projection."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("net.encoder.backbone.")]

    def backbone_base_lr(self) -> float:
        """Learning rate of trainable backbone weights: `backbone_lr`, else `lr * default_backbone_lr_factor`."""
        h = self.hparams
        return float(h.backbone_lr if h.backbone_lr is not None else h.lr * self.default_backbone_lr_factor)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: "top" at `lr`, trainable backbone weights ("backbone") at `backbone_base_lr()`."""
        groups = [{"params": self.top_parameters(), "lr": self.hparams.lr, "name": "top"}]
        if self.encoder.backbone is not None:
            backbone = [p for p in self.encoder.backbone.parameters() if p.requires_grad]
            if backbone:
                groups.append({"params": backbone, "lr": self.backbone_base_lr(), "name": "backbone"})
        return groups

    def schedule_epochs(self) -> int:
        """Epochs the cosine schedule spans."""
        return max(1, int(self.hparams.max_epochs))

    # --- late-trainable parameters under DDP -----------------------------------------------------
    def record_trainable_at_wrap(self) -> None:
        """Remember which parameters require a gradient now (once per fit).

        Lightning wraps the model in DDP just before it calls `configure_optimizers`, and DDP only
        averages the gradients of parameters that required one at that moment. Whatever becomes
        trainable later (A3's layers, including the epoch-0 ones unfrozen in configure_optimizers)
        is averaged by `on_before_optimizer_step` instead.
        """
        if getattr(self, "_trainable_at_wrap", None) is None:
            self._trainable_at_wrap = {name for name, p in self.named_parameters() if p.requires_grad}

    def late_trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that require a gradient now but did not when DDP wrapped the model (module order)."""
        wrapped = getattr(self, "_trainable_at_wrap", None)
        if wrapped is None:
            return []
        return [p for name, p in self.named_parameters() if p.requires_grad and name not in wrapped]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Runs once per optimiser step, after the last micro-batch's backward and before clipping:
        # the accumulated gradients of late-trainable parameters are averaged across ranks here, as
        # DDP does for the parameters it registered. A no-op on one device.
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        params = self.late_trainable_parameters()
        if not params:
            return
        # One flat all-reduce; a parameter without a gradient on this rank contributes zeros, so every
        # rank joins the same collective with the same shapes.
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= dist.get_world_size()
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def configure_optimizers(self) -> Any:
        self.record_trainable_at_wrap()
        opt = torch.optim.AdamW(self.param_groups(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.schedule_epochs())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class MuQLoRAModel(AudioTrackModule):
    """A1: LoRA adapters on the backbone's attention projections + shared encoder + 19 heads.

    `lora_rank > 0` adds adapters to `lora_modules` of layers `lora_layers` (numbers 1..N; None = the
    top 4, MuQ-large's 9-12) and
    freezes the rest of the backbone; `lora_rank = 0` keeps the backbone frozen (or, with a network
    built without a backbone, trains on cached `audio_emb` frames).
    """

    def __init__(
        self,
        network: AudioScoreNetwork,
        lora_rank: int = 16,
        lora_alpha: int = 32,
        lora_layers: Sequence[int] | None = None,
        lora_modules: Sequence[str] = ("linear_q", "linear_k", "linear_v"),
        lora_dropout: float = 0.0,
        n_dims: int = N_DIMS,
        lr: float = 3e-4,
        backbone_lr: float | None = None,
        weight_decay: float = 0.01,
        w_rank: float = 1.0,
        w_contrastive: float = 0.1,
        w_reg: float = 1.0,
        w_inv: float = 0.1,
        temperature: float = 0.1,
        threshold: float = AMBIGUOUS_THRESHOLD,
        max_epochs: int = 40,
        dropout: float = 0.1,
        projection_dim: int = 128,
        label_mean: list[float] | None = None,
    ) -> None:
        super().__init__(
            network,
            n_dims=n_dims,
            lr=lr,
            backbone_lr=backbone_lr,
            weight_decay=weight_decay,
            w_rank=w_rank,
            w_contrastive=w_contrastive,
            w_reg=w_reg,
            w_inv=w_inv,
            temperature=temperature,
            threshold=threshold,
            max_epochs=max_epochs,
            dropout=dropout,
            projection_dim=projection_dim,
            label_mean=label_mean,
        )
        if network.backbone is None:
            if lora_rank > 0:
                raise ConfigError("LoRA needs a backbone; for cached audio_emb frames set lora_rank=0")
        elif lora_rank > 0:
            from pianoeval.audio.lora import apply_lora

            network.backbone = apply_lora(
                network.backbone,
                rank=lora_rank,
                alpha=lora_alpha,
                target_layers=lora_layers,
                target_modules=tuple(lora_modules),
                dropout=lora_dropout,
            )
        else:
            network.backbone.requires_grad_(False)


STAGES: tuple[str, ...] = ("self_supervised", "supervised")


class MuQStagedModel(MuQLoRAModel):
    """A2: stage "self_supervised" (cross-performer contrastive + augmentation invariance, no labels
    needed), then `switch_to_supervised()` to A1's loss with a freshly built optimiser.

    The self-supervised stage trains backbone adapters, shared encoder and projection (the score heads
    are not in its optimiser). With `self_supervised_epochs=k` the switch happens at the start of epoch
    k; otherwise call `switch_to_supervised()` yourself. The stage is saved in checkpoints.
    """

    def __init__(
        self,
        network: AudioScoreNetwork,
        stage: str = "self_supervised",
        self_supervised_epochs: int | None = None,
        ssl_w_contrastive: float = 1.0,
        ssl_w_inv: float = 1.0,
        ssl_lr: float | None = None,
        lora_rank: int = 16,
        lora_alpha: int = 32,
        lora_layers: Sequence[int] | None = None,
        lora_modules: Sequence[str] = ("linear_q", "linear_k", "linear_v"),
        lora_dropout: float = 0.0,
        n_dims: int = N_DIMS,
        lr: float = 3e-4,
        backbone_lr: float | None = None,
        weight_decay: float = 0.01,
        w_rank: float = 1.0,
        w_contrastive: float = 0.1,
        w_reg: float = 1.0,
        w_inv: float = 0.1,
        temperature: float = 0.1,
        threshold: float = AMBIGUOUS_THRESHOLD,
        max_epochs: int = 40,
        dropout: float = 0.1,
        projection_dim: int = 128,
        label_mean: list[float] | None = None,
    ) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        super().__init__(
            network,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_layers=lora_layers,
            lora_modules=lora_modules,
            lora_dropout=lora_dropout,
            n_dims=n_dims,
            lr=lr,
            backbone_lr=backbone_lr,
            weight_decay=weight_decay,
            w_rank=w_rank,
            w_contrastive=w_contrastive,
            w_reg=w_reg,
            w_inv=w_inv,
            temperature=temperature,
            threshold=threshold,
            max_epochs=max_epochs,
            dropout=dropout,
            projection_dim=projection_dim,
            label_mean=label_mean,
        )
        if ssl_w_contrastive == 0.0 and ssl_w_inv == 0.0:
            raise ConfigError("the self-supervised stage needs ssl_w_contrastive or ssl_w_inv > 0")
        self.stage = stage
        self._switch_epoch = 0
        self.loss_weights = self.stage_weights(stage)

    def contrastive_weights(self) -> list[float]:
        """The contrastive weight of both stages."""
        return [self.stage_weights(stage)["contrastive"] for stage in STAGES]

    def stage_weights(self, stage: str) -> dict[str, float]:
        """Loss weights of `stage`: self-supervised uses no labels (ranking and regression are 0)."""
        if stage == "supervised":
            return self.supervised_weights()
        h = self.hparams
        return {
            "ranking": 0.0,
            "contrastive": float(h.ssl_w_contrastive),
            "regression": 0.0,
            "invariance": float(h.ssl_w_inv),
        }

    def switch_to_supervised(self) -> None:
        """Move to A1's loss and weights, and (under a trainer) rebuild the optimiser and schedule."""
        if self.stage == "supervised":
            return
        self.stage = "supervised"
        self.loss_weights = self.stage_weights("supervised")
        self._switch_epoch = self.current_epoch
        self.step_memory.reset()
        if self._trainer is not None:
            # A new optimiser rather than a new group: the heads join, AdamW moments shaped by the
            # contrastive objective are dropped, and the cosine schedule restarts for this stage.
            self.trainer.strategy.setup_optimizers(self.trainer)

    def top_parameters(self) -> list[nn.Parameter]:
        """Trainable non-backbone parameters of this stage (the score heads only when supervised)."""
        params = super().top_parameters()
        if self.stage == "supervised":
            return params
        heads = {id(p) for p in self.heads.parameters()}
        return [p for p in params if id(p) not in heads]

    def param_groups(self) -> list[dict[str, Any]]:
        """As A1, at `ssl_lr` (default `lr`) in the self-supervised stage."""
        groups = super().param_groups()
        if self.stage == "self_supervised" and self.hparams.ssl_lr is not None:
            for group in groups:
                group["lr"] = self.hparams.ssl_lr
        return groups

    def schedule_epochs(self) -> int:
        """The cosine schedule of each stage spans that stage's epochs."""
        h = self.hparams
        if self.stage == "self_supervised" and h.self_supervised_epochs is not None:
            return max(1, int(h.self_supervised_epochs))
        return max(1, int(h.max_epochs) - self._switch_epoch)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        k = self.hparams.self_supervised_epochs
        if k is not None and self.stage == "self_supervised" and self.current_epoch >= k:
            self.switch_to_supervised()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["audio_stage"] = {"stage": self.stage, "switch_epoch": self._switch_epoch}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before the trainer builds optimisers on resume, so they get this stage's structure.
        saved = checkpoint.get("audio_stage")
        if saved is not None:
            self.stage = saved["stage"]
            self._switch_epoch = int(saved["switch_epoch"])
            self.loss_weights = self.stage_weights(self.stage)


def default_unfreeze_schedule(depth: int, every: int = UNFREEZE_EVERY) -> dict[int, list[int]]:
    """A3's default schedule: the top 4 layers (9-12 of 12), the top one at epoch 0 and one more
    layer down every `every` epochs ({0: [12], 2: [11], 4: [10], 6: [9]})."""
    from pianoeval.audio.backbones import top_layers

    return {every * k: [layer] for k, layer in enumerate(reversed(top_layers(depth)))}


class MuQFullUnfreezeModel(AudioTrackModule):
    """A3: the full backbone, frozen at first, unfrozen layer by layer on `unfreeze_schedule`.

    `unfreeze_schedule` maps an epoch to layer numbers (1..N, layer i = block i) whose weights start
    training at that epoch (default `default_unfreeze_schedule`: 12, 11, 10, 9 at epochs 0, 2, 4, 6).
    Layer i trains at `backbone_lr * layer_lr_decay ** (N - i)`: the top layer at `backbone_lr`
    (default `lr / 10`), each layer below it `layer_lr_decay` times slower, in its own optimiser
    group `layer.{i}`. Layers unfrozen mid-training join the live optimiser; under DDP their gradients
    are averaged across ranks by `on_before_optimizer_step` (DDP registered none of them). The
    backbone's front end (mel, conv subsampling) and the conformer's final LayerNorm stay frozen.
    """

    # Discriminative rates: 300M pretrained weights move an order of magnitude slower than the new
    # heads (backbone_lr = lr / 10 unless set), and each layer below the top layer_lr_decay slower.
    default_backbone_lr_factor = 0.1

    def __init__(
        self,
        network: AudioScoreNetwork,
        unfreeze_schedule: dict[int, list[int]] | None = None,
        layer_lr_decay: float = 0.8,
        n_dims: int = N_DIMS,
        lr: float = 3e-4,
        backbone_lr: float | None = None,
        weight_decay: float = 0.01,
        w_rank: float = 1.0,
        w_contrastive: float = 0.1,
        w_reg: float = 1.0,
        w_inv: float = 0.1,
        temperature: float = 0.1,
        threshold: float = AMBIGUOUS_THRESHOLD,
        max_epochs: int = 40,
        dropout: float = 0.1,
        projection_dim: int = 128,
        label_mean: list[float] | None = None,
    ) -> None:
        if network.backbone is None:
            raise ConfigError("MuQFullUnfreezeModel needs a network with a backbone (it fine-tunes the backbone)")
        if not 0.0 < layer_lr_decay <= 1.0:
            raise ConfigError(f"layer_lr_decay must be in (0, 1], got {layer_lr_decay}")
        super().__init__(
            network,
            n_dims=n_dims,
            lr=lr,
            backbone_lr=backbone_lr,
            weight_decay=weight_decay,
            w_rank=w_rank,
            w_contrastive=w_contrastive,
            w_reg=w_reg,
            w_inv=w_inv,
            temperature=temperature,
            threshold=threshold,
            max_epochs=max_epochs,
            dropout=dropout,
            projection_dim=projection_dim,
            label_mean=label_mean,
        )
        network.backbone.requires_grad_(False)
        n = self.num_blocks
        if n == 0:
            raise ConfigError(f"{type(network.backbone).__name__} has no blocks to unfreeze")
        from pianoeval.audio.backbones import check_layers

        raw = unfreeze_schedule if unfreeze_schedule is not None else default_unfreeze_schedule(n)
        self.unfreeze_schedule: dict[int, list[int]] = {}
        for epoch, layers in raw.items():
            if int(epoch) < 0:
                raise ConfigError(f"audio.unfreeze_schedule epochs must be >= 0, got {epoch}")
            self.unfreeze_schedule[int(epoch)] = check_layers(layers, n, "audio.unfreeze_schedule")
        # Unfrozen layers (numbers 1..N) in the order they were unfrozen: the order of their optimiser groups.
        self.unfrozen: list[int] = []

    @property
    def num_blocks(self) -> int:
        """Number of backbone blocks (= layers)."""
        return len(self.encoder.backbone.layers())

    def layer_lr(self, layer: int) -> float:
        """Base learning rate of layer `layer` (1..N): backbone_lr * decay ** (N - layer)."""
        return float(self.backbone_base_lr() * self.hparams.layer_lr_decay ** (self.num_blocks - layer))

    def _block(self, layer: int) -> nn.Module:
        """The block whose output is layer `layer` (1..N)."""
        return self.encoder.backbone.layers()[layer - 1]

    def unfreeze_due(self, epoch: int) -> list[int]:
        """Unfreeze every layer scheduled at or before `epoch`; return the newly unfrozen layer numbers."""
        new: list[int] = []
        for when in sorted(self.unfreeze_schedule):
            if when > epoch:
                break
            for layer in self.unfreeze_schedule[when]:
                if layer not in self.unfrozen:
                    self._block(layer).requires_grad_(True)
                    self.unfrozen.append(layer)
                    new.append(layer)
        return new

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: "top" at `lr`, then `layer.{i}` at `layer_lr(i)` per unfrozen layer (unfreezing order)."""
        groups = [{"params": self.top_parameters(), "lr": self.hparams.lr, "name": "top"}]
        for layer in self.unfrozen:
            params = [p for p in self._block(layer).parameters() if p.requires_grad]
            groups.append({"params": params, "lr": self.layer_lr(layer), "name": f"layer.{layer}"})
        return groups

    def configure_optimizers(self) -> Any:
        # What DDP registered when it wrapped the model, before the epoch-0 layers below are unfrozen.
        self.record_trainable_at_wrap()
        # Layers due now (epoch 0 on a fresh run) must be in the first optimiser.
        self.unfreeze_due(self.current_epoch)
        return super().configure_optimizers()

    def on_train_epoch_start(self) -> None:
        new = self.unfreeze_due(self.current_epoch)
        # After unfreezing, so newly trainable blocks leave eval mode (dropout, BatchNorm statistics).
        super().on_train_epoch_start()
        if new and self._trainer is not None and self.trainer.optimizers:
            for layer in new:
                self._add_layer_to_optimizer(layer)

    def _add_layer_to_optimizer(self, layer: int) -> None:
        """Add layer `layer` as a new param group of the live optimiser (and its LR schedulers)."""
        optimizer = self.trainer.optimizers[0]
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for p in self._block(layer).parameters() if p.requires_grad and id(p) not in present]
        if not params:
            return
        base = self.layer_lr(layer)
        top = optimizer.param_groups[0]
        # Join the schedule where the other groups are now: same multiplier of the base rate.
        scale = top["lr"] / top.get("initial_lr", top["lr"])
        optimizer.add_param_group({"params": params, "lr": base * scale, "initial_lr": base, "name": f"layer.{layer}"})
        for config in self.trainer.lr_scheduler_configs:
            # Schedulers keep one base rate per group and zip them strictly with the groups.
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs.append(base)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["unfrozen_layer_numbers"] = list(self.unfrozen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # requires_grad is not in the state dict; restore it (in order) before optimisers are rebuilt.
        # Checkpoints written before layers were numbered from 1 stored 0-based block indices.
        saved = checkpoint.get("unfrozen_layer_numbers")
        if saved is None:
            saved = [int(i) + 1 for i in checkpoint.get("unfrozen_layers", [])]
        self.unfrozen = []
        for layer in saved:
            self._block(int(layer)).requires_grad_(True)
            self.unfrozen.append(int(layer))
