"""Audio backbones behind one interface: waveform [B, S] → frame embeddings [B, F, D] + mask [B, F].

- `LogMelBackbone`: log-mel frames, optionally through a small trainable conv + Transformer stack
  (the no-pretraining baseline).
- `MuQBackbone`: the MuQ conformer (`OpenMuQ/MuQ-large-msd-iter` with hub access, or the same
  architecture with random weights from a small config for tests and CPU runs).
- `TranskunBackbone`: the encoder of the piano transcription model shipped inside the transkun wheel.

Layers are numbered as in the plan and the papers: layer i (1..N) is the output of block i, so
MuQ-large's layers are 1..12 and its probe averages layers 9-12. Every setting that names layers
(`audio.hidden_layers`, `audio.lora_layers`, `audio.unfreeze_schedule`) uses these numbers;
`check_layers` validates them against the backbone's depth. `hidden_states` returns N + 1 states
(index 0 = the first block's input, index i = layer i), so layer i is `hidden_states(...)[0][i]`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pianoeval.audio.compat import import_muq, import_transkun, torchaudio_shim
from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.errors import ConfigError, InputError

MUQ_HUB_NAME = "OpenMuQ/MuQ-large-msd-iter"
# MuQ's mel normaliser (mean/std of its 2048-FFT dB mel over the training corpus), from the released config.
MUQ_MEL_STAT = {"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623}


# The plan's MuQ default for the probe, LoRA and A3's unfreezing: the top 4 layers (9-12 of 12),
# where music-understanding probes of MuQ and MERT find the most task information.
DEFAULT_TOP_LAYERS = 4


def top_layers(depth: int, count: int = DEFAULT_TOP_LAYERS) -> list[int]:
    """The top `count` layer numbers of a `depth`-block backbone, bottom first (all when fewer)."""
    return list(range(max(1, depth - count + 1), depth + 1))


def check_layers(layers: Sequence[int], depth: int, setting: str = "layers") -> list[int]:
    """Layer numbers 1..depth (layer i = output of block i), sorted and unique; a ConfigError otherwise."""
    chosen = sorted({int(i) for i in layers})
    if not chosen:
        raise ConfigError(f"{setting} must name at least one layer (1..{depth})")
    bad = [i for i in chosen if not 1 <= i <= depth]
    if bad:
        raise ConfigError(
            f"{setting}: layer(s) {bad} out of range: this backbone has layers 1..{depth} (layer i = output of block i)"
        )
    return chosen


def _mean_of_layers(hidden: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Mean of layers `layers` (numbers into `hidden`, all [B, F, D]); the last state when empty."""
    if not layers:
        return hidden[-1]  # a backbone without blocks (plain log-mel): its only state
    return torch.stack([hidden[i] for i in layers]).mean(dim=0)


def _frame_mask(wave_mask: torch.Tensor | None, batch: int, n_samples: int, n_frames: int, hop: float) -> torch.Tensor:
    """Frame mask [B, F]: ceil(real samples / hop) frames are real, plus any extra frame the full-length
    wave also gets (a centred STFT adds one), so an unpadded item is all True."""
    device = wave_mask.device if wave_mask is not None else None
    if wave_mask is None:
        return torch.ones(batch, n_frames, dtype=torch.bool, device=device)
    extra = n_frames - math.ceil(n_samples / hop)
    n_real = torch.clamp(torch.ceil(wave_mask.bool().sum(dim=1) / hop).long() + extra, max=n_frames)
    return torch.arange(n_frames, device=device).unsqueeze(0) < n_real.unsqueeze(1)


def _capture_block_states(blocks: Sequence[nn.Module], run: Any) -> tuple[Any, list[torch.Tensor]]:
    """Call `run()` and collect the first block's input and every block's output (forward hooks)."""
    captured: list[torch.Tensor] = []
    handles = [blocks[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))]
    handles += [b.register_forward_hook(lambda _m, _a, out: captured.append(out)) for b in blocks]
    try:
        result = run()
    finally:
        for handle in handles:
            handle.remove()
    return result, captured


