"""The audio models A1-A3 through the pipeline's training step (`run_train`) on a tiny corpus.

Tiny fixtures: 4 demo pieces x 3 performances, each "rendered" as a 1.5 s synthetic WAV whose
loudness and brightness follow the performance's labels; a small random-weight MuQ; 2 epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from pianoeval.core.config import validate_config
from pianoeval.core.constants import DIMENSIONS
from pianoeval.core.io import read_json
from pianoeval.core.settings import AudioSettings, BackboneSettings, FitSettings
from pianoeval.data.demo import generate_demo_corpus
from pianoeval.data.manifest import MANIFEST_COLUMNS, label_matrix, write_manifest
from pianoeval.steps.train import run_train
from pianoeval.training.audio_data import WaveformDataset, WaveformSpec, crop_or_pad
from pianoeval.training.checkpoints import load_trained_module
from pianoeval.training.registry import build_module, build_network

SR = 24_000
MUQ_SMALL = {"encoder_dim": 32, "encoder_depth": 3, "heads": 2, "conv_dim": 8}
CONTRACT = {"pairwise_acc", "r2", "per_dimension", "n_train", "n_val", "wall_s"}


def audio_config(**audio: Any) -> dict[str, Any]:
    """A validated config with a small random-weight MuQ and 2 epochs."""
    base = {
        "models": ["a1", "a2", "a3"],
        "backbone": "muq",
        "muq_pretrained": False,
        "muq_small": MUQ_SMALL,
        "hidden": 16,
        "heads": 2,
        "clip_seconds": 1.0,
        "lora_rank": 2,
        "lora_alpha": 4,
        "self_supervised_epochs": 1,
        "unfreeze_schedule": {0: [3], 1: [2]},
        "layer_lr_decay": 0.5,
        "performances_per_group": 3,
    }
    base.update(audio)
    config = {"seed": 3, "audio": base, "training": {"max_epochs": 2, "batch_size": 6, "patience": 5, "lr": 1e-3}}
    return validate_config(config)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, one_fold: Callable[..., dict]) -> dict[str, Path]:
    """Manifest with audio paths, folds (train 2 groups, dev 1, val 1) and a cached-frame store."""
    root = tmp_path_factory.mktemp("audio_corpus")
    df = generate_demo_corpus(root / "demo", n_pieces=4, n_performances=3, seconds=2.0, seed=7)
    labels = label_matrix(df)
    t = np.arange(int(1.5 * SR)) / SR
    paths = []
    for i in range(len(df)):
        # Dynamics drive loudness, the first dimension brightness: something for the model to hear.
        base = 110.0 * (1 + i % 4)
        wave = sum(np.sin(2 * np.pi * base * h * t) / h ** (2 - labels[i, 0]) for h in (1, 2, 3, 4))
        wave = (0.2 + 0.4 * labels[i].mean()) * wave / np.abs(wave).max() * np.exp(-t)
        path = root / "wav" / f"seg{i:02d}.wav"  # segment ids hold "/" and "::"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, wave.astype(np.float32), SR, subtype="FLOAT")
        paths.append(str(path))
    df["audio_path"] = paths
    manifest = root / "manifest.parquet"
    write_manifest(df[list(MANIFEST_COLUMNS)], manifest)
    one_fold(df, root / "folds.json", n_train=2, n_dev=1)
    gen = torch.Generator().manual_seed(0)
    store = {
        "kind": "audio",
        "meta": {"backbone": "muq", "dim": MUQ_SMALL["encoder_dim"], "frame_rate": 5.0, "sample_rate": SR},
        "items": {
            sid: {"audio_emb": torch.randn(7, MUQ_SMALL["encoder_dim"], generator=gen)} for sid in df["segment_id"]
        },
    }
    torch.save(store, root / "muq.pt")
    return {"manifest": manifest, "folds": root / "folds.json", "features": root / "muq.pt", "root": root}


def train(model: str, corpus: dict[str, Path], out: Path, **audio: Any) -> dict[str, Any]:
    """run_train on fold 0 of the tiny corpus."""
    config = audio_config(**audio)
    return run_train("audio", model, config, 0, corpus["manifest"], corpus["folds"], corpus["features"], out)


def check_contract(metrics: dict[str, Any], out: Path, hidden: int = 16) -> pd.DataFrame:
    """The fold outputs every model writes: metrics keys, one prediction row per item, embeddings."""
    assert set(metrics) >= CONTRACT
    assert (metrics["n_train"], metrics["n_dev"], metrics["n_val"]) == (6, 3, 3)
    assert set(metrics["per_dimension"]) == set(DIMENSIONS)
    assert read_json(out / "metrics.json")["pairwise_acc"] == metrics["pairwise_acc"]
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 12 and sorted(pred["split"].unique()) == ["dev", "train", "val"]
    scores = pred[[f"pred_{d}" for d in DIMENSIONS]].to_numpy()
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    emb = torch.load(out / "embeddings.pt", weights_only=False)
    assert emb["z"].shape == (12, hidden) and emb["scores"].shape == (12, len(DIMENSIONS))
    return pred


def best_state(out: Path) -> dict[str, torch.Tensor]:
    """State dict of the fold's selected checkpoint."""
    ckpt = out / "checkpoints" / "best.ckpt"
    return torch.load(ckpt if ckpt.is_file() else out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def test_a1_lora_end_to_end(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "a1"
    metrics = train("a1", corpus, out)
    pred = check_contract(metrics, out)
    state = best_state(out)
    lora = [k for k in state if "lora_A" in k or "lora_B" in k]
    # rank-2 adapters on q, k, v of all 3 blocks: an A and a B matrix each
    assert len(lora) == 3 * 3 * 2
    assert all(state[k].shape[0] == 2 for k in lora if "lora_A" in k)
    # LoRA B starts at zero: training moved at least one of them
    assert any(state[k].abs().sum() > 0 for k in lora if "lora_B" in k)
    # load_trained_module rebuilds the adapters before loading and reproduces the val predictions
    module = load_trained_module(out)
    val = pred[pred["split"] == "val"]
    manifest = pd.read_parquet(corpus["manifest"])
    spec = WaveformSpec(
        dict(zip(manifest["segment_id"], manifest["audio_path"], strict=True)),
        SR,
        1.0,
    )
    from pianoeval.data.datasets import multi_task_collate_fn

    items = [{"segment_id": s} for s in val["segment_id"]]
    batch = multi_task_collate_fn([WaveformDataset(items, spec)[i] for i in range(len(items))])
    with torch.no_grad():
        again = module(batch).numpy()
    np.testing.assert_allclose(again, val[[f"pred_{d}" for d in DIMENSIONS]].to_numpy(), atol=1e-5)


def test_a3_unfreezes_scheduled_blocks_only(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "a3"
    check_contract(train("a3", corpus, out), out)
    state = best_state(out)
    assert not any("lora_" in k for k in state)
    fresh = build_network("a3", {}, FitSettings.from_config(audio_config())).state_dict()
    prefix = "net.encoder.backbone.muq.model.conformer.layers"

    def changed(block: int) -> bool:
        keys = [
            k for k in fresh if k.startswith(f"backbone.muq.model.conformer.layers.{block}.") and "num_batches" not in k
        ]
        return any(not torch.equal(fresh[k], state[f"net.encoder.{k}"]) for k in keys if fresh[k].is_floating_point())

    assert any(k.startswith(prefix) for k in state)
    # schedule {0: [3], 1: [2]}: layer 3 (block index 2) trains from epoch 0; layer 1 (block 0) never
    assert changed(2)
    assert not changed(0)
    # The conformer's final LayerNorm, above the top block, stays frozen (it is no block's).
    final_norm = [k for k in fresh if k.startswith("backbone.muq.model.conformer.layer_norm.")]
    assert final_norm
    for k in final_norm:
        assert torch.equal(fresh[k], state[f"net.encoder.{k}"]), k


def test_a2_staged_and_a1_cached(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "a2"
    check_contract(train("a2", corpus, out), out)
    assert any("lora_A" in k for k in best_state(out))
    log = pd.read_csv(out / "logs" / "metrics.csv")
    # epoch 0 is label-free (no ranking/regression terms), epoch 1 supervised
    ranking = log.dropna(subset=["train/ranking"]) if "train/ranking" in log else log.iloc[:0]
    assert len(ranking) > 0 and ranking["epoch"].min() == 1
    # A1 with lora_rank 0 trains on the cached frames: no backbone in the network or checkpoint
    assert not AudioSettings.from_config(audio_config(lora_rank=0)).live_backbone("a1")
    out0 = tmp_path / "a1_cached"
    check_contract(train("a1", corpus, out0, lora_rank=0), out0)
    assert not any(k.startswith("net.encoder.backbone.") for k in best_state(out0))


def test_a2_best_checkpoint_is_a_supervised_epoch(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Checkpoint selection is blind to A2's label-free epochs. At a learning rate of 0 every epoch
    scores the same on dev, so the first epoch would stay the best if it counted; only the stage rule
    makes the (later) supervised epoch the selected one."""
    out = tmp_path / "a2"
    config = audio_config()
    config["training"]["lr"] = 0.0
    run_train("audio", "a2", config, 0, corpus["manifest"], corpus["folds"], corpus["features"], out)
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["audio_stage"]["stage"] == "supervised"
    assert best["epoch"] >= config["audio"]["self_supervised_epochs"]
    log = pd.read_csv(out / "logs" / "metrics.csv").dropna(subset=["dev/selection"])
    assert log["dev/selection"].nunique() == 1  # the premise: no epoch scores better than another


def test_a2_needs_supervised_epochs() -> None:
    from pianoeval.core.errors import ConfigError

    config = audio_config(self_supervised_epochs=2)
    net = build_network("a2", {}, FitSettings.from_config(config))
    with pytest.raises(ConfigError, match="self_supervised_epochs"):
        build_module("a2", net, FitSettings.from_config(config), label_mean=None)


def test_waveform_dataset_windows_and_views(corpus: dict[str, Path]) -> None:
    wav = next((corpus["root"] / "wav").glob("*.wav"))
    spec = WaveformSpec({"x": str(wav)}, SR, clip_seconds=1.0, augment=True, augment_prob=1.0, seed=1)
    items = [{"segment_id": "x", "audio_emb": torch.zeros(3, 4), "group": torch.tensor(0)}]
    ev = WaveformDataset(items, spec)[0]
    assert ev["wave"].shape == (SR,) and ev["wave_mask"].all() and "wave_aug" not in ev and "audio_emb" not in ev
    full, _ = crop_or_pad(sf.read(wav, dtype="float32")[0], SR)
    np.testing.assert_allclose(ev["wave"].numpy(), full, atol=1e-6)  # evaluation: the first window
    tr = WaveformDataset(items, spec, train=True)[0]
    assert tr["wave_aug"].shape == (SR,) and not torch.equal(tr["wave_aug"], tr["wave"])
    long_spec = WaveformSpec({"x": str(wav)}, SR, clip_seconds=2.0)
    padded = WaveformDataset(items, long_spec)[0]
    assert padded["wave_mask"].sum() == int(1.5 * SR) and padded["wave"][~padded["wave_mask"]].abs().sum() == 0


@pytest.mark.parametrize(
    "audio",
    [{"hidden_layers": [0]}, {"lora_layers": [0, 1]}, {"unfreeze_schedule": {0: [-1]}}, {"hidden_layers": []}],
    ids=["hidden-zero", "lora-zero", "unfreeze-negative", "hidden-empty"],
)
def test_schema_refuses_layer_numbers_below_one(audio: dict[str, Any]) -> None:
    from pianoeval.core.errors import ConfigError

    with pytest.raises(ConfigError, match="config key audio"):
        audio_config(**audio)


def test_embed_honours_hidden_layers(tmp_path: Path) -> None:
    from pianoeval.audio.embed import CACHE_FRAME_RATE, embed_wave, pool_frames
    from pianoeval.training.registry import build_frozen_backbone

    wave = (0.1 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    default = build_frozen_backbone("muq", BackboneSettings.from_config(audio_config()))
    chosen = build_frozen_backbone("muq", BackboneSettings.from_config(audio_config(hidden_layers=[2])))
    # The config's layers reach the embed rule (and the robustness check, which builds it the same way).
    assert default.probe_layers == [1, 2, 3] and chosen.probe_layers == [2]
    with torch.no_grad():
        hidden, _ = chosen.hidden_states(torch.from_numpy(wave)[None], None)
    expected = pool_frames(hidden[2][0], chosen.frame_rate, CACHE_FRAME_RATE)
    torch.testing.assert_close(embed_wave(chosen, wave, SR), expected)
    assert not torch.allclose(embed_wave(default, wave, SR), expected)
    from pianoeval.core.errors import ConfigError

    out_of_range = r"audio.hidden_layers: layer\(s\) \[4\] out of range: this backbone has layers 1..3"
    with pytest.raises(ConfigError, match=out_of_range):
        build_frozen_backbone("muq", BackboneSettings.from_config(audio_config(hidden_layers=[4])))


def _unlabelled_manifest(corpus: dict[str, Path], root: Path) -> tuple[Path, str]:
    """Rendered unlabelled performances with beat annotations: 2 new pieces x 3 performers, one piece
    of the fold's val music, and the ASAP piece that PercePiano shares. Returns (manifest, val piece)."""
    from pianoeval.core.io import read_json
    from pianoeval.data.manifest import make_rows

    labelled = pd.read_parquet(corpus["manifest"])
    val_ids = read_json(corpus["folds"])["folds"][0]["val"]
    val_piece = str(labelled.loc[labelled["segment_id"] == val_ids[0], "piece_id"].iloc[0])
    rows = []
    for piece in ("Bach/Fugue/bwv_1", "Bach/Fugue/bwv_2", val_piece, "Schubert/Impromptu_op142/3"):
        for k, tempo in enumerate((0.5, 0.55, 0.6)):
            folder = root / piece.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            beats = np.arange(12) * tempo  # 12 beats: two 1.5-2 s windows per performance at clip 1 s
            (folder / f"p{k}_annotations.txt").write_text("".join(f"{t}\t{t}\tb\n" for t in beats))
            t = np.arange(int((beats[-1] + 1) * SR)) / SR
            sf.write(folder / f"p{k}.wav", (0.2 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32), SR)
            rows.append(
                {
                    "segment_id": f"asap::{piece}/p{k}",
                    "piece_id": piece,
                    "segment_group": piece,
                    "performer": f"p{k}",
                    "tier": "T3",
                    "source": "asap",
                    "midi_path": str(folder / f"p{k}.mid"),  # only its annotations are read
                    "audio_path": str(folder / f"p{k}.wav"),
                }
            )
    path = root / "unlabelled.parquet"
    write_manifest(make_rows(rows), path)
    return path, val_piece


def test_a2_self_supervised_stage_reads_unlabelled_music(corpus: dict[str, Path], tmp_path: Path) -> None:
    from pianoeval.core.errors import ConfigError

    manifest, val_piece = _unlabelled_manifest(corpus, tmp_path / "asap")
    out = tmp_path / "a2"
    config = audio_config(unlabelled_fraction=0.5)
    metrics = run_train(
        "audio", "a2", config, 0, corpus["manifest"], corpus["folds"], corpus["features"], out,
        unlabelled_manifest=manifest,
    )  # fmt: skip
    check_contract(metrics, out)
    stats = metrics["unlabelled"]
    # The val piece and the piece PercePiano shares are left out; 2 pieces x 3 performances remain.
    assert stats["excluded_pieces"] == sorted([val_piece, "Schubert/Impromptu_op142/3"])
    assert stats["n_performances"] == 6 and stats["n_groups"] > 0
    log = pd.read_csv(out / "logs" / "metrics.csv")
    share = log.dropna(subset=["train/unlabelled_share"]) if "train/unlabelled_share" in log else log.iloc[:0]
    # Unlabelled clips only in the self-supervised epoch (epoch 0), about half of its items.
    assert len(share) > 0 and set(share["epoch"]) == {0}
    assert 0.2 < share["train/unlabelled_share"].mean() < 0.8
    assert metrics["best_epoch"] >= 1  # checkpoint selection still ignores the label-free epoch
    with pytest.raises(ConfigError, match="only a2's self-supervised stage"):
        run_train(
            "audio", "a1", config, 0, corpus["manifest"], corpus["folds"], corpus["features"], tmp_path / "a1",
            unlabelled_manifest=manifest,
        )  # fmt: skip
    assert not (tmp_path / "a1").exists()  # refused before anything is written


AUDIO_MODELS = ("probe", "a1", "a2", "a3")


@pytest.mark.slow(reason="trains each audio model twice on a small random-weight MuQ")
@pytest.mark.parametrize("model", AUDIO_MODELS, ids=[f"model={m}" for m in AUDIO_MODELS])
def test_same_seed_and_config_give_identical_audio_results(model: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    """Two runs of one audio model with the same seed and config: the same metrics, predictions and
    embeddings, bit for bit (random windows, augmented views, dropout and A3's unfreezing included)."""
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        metrics = train(model, corpus, out)
        metrics.pop("wall_s")
        z = torch.load(out / "embeddings.pt", weights_only=False)["z"]
        runs.append((metrics, (out / "predictions.csv").read_bytes(), z))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert torch.equal(runs[0][2], runs[1][2])
