"""LoRA on a small random-weight MuQ: adapters exactly where asked, only they (and a head) learn."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from pianoeval.audio.backbones import MuQBackbone, TranskunBackbone, muq_small_config
from pianoeval.audio.lora import apply_lora, lora_target_names
from pianoeval.core.errors import ConfigError


def count_trainable_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _small_muq() -> MuQBackbone:
    return MuQBackbone.from_config(muq_small_config(encoder_depth=3), seed=1)


@pytest.mark.parametrize(
    ("layers", "modules", "blocks"),
    [
        ([2, 3], ("linear_q", "linear_k", "linear_v"), [1, 2]),
        ([1], ("linear_v",), [0]),
        (None, ("linear_out",), [0, 1, 2]),
    ],
    ids=["qkv-last-two", "v-first", "out-default-top-four"],
)
def test_adapters_exactly_on_targets(layers: list[int] | None, modules: tuple[str, ...], blocks: list[int]) -> None:
    # Layer i (1..N) is block i - 1 of the module list; the default is the top 4 layers (all 3 here).
    backbone = apply_lora(_small_muq(), rank=4, alpha=8, target_layers=layers, target_modules=modules)
    wrapped = {name for name, m in backbone.named_modules() if hasattr(m, "lora_A")}
    expected = {f"muq.model.conformer.layers.{i}.self_attn.{m}" for i in blocks for m in modules}
    assert wrapped == expected
    lora_params = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert all(re.search(r"\.lora_[AB]\.", n) for n in lora_params)
    # rank 4 on 64x64 Linear: A is 4x64, B is 64x4.
    trainable, total = count_trainable_params(backbone)
    assert trainable == len(expected) * 2 * 4 * 64
    assert total > trainable


def test_only_lora_and_head_learn() -> None:
    backbone = apply_lora(_small_muq(), rank=4, target_layers=[2, 3])
    head = nn.Linear(backbone.hidden_size, 1)
    before = {n: p.detach().clone() for n, p in backbone.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in backbone.named_parameters() if "lora_" in n}
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.SGD(params, lr=0.5)
    wave = torch.randn(2, 24000) * 0.1
    for _ in range(2):  # LoRA B starts at zero, so A only gets a gradient from the second step on
        optimiser.zero_grad()
        emb, mask = backbone(wave)
        loss = head(emb[mask]).pow(2).mean()
        loss.backward()
        optimiser.step()
    for name, param in backbone.named_parameters():
        if "lora_" in name:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
            torch.testing.assert_close(param.detach(), before[name])
    assert all(p.grad is not None for p in head.parameters())
    assert any(not torch.equal(p.detach(), lora_before[n]) for n, p in backbone.named_parameters() if "lora_" in n)


def test_bad_targets_are_config_errors() -> None:
    backbone = _small_muq()
    out_of_range = r"audio.lora_layers: layer\(s\) .* out of range: this backbone has layers 1..3"
    for bad in ([4], [0]):
        with pytest.raises(ConfigError, match=out_of_range):
            lora_target_names(backbone, bad, ("linear_q",))
    with pytest.raises(ConfigError, match="Linear names there"):
        lora_target_names(backbone, [1], ("q_proj",))


def test_transkun_targets_out_proj() -> None:
    backbone = TranskunBackbone(pretrained=False)
    names = lora_target_names(backbone, [6], ("out_proj",))
    assert names == [
        "model.backbone.encoderLayers.5.mhaBlockF.module.out_proj",
        "model.backbone.encoderLayers.5.mhaBlockT.module.out_proj",
    ]
    apply_lora(backbone, rank=2, target_layers=[6], target_modules=("out_proj",))
    assert count_trainable_params(backbone)[0] == 2 * (2 * 256 + 256 * 2)  # two modules, A [2, 256] + B [256, 2]
