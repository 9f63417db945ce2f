"""LoRA adapters (peft) on chosen layers of an audio backbone; everything else in the backbone is frozen.

Layers are numbered 1..N (layer i = block i, as in `audio.backbones`); the default is the top 4
(MuQ-large: layers 9-12), the plan's A1.

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
    """Full names of the nn.Linear modules named `target_modules` inside layers `target_layers`
    (numbers 1..N; None = the top 4)."""
    from pianoeval.audio.backbones import check_layers, top_layers

    blocks = _blocks(model)
    if not blocks:
        raise ConfigError("LoRA needs a backbone with blocks; this one has none")
    if target_layers is None:
        chosen = top_layers(len(blocks))
    else:
        chosen = check_layers(target_layers, len(blocks), "audio.lora_layers")
    names_of = {id(module): name for name, module in model.named_modules()}
    wanted = set(target_modules)
    names: list[str] = []
    for layer in chosen:
        block = blocks[layer - 1]
        prefix = names_of[id(block)]
        for sub, module in block.named_modules():
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
    """Add LoRA to `target_modules` of layers `target_layers` (numbers 1..N, None = the top 4), in
    place; only the adapters stay trainable.

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
