"""Audio models A1-A3 on a tiny random-weight MuQ and on cached frames: where LoRA sits and what learns,
shapes and score range, the loss terms, loss decrease, A2's stage switch and A3's unfreezing schedule."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from pianoeval.audio.backbones import LogMelBackbone, MuQBackbone, muq_small_config
from pianoeval.audio.models import AudioScoreNetwork
from pianoeval.core.constants import LABEL_MIN, N_DIMS
from pianoeval.core.errors import ConfigError
from pianoeval.data.datasets import multi_task_collate_fn
from pianoeval.training.audio_modules import AudioTrackModule, MuQFullUnfreezeModel, MuQLoRAModel, MuQStagedModel

N_BLOCKS = 3
EMB_DIM = 16  # size of the synthetic cached frames
HIDDEN = 32  # z size at test scale (512 on GPU)
N_SAMPLES = 24_000  # 1 s at 24 kHz → 25 MuQ frames


def tiny_muq() -> MuQBackbone:
    """The MuQ architecture at toy size with random weights (3 conformer blocks, D = 32)."""
    config = muq_small_config(encoder_dim=32, encoder_depth=N_BLOCKS, heads=2, conv_dim=8)
    return MuQBackbone.from_config(config, seed=0)


def network(backbone: nn.Module | None = None, dropout: float = 0.1) -> AudioScoreNetwork:
    """The shared network at test size: a backbone, or cached frames of size EMB_DIM."""
    in_dim = None if backbone is not None else EMB_DIM
    return AudioScoreNetwork(backbone, in_dim=in_dim, hidden=HIDDEN, context_layers=1, heads=2, dropout=dropout)


def items(n: int = 8, n_groups: int = 4, seed: int = 0, wave: bool = False, aug: bool = True) -> list[dict[str, Any]]:
    """n labelled items, two performances per segment group; cached frames of varying length, or waves."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        item: dict[str, Any] = {
            "labels": LABEL_MIN + (1 - LABEL_MIN) * torch.rand(N_DIMS, generator=gen),
            "group": torch.tensor(i % n_groups),
        }
        if wave:
            # A tone per item (pitch and loudness differ) over light noise, so items are distinguishable.
            t = torch.arange(N_SAMPLES) / N_SAMPLES
            tone = (0.05 + 0.05 * i) * torch.sin(2 * torch.pi * (220.0 + 110.0 * i) * t)
            item["wave"] = tone + 0.01 * torch.randn(N_SAMPLES, generator=gen)
            if aug:
                item["wave_aug"] = item["wave"] + 0.02 * torch.randn(N_SAMPLES, generator=gen)
        else:
            frames = 0.5 * torch.randn(10 + i, EMB_DIM, generator=gen)
            item["audio_emb"] = frames
            if aug:
                item["audio_aug"] = frames + 0.1 * torch.randn(frames.shape, generator=gen)
        out.append(item)
    return out


def batch_of(**kwargs: Any) -> dict[str, Any]:
    """One collated batch (the pipeline's collate: masks, label_mask)."""
    return multi_task_collate_fn(items(**kwargs))


def a1_lora(dropout: float = 0.1, **kw: Any) -> MuQLoRAModel:
    return MuQLoRAModel(network(tiny_muq(), dropout), lora_rank=4, lora_alpha=8, dropout=dropout, **kw)


def a1_frozen(dropout: float = 0.1, **kw: Any) -> MuQLoRAModel:
    return MuQLoRAModel(network(tiny_muq(), dropout), lora_rank=0, dropout=dropout, **kw)


def a1_cached(dropout: float = 0.1, **kw: Any) -> MuQLoRAModel:
    return MuQLoRAModel(network(None, dropout), lora_rank=0, dropout=dropout, **kw)


def a2_cached(dropout: float = 0.1, **kw: Any) -> MuQStagedModel:
    return MuQStagedModel(network(None, dropout), lora_rank=0, dropout=dropout, **kw)