class AudioBackbone(nn.Module):
    """Waveform → frame embeddings; subclasses set sample_rate, hidden_size, num_layers, frame_rate.

    `forward` averages `probe_layers` unless told otherwise: by default the top `default_top_layers`
    layers (1 = the last; MuQ: 4), or what `set_probe_layers` chose (the config's `audio.hidden_layers`).
    """

    sample_rate: int
    hidden_size: int
    num_layers: int
    frame_rate: float
    default_top_layers: int = 1
    _probe_layers: list[int] | None = None

    @property
    def probe_layers(self) -> list[int]:
        """Layer numbers `forward` averages when called without `layers` (empty: no blocks, the only state)."""
        if self._probe_layers is not None:
            return list(self._probe_layers)
        return top_layers(self.num_layers, self.default_top_layers) if self.num_layers else []

    def set_probe_layers(self, layers: Sequence[int] | None, setting: str = "audio.hidden_layers") -> None:
        """Average `layers` (numbers 1..num_layers) by default from now on; None restores the default."""
        self._probe_layers = None if layers is None else check_layers(layers, self.num_layers, setting)

    def hidden_states(
        self, wave: torch.Tensor, wave_mask: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """All hidden states (num_layers + 1 of [B, F, D]) and the frame mask [B, F]."""
        raise NotImplementedError

    def forward(
        self, wave: torch.Tensor, wave_mask: torch.Tensor | None = None, layers: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wave [B, S] (+ wave_mask [B, S], True = real sample) → emb [B, F, D], mask [B, F] bool.

        emb is the mean of layers `layers` (numbers 1..num_layers, layer i = output of block i), or of
        `probe_layers` when None.
        """
        if wave.dim() != 2:
            raise InputError(f"expected a waveform batch [B, S], got shape {tuple(wave.shape)}")
        chosen = self.probe_layers if layers is None else check_layers(layers, self.num_layers)
        hidden, mask = self.hidden_states(wave.float(), wave_mask)
        return _mean_of_layers(hidden, chosen), mask

    def layers(self) -> list[nn.Module]:
        """The Transformer/conformer blocks, in order (targets for LoRA and gradual unfreezing)."""
        raise NotImplementedError


class LogMelBackbone(AudioBackbone):
    """Log-mel frames [B, F, n_mels], or with `hidden` a conv + Transformer stack on them → [B, F, hidden]."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = 128,
        hop: int = 960,
        n_fft: int = 2048,
        hidden: int | None = None,
        num_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        from pianoeval.audio.compat import melscale_fbanks

        self.sample_rate = sample_rate
        self.hop = hop
        self.n_fft = n_fft
        # 960 samples at 24 kHz = 25 frames/s, MuQ's frame rate, so heads see the same time grid.
        self.frame_rate = sample_rate / hop
        # librosa.filters.mel's (Slaney scale and norm) without importing librosa, whose filters module pulls
        # in scipy.signal (2-3 s of a `pianoeval score`; tests/test_backbones.py checks they agree).
        fb = melscale_fbanks(n_fft // 2 + 1, 30.0, sample_rate / 2, n_mels, sample_rate, "slaney", "slaney")
        self.register_buffer("mel_fb", fb.t().contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.input_norm = nn.LayerNorm(n_mels)
        if hidden is None:
            self.stem: nn.Module | None = None
            self.blocks = nn.ModuleList()
            self.hidden_size = n_mels
        else:
            # A 3-frame conv gives each frame onset context before attention.
            self.stem = nn.Sequential(nn.Conv1d(n_mels, hidden, 3, padding=1), nn.GELU())
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    hidden, heads, 2 * hidden, dropout=dropout, batch_first=True, norm_first=True
                )
                for _ in range(num_layers)
            )
            self.hidden_size = hidden
        self.num_layers = len(self.blocks)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, S] → log-mel [B, F, n_mels] with F = S // hop + 1 (centred frames)."""
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        mel = self.mel_fb @ spec.abs().pow(2)
        return torch.log(mel + 1e-6).transpose(1, 2)

    def hidden_states(
        self, wave: torch.Tensor, wave_mask: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Log-mel (index 0, after the stem when there is one) then each block's output."""
        x = self.input_norm(self.log_mel(wave))
        mask = _frame_mask(wave_mask, wave.shape[0], wave.shape[1], x.shape[1], self.hop)
        if self.stem is not None:
            x = self.stem(x.transpose(1, 2)).transpose(1, 2)
        hidden = [x]
        for block in self.blocks:
            x = block(x, src_key_padding_mask=~mask)
            hidden.append(x)
        return hidden, mask

    def layers(self) -> list[nn.Module]:
        """The Transformer blocks (empty for the plain log-mel baseline)."""
        return list(self.blocks)


def muq_small_config(
    encoder_dim: int = 64, encoder_depth: int = 2, heads: int = 4, conv_dim: int = 16, **overrides: Any
) -> dict[str, Any]:
    """A MuQConfig dict for the MuQ architecture at toy size (random weights; tests and CPU runs)."""
    from transformers import Wav2Vec2ConformerConfig

    # Every field the conformer reads, from transformers' defaults (as in the released config),
    # then MuQ's choices (rotary positions, swish) at toy size. Dict-valued fields (label maps) are
    # dropped: muq wraps this dict in an EasyDict, which rejects their integer keys.
    w2v2 = {k: v for k, v in Wav2Vec2ConformerConfig().to_dict().items() if not isinstance(v, dict)}
    w2v2 |= {
        "hidden_size": encoder_dim,
        "num_attention_heads": heads,
        "intermediate_size": 2 * encoder_dim,
        "conv_depthwise_kernel_size": 7,
        "hidden_act": "swish",
        "position_embeddings_type": "rotary",
        "rotary_embedding_base": 10000,
        "max_source_positions": 5000,
        "layer_norm_eps": 1e-5,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "conformer_conv_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "layerdrop": 0.0,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "conv_bias": True,
    }
    config = {
        "encoder_dim": encoder_dim,
        "encoder_depth": encoder_depth,
        "conv_dim": conv_dim,
        "codebook_size": 64,
        "stat": dict(MUQ_MEL_STAT),
        "w2v2_config": w2v2,
    }
    config.update(overrides)
    return config


class MuQBackbone(AudioBackbone):
    """MuQ (24 kHz, 25 frames/s): mel → conv subsampling → conformer; hidden states of every block.

    Frames default to the mean of the top 4 layers (9-12 of MuQ-large's 12), the plan's probe.
    """

    default_top_layers = DEFAULT_TOP_LAYERS

    def __init__(self, muq: nn.Module) -> None:
        super().__init__()
        from transformers import Wav2Vec2ConformerConfig

        self.muq = muq
        inner = muq.model
        self.sample_rate = SAMPLE_RATE
        self.hidden_size = int(muq.config.encoder_dim)
        self.num_layers = int(muq.config.encoder_depth)
        # hop 240 samples (100 mel frames/s), then the conv subsampling by 4 in time.
        self.hop = inner.hop_length * 4
        self.frame_rate = self.sample_rate / self.hop
        # muq builds the conformer from an EasyDict; transformers 5 needs a real config object
        # (`_attn_implementation`, mask helpers), so swap it in: same values, same weights.
        old = inner.conformer.config
        real = Wav2Vec2ConformerConfig(**{k: v for k, v in dict(old).items() if not isinstance(v, dict)})
        real._attn_implementation = "sdpa"
        for module in inner.conformer.modules():
            if getattr(module, "config", None) is old:
                module.config = real

    @classmethod
    def from_pretrained(cls, name_or_path: str = MUQ_HUB_NAME, **kwargs: Any) -> MuQBackbone:
        """Load released MuQ weights: a hub name (network once, then the hub cache) or a local folder
        in the released format (config.json + model.safetensors). A failure is a one-line ConfigError
        naming its cause (missing file, shape mismatch, library incompatibility, no network)."""
        from pianoeval.audio.muq_weights import explain_load_error, load_released_muq

        muq = load_released_muq(str(name_or_path), **kwargs)
        try:
            return cls(muq)
        except Exception as exc:  # the conformer config no longer fits the installed transformers
            raise ConfigError(
                f"cannot load MuQ weights {str(name_or_path)!r}: {explain_load_error(str(name_or_path), exc)}"
            ) from exc

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None, seed: int = 0) -> MuQBackbone:
        """The MuQ architecture with random weights from a MuQConfig dict (default: `muq_small_config()`)."""
        muq_cls, _ = import_muq()
        config = dict(config or muq_small_config())
        config.setdefault("stat", dict(MUQ_MEL_STAT))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            muq = muq_cls(config)
        return cls(muq)

    def hidden_states(
        self, wave: torch.Tensor, wave_mask: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Conformer input and every block's output [B, F, D]; the last is layer-normed as in MuQ."""
        inner = self.muq.model
        # Same steps as MuQModel.get_predictions; its encoder() reads `hidden_states` from the
        # conformer output, which transformers 5 no longer returns, so collect them with hooks.
        mel = inner.normalize(inner.preprocessing(wave, features=["melspec_2048"]))["melspec_2048"]
        x = inner.conv(mel)
        mask = _frame_mask(wave_mask, wave.shape[0], wave.shape[1], x.shape[1], self.hop)
        out, captured = _capture_block_states(
            inner.conformer.layers,
            lambda: inner.conformer(x, attention_mask=mask if wave_mask is not None else None),
        )
        hidden = [*captured[:-1], out["last_hidden_state"]]
        return hidden, mask

    def layers(self) -> list[nn.Module]:
        """The conformer blocks (`muq.model.conformer.layers`)."""
        return list(self.muq.model.conformer.layers)


def transkun_pretrained_dir() -> Path:
    """Folder of the checkpoint shipped in the transkun wheel (`2.0.pt`, `2.0.conf`)."""
    import importlib.util

    spec = importlib.util.find_spec("transkun")
    if spec is None or spec.origin is None:
        raise ConfigError("the `transkun` package is not installed: pip install --no-deps transkun==2.0.1")
    return Path(spec.origin).parent / "pretrained"


def load_transkun_model(pretrained: bool = True) -> nn.Module:
    """The TransKun 2.0 network (eval mode) with the wheel's weights (or random ones)."""
    module = import_transkun()
    folder = transkun_pretrained_dir()
    conf = module.Config()
    conf.__dict__.update(json.loads((folder / "2.0.conf").read_text())["Model"]["config"])
    with torchaudio_shim():
        model = module.TransKun(conf=conf)
    if pretrained:
        state = torch.load(folder / "2.0.pt", map_location="cpu", weights_only=True)
        # assign: take the loaded tensors as the weights instead of copying them in (0.2 s of a score run).
        model.load_state_dict(state.get("best_state_dict", state["state_dict"]), assign=True)
    # Checkpointing only saves memory while training; in inference it just warns.
    model.backbone.useGradientCheckpoint = False
    return model.eval()


class TranskunBackbone(AudioBackbone):
    """TransKun 2.0's encoder (44.1 kHz, 1024-sample hop, 8x time downsampling → ~5.38 frames/s).

    emb at each encoder time step = [mean ; max] over the 90 pitch/pedal query tokens (88 keys,
    sustain, soft) of a block's output: D = 2 x 256. These tokens are what the note and pedal heads
    read (after upsampling), so they carry note activity, velocity and pedal cues. Input at another
    rate (`input_sample_rate`, e.g. 24 kHz) is resampled to 44.1 kHz with soxr inside `forward`;
    `sample_rate` stays the model's own. Frozen by default.
    """

    def __init__(self, pretrained: bool = True, frozen: bool = True, input_sample_rate: int | None = None) -> None:
        super().__init__()
        self.model = load_transkun_model(pretrained)
        self.sample_rate = int(self.model.fs)
        self.input_sample_rate = input_sample_rate or self.sample_rate
        self.hop = int(self.model.hopSize) * 8
        self.frame_rate = self.sample_rate / self.hop
        self.hidden_size = 2 * int(self.model.conf.baseSize) * 4
        self.num_layers = len(self.model.backbone.encoderLayers)
        self.n_targets = len(self.model.targetMIDIPitch)
        # Process audio in windows no longer than those it was trained on (16 s), cut on token boundaries.
        self.chunk = math.floor(self.model.segmentSizeInSecond * self.sample_rate / self.hop) * self.hop
        if frozen:
            self.requires_grad_(False)

    def _resample(self, row: torch.Tensor) -> torch.Tensor:
        """[S] at `input_sample_rate` → [S'] at 44.1 kHz (soxr; the input needs no gradient)."""
        import soxr

        out = soxr.resample(row.detach().cpu().numpy(), self.input_sample_rate, self.sample_rate)
        return torch.from_numpy(out).to(row.device, row.dtype)

    def _encode_one(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """One mono waveform [S] at 44.1 kHz → hidden states (num_layers + 1) of [T, D]."""
        from transkun.Util import makeFrame

        model = self.model
        outputs: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers + 1)]
        for start in range(0, max(1, wave.shape[0]), self.chunk):
            piece = wave[start : start + self.chunk]
            n_tokens = max(1, math.ceil(piece.shape[0] / self.hop))
            frames = makeFrame(piece.unsqueeze(0), model.hopSize, model.windowSize).unsqueeze(0)
            # processFramesBatch = gain normalisation, mel features, encoder, interval scorer.
            _, captured = _capture_block_states(
                model.backbone.encoderLayers, functools.partial(model.processFramesBatch, frames)
            )
            for i, h_all in enumerate(captured):
                # h_all [1, T'+1, F'+1+P, D]: drop the time-aggregation row, keep the P query tokens.
                queries = h_all[0, 1 : n_tokens + 1, -self.n_targets :, :]
                outputs[i].append(torch.cat([queries.mean(dim=1), queries.amax(dim=1)], dim=-1))
        return [torch.cat(chunks) for chunks in outputs]

    def hidden_states(
        self, wave: torch.Tensor, wave_mask: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per item (own length, own gain normalisation) encoder states, padded to [B, T, D]."""
        lengths = wave_mask.bool().sum(dim=1).tolist() if wave_mask is not None else [wave.shape[1]] * len(wave)
        per_item = []
        for row, n in zip(wave, lengths, strict=True):
            row = row[: int(n)]
            if self.input_sample_rate != self.sample_rate:
                row = self._resample(row)
            per_item.append(self._encode_one(row))
        n_frames = max(h[0].shape[0] for h in per_item)
        hidden = []
        for i in range(self.num_layers + 1):
            layer = wave.new_zeros(len(per_item), n_frames, self.hidden_size)
            for b, h in enumerate(per_item):
                layer[b, : h[i].shape[0]] = h[i]
            hidden.append(layer)
        mask = torch.zeros(len(per_item), n_frames, dtype=torch.bool, device=wave.device)
        for b, h in enumerate(per_item):
            mask[b, : h[0].shape[0]] = True
        return hidden, mask

    def layers(self) -> list[nn.Module]:
        """The 6 encoder blocks (`model.backbone.encoderLayers`), each with F- and T-attention."""
        return list(self.model.backbone.encoderLayers)


def build_backbone(name: str, **cfg: Any) -> AudioBackbone:
    """Backbone by name: "logmel" (LogMelBackbone kwargs), "muq" (`config=` for random weights,
    else `name_or_path=` released weights), "transkun" (TranskunBackbone kwargs)."""
    if name == "logmel":
        return LogMelBackbone(**cfg)
    if name == "muq":
        if "config" in cfg:
            return MuQBackbone.from_config(cfg["config"], seed=cfg.get("seed", 0))
        return MuQBackbone.from_pretrained(cfg.get("name_or_path", MUQ_HUB_NAME))
    if name == "transkun":
        return TranskunBackbone(**cfg)
    raise ConfigError(f"unknown audio backbone {name!r}; choose logmel, muq or transkun")
