"""LoRA adapters (peft) on chosen blocks of an audio backbone; everything else in the backbone is frozen.

Module names per backbone (from `named_modules()`):
- MuQ: `muq.model.conformer.layers.{i}.self_attn.linear_q|linear_k|linear_v|linear_out`, and the
  feed-forward `ffn1|ffn2.intermediate_dense|output_dense`.
- TransKun: its attention keeps q/k/v as raw `nn.Parameter`s (`q_proj_weight`), which LoRA cannot wrap;
  the Linear layers are `model.backbone.encoderLayers.{i}.mhaBlockF|mhaBlockT.module.out_proj` and the
  feed-forward `fnnBlockF|fnnBlockT.module.0|3`: use e.g. `target_modules=("out_proj",)`.
- LogMel with a Transformer stack: `blocks.{i}.self_attn.out_proj`, `blocks.{i}.linear1|linear2`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pianoeval.core.errors import ConfigError


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone blocks LoRA layer indices refer to: `model.layers()` of the first AudioBackbone found."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if callable(layers) and hasattr(module, "hidden_states"):
            return list(layers())
    raise ConfigError("apply_lora needs a model containing an AudioBackbone (with a `layers()` method)")


def lora_target_names(
    model: nn.Module, target_layers: Sequence[int] | None, target_modules: Sequence[str]
) -> list[str]:
    """Full names of the nn.Linear modules named `target_modules` inside the chosen blocks (all if None)."""
    blocks = _blocks(model)
    chosen = range(len(blocks)) if target_layers is None else target_layers
    bad = [i for i in chosen if not 0 <= i < len(blocks)]
    if bad:
        raise ConfigError(f"LoRA target_layers {bad} out of range: the backbone has blocks 0..{len(blocks) - 1}")
    names_of = {id(module): name for name, module in model.named_modules()}
    wanted = set(target_modules)
    names: list[str] = []
    for i in chosen:
        prefix = names_of[id(blocks[i])]
        for sub, module in blocks[i].named_modules():
            if sub and sub.split(".")[-1] in wanted and isinstance(module, nn.Linear):
                names.append(f"{prefix}.{sub}")
    if not names:
        linear = sorted({n.split(".")[-1] for n, m in blocks[0].named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"no Linear module named {sorted(wanted)} in the chosen blocks; Linear names there: {linear}")
    return names


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: int = 16,
    target_layers: Sequence[int] | None = None,
    target_modules: Sequence[str] = ("linear_q", "linear_k", "linear_v"),
    dropout: float = 0.0,
) -> nn.Module:
    """Add LoRA to `target_modules` of blocks `target_layers` (in place); only the adapters stay trainable.

    Modules added to `model` afterwards (a head) keep their own `requires_grad`.
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_target_names(model, target_layers, target_modules)
    # Exact full names, not suffixes: "linear_q" alone would also match blocks we must leave untouched.
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
    model.requires_grad_(False)
    model = inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def count_trainable_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
