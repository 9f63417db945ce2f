"""Audio backbones: the torchaudio stand-in against librosa; each backbone's shapes, masks, layer means."""

from __future__ import annotations

import importlib.util
import sys

import librosa
import numpy as np
import pytest
import torch

from pianoeval.audio import compat
from pianoeval.audio.backbones import (
    LogMelBackbone,
    MuQBackbone,
    TranskunBackbone,
    build_backbone,
    muq_small_config,
)
from pianoeval.core.errors import ConfigError, InputError


@pytest.mark.parametrize(
    ("mel_scale", "norm"),
    [("htk", None), ("slaney", None), ("htk", "slaney"), ("slaney", "slaney")],
    ids=["htk", "slaney-scale", "htk-slaney-norm", "slaney-both"],
)
def test_melscale_fbanks_matches_librosa(mel_scale: str, norm: str | None) -> None:
    fb = compat.melscale_fbanks(2049, 30.0, 8000.0, 229, 44100, norm=norm, mel_scale=mel_scale)
    ref = librosa.filters.mel(
        sr=44100, n_fft=4096, n_mels=229, fmin=30.0, fmax=8000.0, htk=mel_scale == "htk", norm=norm
    )
    assert fb.shape == (2049, 229)
    np.testing.assert_allclose(fb.numpy(), ref.T, rtol=1e-4, atol=1e-7)


def test_melspectrogram_and_db_match_librosa() -> None:
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(24000).astype(np.float32) * 0.1
    mel = compat.MelSpectrogram(sample_rate=24000, n_fft=2048, hop_length=240, n_mels=128)(torch.from_numpy(wave))
    ref = librosa.feature.melspectrogram(
        y=wave, sr=24000, n_fft=2048, hop_length=240, n_mels=128, htk=True, norm=None, pad_mode="reflect"
    )
    assert mel.shape == (128, 101)
    np.testing.assert_allclose(mel.numpy(), ref, rtol=1e-3, atol=1e-6)
    db = compat.AmplitudeToDB()(torch.tensor([[1.0, 100.0], [1e-3, 0.0]]))
    np.testing.assert_allclose(db.numpy(), [[0.0, 20.0], [-30.0, -100.0]], atol=1e-5)


def test_torchaudio_shim_is_scoped() -> None:
    with compat.torchaudio_shim() as shimmed:
        import torchaudio

        assert shimmed and torchaudio.functional.melscale_fbanks is compat.melscale_fbanks
    # Outside the block other libraries' availability probes must see no torchaudio again.
    assert "torchaudio" not in sys.modules
    assert importlib.util.find_spec("torchaudio") is None


def test_import_muq_skips_mulan() -> None:
    muq_cls, config_cls = compat.import_muq()
    assert muq_cls.__name__ == "MuQ" and config_cls.__name__ == "MuQConfig"
    assert "muq.muq_mulan" not in sys.modules and "torchaudio" not in sys.modules


