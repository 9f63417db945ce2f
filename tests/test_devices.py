"""The GPU is used where it is reserved: the device each step resolves from its rule's `gpu` resource,
inference in bounded batches, and rules that declare `gpu` and pass it on (CPU tests: CUDA is faked
where its presence matters, and no tensor goes to a GPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pianoeval.core import device as device_module
from pianoeval.core.config import validate_config
from pianoeval.core.device import INFERENCE_BATCH, batches, resolve_device
from pianoeval.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_a_step_computes_on_the_gpu_only_when_its_rule_reserved_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(1).type == "cuda"  # the job holds the GPU: it computes there
    assert resolve_device(0).type == "cpu"  # gpu=0 (the local profile): the CPU, even on a GPU machine
    assert resolve_device(None).type == "cuda"  # no rule (pianoeval score): the GPU when there is one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(1).type == "cpu"  # the demo's gpu=1 on a CPU machine
    assert resolve_device(None, "cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device 'cuda' requested but CUDA sees no GPU"):
        resolve_device(None, "cuda")


def test_batches_are_bounded_and_cover_every_item_in_order() -> None:
    parts = batches(21, 8)
    assert [len(p) for p in parts] == [8, 8, 5]
    assert [i for p in parts for i in p] == list(range(21))
    assert batches(0) == []


class RecordingProbe(nn.Module):
    """A stand-in trained audio module on cached frames: records each batch's size and device."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.sizes: list[int] = []

    def embed_and_score(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(batch)
        self.sizes.append(int(z.shape[0]))
        return z, torch.sigmoid(z[:, :1].repeat(1, 19))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.devices: list[str] = []

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        self.devices.append(batch["audio_emb"].device.type)
        emb, mask = batch["audio_emb"], batch["audio_mask"].unsqueeze(-1)
        return self.scale * (emb * mask).sum(1) / mask.sum(1)  # per-item mean over its own frames


def test_robustness_scores_a_folds_recordings_in_bounded_batches_with_the_same_result() -> None:
    """audio_outputs (both robustness steps) never collates a fold's whole validation set at once, and
    padding within a batch does not change an item's output."""
    from pianoeval.audio.backbones import build_backbone
    from pianoeval.evaluation.robustness import audio_outputs

    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(int(24_000 * s))).astype(np.float32) for s in np.linspace(0.5, 2.0, 19)]
    backbone, module = build_backbone("logmel").eval(), RecordingProbe()
    z, scores = audio_outputs(module, backbone, waves, 24_000, clip_seconds=2.0)
    assert max(module.sizes) <= INFERENCE_BATCH and sum(module.sizes) == len(waves) == len(z) == len(scores)
    assert set(module.encoder.devices) == {"cpu"}
    one_by_one = torch.cat([audio_outputs(module, backbone, [w], 24_000, 2.0)[0] for w in waves[:5]])
    torch.testing.assert_close(z[:5], one_by_one)


def test_steps_resolve_their_device_from_the_rules_reservation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """embed, transcribe, audio_robustness and robustness ask core.device with the --devices their rule
    passed; training's prediction pass gets the device of the job (train and fuse)."""
    import inspect

    from pianoeval.steps import audio_robustness, embed, fuse, robustness, transcribe
    from pianoeval.training import fit

    for step in (embed.run_embed, transcribe.run_transcribe, audio_robustness.run_audio_robustness):
        assert "devices" in inspect.signature(step).parameters, step
    assert "devices" in inspect.signature(robustness.run_robustness).parameters
    # train and train_inner predict through fit_predict.
    assert "resolve_device(devices)" in inspect.getsource(fit.fit_predict)
    assert "resolve_device(devices)" in inspect.getsource(fuse.run_fuse)

    # A real embed call: the backbone goes to the device resolved from the rule's reservation.
    from pianoeval.audio.io import save_audio
    from pianoeval.data.manifest import make_rows, write_manifest

    asked: list[Any] = []
    real = device_module.resolve_device
    monkeypatch.setattr(device_module, "resolve_device", lambda d=None, r="auto": asked.append(d) or real(0))
    wav = save_audio(0.3 * np.sin(np.arange(24_000) / 10.0), tmp_path / "a.wav", 24_000)
    rows = [{"segment_id": "s", "piece_id": "p", "segment_group": "g", "performer": "1", "tier": "T1",
             "source": "t", "audio_path": str(wav)}]  # fmt: skip
    write_manifest(make_rows(rows), tmp_path / "m.parquet")
    embed.run_embed("logmel", validate_config({}), tmp_path / "m.parquet", tmp_path / "e.pt", tmp_path / "c", devices=1)
    assert asked == [1]


def test_predict_network_moves_batches_to_the_jobs_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from pianoeval.training import predict

    moved: list[Any] = []
    real = device_module.to_device
    monkeypatch.setattr(device_module, "to_device", lambda b, d: moved.append(d) or real(b, d))

    class Data:
        def __init__(self) -> None:
            self.splits = {"val": [0, 1, 2]}

        def subset(self, split: str) -> list[int]:
            return self.splits[split]

        def dataset(self, split: str) -> list[dict[str, Any]]:
            return [{"audio_emb": torch.ones(3, 4), "stats": torch.ones(8)} for _ in range(3)]

    module = RecordingProbe()
    module.encoder.hidden_size = 4
    preds, embs = predict.predict_network(module, Data(), batch_size=2, device=torch.device("cpu"))
    assert preds["val"].shape == (3, 19) and embs["val"].shape == (3, 4) and module.sizes == [2, 1]
    assert moved == [torch.device("cpu")] * 2


def dry_run_commands(work: Path, gpus: int) -> list[str]:
    """The shell commands of the thunder experiment's dry run with `gpus` GPUs reserved (in a copy of
    the workflow: the repository's own results/ may hold another experiment)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [BIN / "snakemake", "-n", "-p", "--cores", "8", "--resources", f"gpu={gpus}",
         "--configfile", "config/experiments/percepiano_muq.yaml", "--", "results/fusion/winner.json"],
        env=env, capture_output=True, text=True, timeout=300, cwd=work,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line.strip().removeprefix("Shell command:").strip() for line in run.stdout.splitlines()]
    return [line for line in lines if line.startswith("pianoeval ")]


@pytest.mark.parametrize("gpus", [0, 1])
def test_the_gpu_rules_declare_gpu_and_pass_it_to_their_step(gpus: int, tmp_path: Path) -> None:
    from test_experiments import checkout

    commands = dry_run_commands(checkout(tmp_path / "repo"), gpus)
    # The baselines' folds (train_baseline) are closed-form fits: they reserve no GPU.
    baselines = [c for c in commands if c.split()[1] == "train" and c.split()[3].startswith("baseline_")]
    assert baselines and all("--devices 0" in c for c in baselines), baselines[:1]
    for step in ("embed", "transcribe", "pretrain", "train", "audio-robustness", "fuse", "robustness"):
        mine = [c for c in commands if c.split()[1] == step and c not in baselines]
        assert mine, step
        assert all(f"--devices {gpus}" in c for c in mine), (step, mine[0])
    for step in ("render", "featurize", "prepare", "compare"):  # CPU steps reserve nothing
        assert all("--devices" not in c for c in commands if c.split()[1] == step), step
