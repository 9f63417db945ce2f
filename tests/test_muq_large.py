"""MuQ-large at full size through the path the GPU run takes, and load errors that name their cause.

The released weights need the hub, which this machine cannot reach: the test builds the released
architecture (`audio.muq_large`, 12 blocks of width 1024, about 330M parameters) with random weights,
writes it as the released folder is laid out (config.json + model.safetensors), and loads it with the
call the pipeline makes (`registry.build_network` → `build_audio_backbone` → `MuQBackbone.from_pretrained`)
with `audio.muq_name_or_path` pointing at that folder. Only the download itself stays untested.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pianoeval.audio.backbones import MuQBackbone, muq_small_config
from pianoeval.audio.muq_large import muq_large_config
from pianoeval.audio.muq_weights import save_released_format
from pianoeval.core.config import validate_config
from pianoeval.core.errors import ConfigError
from pianoeval.core.settings import FitSettings
from pianoeval.training.registry import build_module, build_network

SR = 24_000


def released_config(folder: Path) -> dict[str, Any]:
    """The pipeline's config for the released MuQ, read from `folder`, with the plan's A1 (rank 16, alpha 32)."""
    audio = {
        "models": ["a1"],
        "backbone": "muq",
        "muq_pretrained": True,
        "muq_name_or_path": str(folder),
        "lora_rank": 16,
        "lora_alpha": 32,
        "hidden": 64,
        "heads": 2,
    }
    return validate_config({"audio": audio})


def test_muq_large_released_config_through_the_pretrained_path(tmp_path: Path) -> None:
    folder = tmp_path / "MuQ-large-msd-iter"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        built = MuQBackbone.from_config(muq_large_config()).muq
    save_released_format(built, folder, muq_large_config())
    probe_name = "model.conformer.layers.10.self_attn.linear_q.weight"
    saved = built.state_dict()[probe_name].clone()
    del built
    gc.collect()
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text()) == muq_large_config()

    config = released_config(folder)
    net = build_network(
        "a1", {}, FitSettings.from_config(config)
    )  # the GPU run's call: released weights from muq_name_or_path
    backbone = net.backbone
    assert isinstance(backbone, MuQBackbone)
    assert backbone.num_layers == 12 and len(backbone.layers()) == 12 and backbone.hidden_size == 1024
    assert backbone.probe_layers == [9, 10, 11, 12]
    n_params = sum(p.numel() for p in backbone.parameters())
    assert 300e6 < n_params < 350e6, n_params  # "about 300M" (README of the release)
    # The weights came from the file, not from a fresh initialisation.
    torch.testing.assert_close(backbone.muq.state_dict()[probe_name], saved, rtol=0, atol=0)

    module = build_module("a1", net, FitSettings.from_config(config), label_mean=None)
    wrapped = {name for name, m in module.named_modules() if hasattr(m, "lora_A")}
    prefix = "net.encoder.backbone.muq.model.conformer.layers"
    # Layers 9-12 are blocks 8-11 of the module list.
    assert wrapped == {f"{prefix}.{b}.self_attn.linear_{m}" for b in range(8, 12) for m in "qkv"}
    lora = [n for n, p in module.named_parameters() if p.requires_grad and n.startswith("net.encoder.backbone.")]
    assert len(lora) == 12 * 2 and all(".lora_A." in n or ".lora_B." in n for n in lora)
    assert sum(p.numel() for n, p in module.named_parameters() if n in lora) == 12 * 16 * (1024 + 1024)

    module.train()
    gen = torch.Generator().manual_seed(1)
    batch = {"wave": 0.1 * torch.randn(1, 10 * SR, generator=gen)}  # 10 s of audio
    scores = module.predict_scores(batch)
    assert scores.shape == (1, 19) and torch.isfinite(scores).all()
    scores.mean().backward()
    params = dict(module.named_parameters())
    # LoRA B starts at zero, so on this first step only B (and the heads) get a nonzero gradient.
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in lora if ".lora_B." in n)
    frozen = [n for n, p in params.items() if n.startswith("net.encoder.backbone.") and n not in lora]
    assert all(params[n].grad is None for n in frozen)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MuQ in the released format (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("muq_small") / "released"
    config = muq_small_config(encoder_depth=2)
    return save_released_format(MuQBackbone.from_config(config, seed=4).muq, folder, config)


def _copy(folder: Path, dest: Path, skip: str = "") -> Path:
    """A copy of `folder` without the file named `skip`."""
    dest.mkdir()
    for path in folder.iterdir():
        if path.name != skip:
            (dest / path.name).write_bytes(path.read_bytes())
    return dest


def test_released_format_round_trip(small_folder: Path) -> None:
    loaded = MuQBackbone.from_pretrained(str(small_folder))
    original = MuQBackbone.from_config(muq_small_config(encoder_depth=2), seed=4)
    wave = 0.1 * torch.randn(1, SR)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(wave)[0], original.eval()(wave)[0])


def test_folder_without_weights_names_the_missing_file(small_folder: Path, tmp_path: Path) -> None:
    folder = _copy(small_folder, tmp_path / "no_weights", skip="model.safetensors")
    with pytest.raises(ConfigError, match=r"missing file model\.safetensors in the MuQ weights folder"):
        MuQBackbone.from_pretrained(str(folder))
    folder = _copy(small_folder, tmp_path / "no_config", skip="config.json")
    with pytest.raises(ConfigError, match=r"missing file config\.json"):
        MuQBackbone.from_pretrained(str(folder))
    with pytest.raises(ConfigError, match="MuQ weights folder not found"):
        MuQBackbone.from_pretrained(str(tmp_path / "nowhere"))


def test_config_of_the_wrong_size_names_the_tensor(small_folder: Path, tmp_path: Path) -> None:
    folder = _copy(small_folder, tmp_path / "wrong_size")
    config = json.loads((folder / "config.json").read_text())
    config["encoder_dim"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"shape mismatch: tensor model\.\S+ is \[64.*\] in the weights file") as err:
        MuQBackbone.from_pretrained(str(folder))
    assert "more tensors" in str(err.value) and "\n" not in str(err.value)


def test_truncated_weights_name_the_missing_tensor(small_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(small_folder, tmp_path / "truncated")
    state = load_file(str(folder / "model.safetensors"))
    dropped = [k for k in state if k.startswith("model.conformer.layers.1.")]
    save_file({k: v for k, v in state.items() if k not in dropped}, str(folder / "model.safetensors"))
    lacks = rf"lacks {len(dropped)} of the encoder's \(e\.g\. model\.conformer\.layers\.1\."
    with pytest.raises(ConfigError, match=lacks):
        MuQBackbone.from_pretrained(str(folder))


def test_unreachable_hub_is_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"no network: .*HF_HUB_OFFLINE is set.*local folder"):
        MuQBackbone.from_pretrained("OpenMuQ/MuQ-large-msd-iter", cache_dir=str(tmp_path / "hub"))


def test_incompatible_library_says_so(monkeypatch: pytest.MonkeyPatch, small_folder: Path) -> None:
    from pianoeval.audio import compat

    def broken() -> Any:
        raise ImportError("cannot import name 'Wav2Vec2ConformerEncoder' from 'transformers'")

    monkeypatch.setattr(compat, "import_muq", broken)
    with pytest.raises(ConfigError, match=r"library incompatibility \(ImportError: .*installed: muq \S+, transformers"):
        MuQBackbone.from_pretrained(str(small_folder))