def _batch(sample_rate: int, seconds: float = 2.0, real_s: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noise waves [2, S]; the second is padded after `real_s` seconds."""
    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(2, int(sample_rate * seconds), generator=gen) * 0.1
    mask = torch.ones_like(wave, dtype=torch.bool)
    mask[1, int(sample_rate * real_s) :] = False
    wave[1, int(sample_rate * real_s) :] = 0.0
    return wave, mask


def test_logmel_plain_peaks_at_the_tone() -> None:
    backbone = LogMelBackbone()
    t = torch.arange(24000) / 24000
    emb, mask = backbone(torch.sin(2 * torch.pi * 1000 * t)[None])
    assert emb.shape == (1, 24000 // 960 + 1, 128) and mask.all()
    centres = librosa.mel_frequencies(n_mels=130, fmin=30.0, fmax=12000.0)[1:-1]
    peak_hz = centres[int(emb[0, 10].argmax())]
    assert 900 < peak_hz < 1100
    assert backbone.num_layers == 0 and backbone.layers() == []
    # The filterbank is librosa's default one (what the trained models saw), built without librosa.
    ref = librosa.filters.mel(sr=24000, n_fft=2048, n_mels=128, fmin=30.0, fmax=12000.0)
    np.testing.assert_allclose(backbone.mel_fb.numpy(), ref, rtol=1e-4, atol=1e-7)


def test_logmel_stack_layers_and_mask() -> None:
    backbone = LogMelBackbone(hidden=32, num_layers=2).eval()
    wave, wave_mask = _batch(24000)
    emb, mask = backbone(wave, wave_mask)
    assert emb.shape == (2, 51, 32)
    assert mask[0].all() and int(mask[1].sum()) == 26  # 25 frames/s for 1 s, plus the centred STFT's extra frame
    hidden, _ = backbone.hidden_states(wave, wave_mask)
    mean, _ = backbone(wave, wave_mask, layers=[1, 2])
    torch.testing.assert_close(mean, (hidden[1] + hidden[2]) / 2)
    torch.testing.assert_close(emb, hidden[2])  # the log-mel stack's default: its last layer
    with pytest.raises(ConfigError, match="out of range"):
        backbone(wave, wave_mask, layers=[3])


def test_muq_from_config_shapes_and_layers() -> None:
    backbone = MuQBackbone.from_config(muq_small_config(encoder_depth=3)).eval()
    wave, wave_mask = _batch(24000)
    with torch.no_grad():
        hidden, mask = backbone.hidden_states(wave, wave_mask)
        emb, _ = backbone(wave, wave_mask)
        last, _ = backbone(wave, wave_mask, layers=[3])
        two, _ = backbone(wave, wave_mask, layers=[2, 3])
    assert backbone.frame_rate == 25.0 and backbone.hidden_size == 64 and len(backbone.layers()) == 3
    assert len(hidden) == 4 and emb.shape == (2, 50, 64)
    assert int(mask[1].sum()) == 25 and mask[0].all()
    # Layer i is the output of block i; by default MuQ averages its top 4 layers: all 3 here.
    assert backbone.probe_layers == [1, 2, 3]
    torch.testing.assert_close(emb, torch.stack(hidden[1:]).mean(0))
    torch.testing.assert_close(last, hidden[3])
    torch.testing.assert_close(two, (hidden[2] + hidden[3]) / 2)
    # The last state is layer-normed (as in MuQ's hidden_states), the block output before it is not.
    assert abs(float(last[0].mean(-1).abs().mean())) < 1e-4
    assert not torch.equal(hidden[1], hidden[2])
    backbone.set_probe_layers([2])
    with torch.no_grad():
        torch.testing.assert_close(backbone(wave, wave_mask)[0], hidden[2])


@pytest.mark.parametrize(
    ("depth", "expected"), [(12, [9, 10, 11, 12]), (3, [1, 2, 3]), (4, [1, 2, 3, 4])], ids=["large", "cpu", "four"]
)
def test_muq_default_layers_are_the_top_four(depth: int, expected: list[int]) -> None:
    from pianoeval.audio.backbones import top_layers

    assert top_layers(depth) == expected


@pytest.mark.parametrize(
    ("layers", "match"),
    [([0], r"layer\(s\) \[0\] out of range: this backbone has layers 1..3"), ([4, 1], r"\[4\]"), ([], "at least one")],
    ids=["zero-is-not-a-layer", "above-depth", "empty"],
)
def test_layer_numbers_out_of_range_are_config_errors(layers: list[int], match: str) -> None:
    backbone = MuQBackbone.from_config(muq_small_config(encoder_depth=3))
    with pytest.raises(ConfigError, match=match):
        backbone.set_probe_layers(layers)
    with pytest.raises(ConfigError, match=match):
        backbone(torch.zeros(1, 24000), layers=layers)


def test_muq_from_pretrained_round_trip(tmp_path) -> None:
    backbone = MuQBackbone.from_config(muq_small_config(), seed=3).eval()
    backbone.muq.save_pretrained(tmp_path)
    loaded = MuQBackbone.from_pretrained(str(tmp_path)).eval()
    wave = torch.randn(1, 24000)
    with torch.no_grad():
        torch.testing.assert_close(backbone(wave)[0], loaded(wave)[0])


def test_muq_from_pretrained_missing_weights_is_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="MuQ weights folder not found"):
        MuQBackbone.from_pretrained(str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def transkun_backbone() -> TranskunBackbone:
    return TranskunBackbone(pretrained=True)


def test_transkun_backbone_frames(transkun_backbone: TranskunBackbone) -> None:
    backbone = transkun_backbone
    assert backbone.sample_rate == 44100 and backbone.hidden_size == 512 and len(backbone.layers()) == 6
    assert not any(p.requires_grad for p in backbone.parameters())
    wave, wave_mask = _batch(44100, seconds=1.5, real_s=0.5)
    with torch.no_grad():
        emb, mask = backbone(wave, wave_mask)
        first, _ = backbone(wave, wave_mask, layers=[1])
    n = int(np.ceil(1.5 * 44100 / 8192))
    assert emb.shape == (2, n, 512)
    assert mask[0].all() and int(mask[1].sum()) == int(np.ceil(0.5 * 44100 / 8192))
    assert torch.all(emb[1, ~mask[1]] == 0) and not torch.allclose(emb, first)
    # [mean ; max] over query tokens: the max half is never below the mean half.
    assert torch.all(emb[0, :, 256:] >= emb[0, :, :256] - 1e-5)


def test_transkun_backbone_resamples_24k(transkun_backbone: TranskunBackbone) -> None:
    backbone = transkun_backbone
    backbone.input_sample_rate = 24000
    try:
        with torch.no_grad():
            emb, mask = backbone(torch.randn(1, 24000) * 0.1)
    finally:
        backbone.input_sample_rate = 44100
    assert emb.shape == (1, int(np.ceil(44100 / 8192)), 512) and mask.all()


def test_build_backbone_by_name() -> None:
    assert isinstance(build_backbone("logmel", hidden=16), LogMelBackbone)
    assert build_backbone("muq", config=muq_small_config(encoder_depth=1)).num_layers == 1
    with pytest.raises(ConfigError, match="unknown audio backbone"):
        build_backbone("wav2vec")
    with pytest.raises(InputError, match="waveform batch"):
        LogMelBackbone()(torch.zeros(24000))