def a3_unfreeze(dropout: float = 0.1, **kw: Any) -> MuQFullUnfreezeModel:
    kw.setdefault("unfreeze_schedule", {0: [N_BLOCKS]})
    return MuQFullUnfreezeModel(network(tiny_muq(), dropout), dropout=dropout, **kw)


# (builder, batch uses waves)
VARIANTS: dict[str, tuple[Callable[..., AudioTrackModule], bool]] = {
    "a1-lora-wave": (a1_lora, True),
    "a1-frozen-wave": (a1_frozen, True),
    "a1-cached": (a1_cached, False),
    "a2-cached": (a2_cached, False),
    "a3-unfreeze-wave": (a3_unfreeze, True),
}


# --- A1: LoRA placement and what receives gradients ---------------------------------------------


@pytest.mark.parametrize(
    ("layers", "modules", "blocks"),
    [(None, ("linear_q", "linear_k", "linear_v"), [0, 1, 2]), ([3], ("linear_q", "linear_v"), [2])],
    ids=["qkv-default-top-four", "qv-top-layer"],
)
def test_lora_model_adapters_and_gradients(
    layers: list[int] | None, modules: tuple[str, ...], blocks: list[int]
) -> None:
    torch.manual_seed(0)
    model = a1_lora(lora_layers=layers, lora_modules=modules)
    wrapped = {name for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {
        f"net.encoder.backbone.muq.model.conformer.layers.{i}.self_attn.{m}" for i in blocks for m in modules
    }
    # Trainable = adapters inside the backbone, everything outside it.
    for name, param in model.named_parameters():
        in_backbone = name.startswith("net.encoder.backbone.")
        assert param.requires_grad == (not in_backbone or bool(re.search(r"\.lora_[AB]\.", name))), name

    model.train()
    batch = batch_of(wave=True)
    backbone_before = {k: v.clone() for k, v in model.encoder.backbone.state_dict().items() if "lora_" not in k}
    optimizer = model.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    for _ in range(2):  # LoRA B starts at 0, so A's gradient is nonzero from the second step on
        optimizer.zero_grad()
        model.compute_losses(batch)[0].backward()
        optimizer.step()
    for name, param in model.named_parameters():
        if name.startswith("net.encoder.backbone.") and "lora_" not in name:
            assert param.grad is None, name
        elif name == "net.heads.ranking.4.bias":
            # The utility's output bias cancels in u(z_a) - u(z_b): its gradient is exactly zero.
            assert param.grad is not None and not param.grad.any()
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    # Frozen weights and BatchNorm statistics (kept in eval mode) did not move.
    after = model.encoder.backbone.state_dict()
    for key, value in backbone_before.items():
        torch.testing.assert_close(after[key], value, msg=key)


def test_frozen_backbone_has_nothing_trainable_and_no_graph() -> None:
    model = a1_frozen()
    assert not any(p.requires_grad for p in model.encoder.backbone.parameters())
    model.train()
    assert not model.encoder.backbone.training  # a frozen backbone runs as at inference
    emb, _ = model.encoder.frames(batch_of(wave=True))
    assert not emb.requires_grad


# --- shapes, score range, ranking logits ----------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_shapes_scores_and_ranking_logits(variant: str) -> None:
    build, wave = VARIANTS[variant]
    torch.manual_seed(0)
    model = build().eval()
    batch = batch_of(n=6, n_groups=3, wave=wave)
    with torch.no_grad():
        z = model.embed(batch)
        scores = model.predict_scores(batch)
        logits = model.ranking_logits(z[:3], z[3:])
        flipped = model.ranking_logits(z[3:], z[:3])
        forward = model(batch)
    assert z.shape == (6, HIDDEN) and torch.isfinite(z).all()
    assert scores.shape == (6, N_DIMS)
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    assert logits.shape == (3, N_DIMS)
    torch.testing.assert_close(logits, -flipped, rtol=0, atol=0)
    torch.testing.assert_close(forward, scores)
    torch.testing.assert_close(model.embed_and_score(batch)[1], scores)


def test_cached_padding_does_not_change_z() -> None:
    model = a1_cached().eval()
    batch = batch_of(n=4, n_groups=2, aug=False)
    padded = dict(batch)
    extra = 5
    padded["audio_emb"] = torch.cat([batch["audio_emb"], 100 * torch.randn(4, extra, EMB_DIM)], dim=1)
    padded["audio_mask"] = torch.cat([batch["audio_mask"], torch.zeros(4, extra, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(padded), model.embed(batch), rtol=1e-5, atol=1e-5)


# --- loss terms -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "aug", "expected"),
    [
        ({}, True, {"ranking", "contrastive", "regression", "invariance"}),
        ({}, False, {"ranking", "contrastive", "regression"}),
        ({"w_contrastive": 0.0, "w_inv": 0.0}, True, {"ranking", "regression"}),
        ({"w_rank": 0.0, "w_reg": 0.0, "w_contrastive": 0.0, "w_inv": 2.0}, True, {"invariance"}),
    ],
    ids=["all-with-aug", "no-aug-no-invariance", "rank-reg-only", "invariance-only"],
)
def test_loss_terms_follow_weights_and_views(weights: dict[str, float], aug: bool, expected: set[str]) -> None:
    torch.manual_seed(0)
    model = a1_cached(**weights).train()
    total, parts, _ = model.compute_losses(batch_of(aug=aug))
    assert set(parts) == expected
    assert all(float(v) > 0 for v in parts.values())
    w = model.loss_weights
    assert float(total) == pytest.approx(sum(w[k] * float(v) for k, v in parts.items()), rel=1e-5)


def test_unlabelled_rows_form_no_ranking_pair() -> None:
    model = a1_cached(w_contrastive=0.0, w_inv=0.0, w_reg=0.0).eval()
    batch = batch_of(n=4, n_groups=2, aug=False)
    # One performance of each group unlabelled: no pair is left, so the ranking loss is exactly 0.
    batch["label_mask"] = torch.tensor([True, True, False, False])
    _, parts, _ = model.compute_losses(batch)
    assert float(parts["ranking"]) == 0.0


# --- optimisation on a fixed batch ----------------------------------------------------------------


def _eval_loss(model: AudioTrackModule, batch: dict[str, Any]) -> float:
    model.eval()
    with torch.no_grad():
        return float(model.compute_losses(batch)[0])


@pytest.mark.parametrize(
    ("variant", "supervised"),
    [
        ("a1-cached", True),
        ("a1-lora-wave", True),
        ("a2-cached", False),
        ("a2-cached", True),
        ("a3-unfreeze-wave", True),
    ],
    ids=["a1-cached", "a1-lora-wave", "a2-self-supervised", "a2-supervised", "a3-top-block"],
)
def test_loss_decreases_on_fixed_batch(variant: str, supervised: bool) -> None:
    build, wave = VARIANTS[variant]
    torch.manual_seed(0)
    # No dropout: on a tiny batch its noise would swamp what 25 steps can fit.
    model = build(dropout=0.0, lr=3e-3, backbone_lr=3e-3)
    if isinstance(model, MuQStagedModel) and supervised:
        model.switch_to_supervised()
    batch = batch_of(wave=wave)
    before = _eval_loss(model, batch)
    optimizer = model.configure_optimizers()["optimizer"]
    for _ in range(25):
        model.train()
        optimizer.zero_grad()
        model.compute_losses(batch)[0].backward()
        optimizer.step()
    after = _eval_loss(model, batch)
    assert after < 0.8 * before, (before, after)


# --- A2: the stage switch -------------------------------------------------------------------------


def test_staged_switch_changes_terms_and_optimiser() -> None:
    torch.manual_seed(0)
    model = a2_cached(ssl_lr=1e-3, lr=2e-4).train()
    batch = batch_of()
    head_ids = {id(p) for p in model.heads.parameters()}

    assert model.stage == "self_supervised"
    total, parts, _ = model.compute_losses(batch)
    assert set(parts) == {"contrastive", "invariance"}  # no label is used
    ssl_opt = model.configure_optimizers()["optimizer"]
    ssl_params = {id(p) for g in ssl_opt.param_groups for p in g["params"]}
    assert not head_ids & ssl_params
    assert {g["lr"] for g in ssl_opt.param_groups} == {1e-3}
    total.backward()
    assert all(p.grad is None for p in model.heads.parameters())

    model.switch_to_supervised()
    assert model.stage == "supervised" and model.loss_weights == model.supervised_weights()
    _, parts, _ = model.compute_losses(batch)
    assert set(parts) == {"ranking", "contrastive", "regression", "invariance"}
    assert float(parts["ranking"]) > 0 and float(parts["regression"]) > 0
    sup_opt = model.configure_optimizers()["optimizer"]
    assert head_ids <= {id(p) for g in sup_opt.param_groups for p in g["params"]}
    assert {g["lr"] for g in sup_opt.param_groups} == {2e-4}

    # The stage travels with checkpoints (restored before a resumed run builds its optimiser).
    checkpoint: dict[str, Any] = {}
    model.on_save_checkpoint(checkpoint)
    fresh = a2_cached()
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.stage == "supervised" and fresh.loss_weights == fresh.supervised_weights()


class _Recorder(L.Callback):
    """Per training epoch: the live optimiser, its groups, the logged metric names, block weights."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        record: dict[str, Any] = {
            "optimizer": optimizer,
            "param_ids": {id(p) for g in optimizer.param_groups for p in g["params"]},
            "groups": [(g.get("name"), g["lr"], g.get("initial_lr")) for g in optimizer.param_groups],
            "metrics": set(trainer.callback_metrics),
        }
        backbone = pl_module.encoder.backbone
        if backbone is not None:
            record["trainable_blocks"] = {
                i for i, block in enumerate(backbone.layers()) if any(p.requires_grad for p in block.parameters())
            }
            record["blocks"] = [{k: v.clone() for k, v in b.state_dict().items()} for b in backbone.layers()]
        self.epochs.append(record)


def _fit(model: L.LightningModule, data: list[dict[str, Any]], max_epochs: int) -> _Recorder:
    recorder = _Recorder()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[recorder],
    )
    loader = DataLoader(data, batch_size=4, shuffle=False, collate_fn=multi_task_collate_fn)
    trainer.fit(model, loader)
    return recorder


def test_staged_switch_under_trainer_rebuilds_optimiser() -> None:
    torch.manual_seed(0)
    model = a2_cached(self_supervised_epochs=1, max_epochs=2)
    head_ids = {id(p) for p in model.heads.parameters()}
    epochs = _fit(model, items(), max_epochs=2).epochs
    assert model.stage == "supervised"
    assert epochs[0]["optimizer"] is not epochs[1]["optimizer"]
    assert not head_ids & epochs[0]["param_ids"] and head_ids <= epochs[1]["param_ids"]
    assert "train/ranking" not in epochs[0]["metrics"] and "train/contrastive" in epochs[0]["metrics"]
    assert {"train/ranking", "train/regression"} <= epochs[1]["metrics"]


# --- A3: unfreezing schedule and layer-wise learning rates ----------------------------------------


def test_full_unfreeze_schedule_under_trainer() -> None:
    torch.manual_seed(0)
    lr, decay = 1e-3, 0.5
    model = MuQFullUnfreezeModel(
        network(tiny_muq()),
        unfreeze_schedule={0: [3], 1: [2]},
        layer_lr_decay=decay,
        lr=lr,
        backbone_lr=lr,
        max_epochs=6,
    )
    backbone = model.encoder.backbone
    initial = [{k: v.clone() for k, v in b.state_dict().items()} for b in backbone.layers()]
    front_end = {k: v.clone() for k, v in backbone.muq.model.conv.state_dict().items()}
    epochs = _fit(model, items(wave=True, aug=True), max_epochs=3).epochs

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    # trainable_blocks holds 0-based positions in the block list: layer i is block i - 1.
    assert [e["trainable_blocks"] for e in epochs] == [{2}, {1, 2}, {1, 2}]
    # One live optimiser; layer 2 joins it as a new group at epoch 1.
    assert epochs[0]["optimizer"] is epochs[1]["optimizer"] is epochs[2]["optimizer"]
    assert [g[0] for g in epochs[0]["groups"]] == ["top", "layer.3"]
    assert [g[0] for g in epochs[2]["groups"]] == ["top", "layer.3", "layer.2"]
    # backbone_lr * decay ** depth from the top layer, and every group on the same schedule multiplier.
    for record in epochs:
        (_, top_lr, top_initial), *blocks = record["groups"]
        assert top_initial == pytest.approx(lr)
        for name, group_lr, initial_lr in blocks:
            depth = N_BLOCKS - int(name.split(".")[1])
            assert initial_lr == pytest.approx(lr * decay**depth)
            assert group_lr / top_lr == pytest.approx(decay**depth)
    # Block 0 and the front end never train; block 1 only from epoch 1; block 2 from epoch 0.
    assert same(epochs[-1]["blocks"][0], initial[0])
    assert all(p.grad is None for p in backbone.layers()[0].parameters())
    assert same(backbone.muq.model.conv.state_dict(), front_end)
    assert same(epochs[0]["blocks"][1], initial[1]) and not same(epochs[1]["blocks"][1], initial[1])
    assert not same(epochs[0]["blocks"][2], initial[2])

    # The unfrozen set travels with checkpoints, in optimiser-group order.
    checkpoint: dict[str, Any] = {}
    model.on_save_checkpoint(checkpoint)
    fresh = MuQFullUnfreezeModel(network(tiny_muq()), unfreeze_schedule={0: [3], 1: [2]})
    fresh.on_load_checkpoint(checkpoint)
    assert [g["name"] for g in fresh.param_groups()] == ["top", "layer.3", "layer.2"]
    # A checkpoint written before layers were numbered from 1 (0-based blocks) restores the same layers.
    old = MuQFullUnfreezeModel(network(tiny_muq()), unfreeze_schedule={0: [3], 1: [2]})
    old.on_load_checkpoint({"unfrozen_layers": [2, 1]})
    assert old.unfrozen == [3, 2]


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(12, {0: [12], 2: [11], 4: [10], 6: [9]}), (3, {0: [3], 2: [2], 4: [1]})],
    ids=["muq-large", "cpu-muq"],
)
def test_default_schedule_unfreezes_the_top_four_layers(depth: int, expected: dict[int, list[int]]) -> None:
    from pianoeval.training.audio_modules import default_unfreeze_schedule

    assert default_unfreeze_schedule(depth) == expected


def test_default_schedule_starts_with_the_top_layer() -> None:
    model = MuQFullUnfreezeModel(network(tiny_muq()))
    assert model.unfreeze_schedule == {0: [3], 2: [2], 4: [1]}
    model.configure_optimizers()
    assert model.unfrozen == [3]
    assert not any(p.requires_grad for b in model.encoder.backbone.layers()[:2] for p in b.parameters())


# --- memory option and configuration errors -------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = network(tiny_muq(), dropout=0.0)
    checkpointed = AudioScoreNetwork(
        tiny_muq(), hidden=HIDDEN, context_layers=1, heads=2, dropout=0.0, gradient_checkpointing=True
    )
    checkpointed.load_state_dict(plain.state_dict())
    assert all(block.gradient_checkpointing for block in checkpointed.backbone.layers())
    batch = batch_of(n=2, n_groups=1, wave=True, aug=False)
    for net in (plain, checkpointed):
        net.train()
        net(batch).pow(2).sum().backward()
    grads = dict(plain.named_parameters())
    for name, param in checkpointed.named_parameters():
        if grads[name].grad is None:
            assert param.grad is None, name
        else:
            torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: AudioScoreNetwork(None), "needs a backbone or `in_dim`"),
        (lambda: MuQLoRAModel(network(), lora_rank=4), "set lora_rank=0"),
        (lambda: MuQFullUnfreezeModel(network()), "needs a network with a backbone"),
        (lambda: MuQFullUnfreezeModel(network(tiny_muq()), unfreeze_schedule={0: [4]}), "out of range"),
        (lambda: MuQFullUnfreezeModel(network(tiny_muq()), unfreeze_schedule={0: [0]}), r"layers 1\.\.3"),
        (lambda: a1_lora(lora_layers=[4]), r"audio.lora_layers: layer\(s\) \[4\] out of range"),
        (lambda: AudioScoreNetwork(tiny_muq(), hidden_layers=[0]), r"audio.hidden_layers: layer\(s\) \[0\]"),
        (lambda: MuQStagedModel(network(), lora_rank=0, stage="pretrain"), "unknown stage"),
        (lambda: a1_cached(w_rank=0.0, w_contrastive=0.0, w_reg=0.0, w_inv=0.0), "all supervised loss weights"),
        (lambda: AudioScoreNetwork(LogMelBackbone(hidden=16), gradient_checkpointing=True), "MuQ's conformer"),
    ],
    ids=[
        "no-input",
        "lora-without-backbone",
        "a3-without-backbone",
        "a3-bad-layer",
        "a3-layer-zero",
        "lora-bad-layer",
        "hidden-layer-zero",
        "bad-stage",
        "zero-weights",
        "checkpointing-logmel",
    ],
)
def test_config_errors(build: Callable[[], Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()


def test_a3_backbone_trains_an_order_of_magnitude_below_the_heads() -> None:
    lr, decay = 3e-4, 0.8
    model = MuQFullUnfreezeModel(network(tiny_muq()), unfreeze_schedule={0: [3, 2, 1]}, layer_lr_decay=decay, lr=lr)
    model.configure_optimizers()
    groups = {g["name"]: g["lr"] for g in model.param_groups()}
    assert groups["top"] == pytest.approx(lr)
    # The top layer at lr / 10, each layer below it `decay` times slower.
    assert groups["layer.3"] == pytest.approx(lr / 10)
    assert groups["layer.2"] == pytest.approx(lr / 10 * decay)
    assert groups["layer.1"] == pytest.approx(lr / 10 * decay**2)
    # An explicit backbone_lr replaces the default; LoRA adapters (new weights) default to lr itself.
    explicit = MuQFullUnfreezeModel(network(tiny_muq()), unfreeze_schedule={0: [3]}, lr=lr, backbone_lr=1e-5)
    explicit.configure_optimizers()
    assert {g["name"]: g["lr"] for g in explicit.param_groups()}["layer.3"] == pytest.approx(1e-5)
    lora = {g["name"]: g["lr"] for g in a1_lora(lr=lr).param_groups()}
    assert lora == {"top": pytest.approx(lr), "backbone": pytest.approx(lr)}


def test_a_projection_no_loss_trains_is_not_kept_and_the_seeded_weights_do_not_move() -> None:
    """The contrastive projection exists only where a stage's contrastive weight is > 0 (A2's
    self-supervised stage trains it even when A1's weight is 0); the other weights are the same either way."""
    torch.manual_seed(0)
    kept = a1_cached()
    torch.manual_seed(0)
    dropped = a1_cached(w_contrastive=0.0)
    assert kept.projection is not None and dropped.projection is None
    assert not [k for k in dropped.state_dict() if k.startswith("projection.")]
    for k, v in dropped.state_dict().items():
        assert torch.equal(v, kept.state_dict()[k]), k
    assert a2_cached(w_contrastive=0.0).projection is not None
    assert a2_cached(w_contrastive=0.0, ssl_w_contrastive=0.0).projection is None
