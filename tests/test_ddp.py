"""Multi-device training: `fit_module(devices=2)` runs Lightning DDP (2 CPU processes, gloo here;
one per GPU on a GPU machine) with the package's real S3 network and PerformanceModule.

Lightning's DDP starts the second rank by running the calling script again, so the training runs
in a small script in a subprocess, as `pianoeval train --devices 2` would; each rank records what
it saw and its parameters at the end, and the test compares the ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = '''
"""Fit a small S3 + PerformanceModule with fit_module on DEVICES devices; every rank records its run."""
import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pianoeval.core.config import validate_config
from pianoeval.core.settings import FitSettings
from pianoeval.core.constants import N_DIMS
from pianoeval.training.data import FoldData
from pianoeval.training.registry import build_network
from pianoeval.training.fit import fit_module

out, devices = Path(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
config = validate_config(
    {
        "symbolic": {"hidden": 16, "layers": 2, "heads": 2, "stats_side_input": False},
        "training": {"max_epochs": 2, "batch_size": 4, "patience": 5},
    }
)
# 10 musical segments x 4 performances: 6 segments train (6 batches of 4), 2 dev, 2 val.
gen = torch.Generator().manual_seed(0)
items, splits = [], {"train": [], "dev": [], "val": []}
for g in range(10):
    split = "train" if g < 6 else "dev" if g < 8 else "val"
    for k in range(4):
        splits[split].append(len(items))
        items.append(
            {
                "curves": torch.randn(30 + 3 * k, 6, generator=gen),
                "labels": torch.rand(N_DIMS, generator=gen),
                "group": torch.tensor(g),
                "segment_id": f"g{g}_p{k}",
                "split": split,
            }
        )
data = FoldData(items, splits, {"n_features": 6}, [])


class Record(Callback):
    """Per rank: the world size, the training ids seen per epoch, parameters at start and end, metric."""

    def __init__(self):
        self.seen, self.start = {}, None

    def on_train_start(self, trainer, pl_module):
        self.start = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["segment_id"])

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {
                "world": trainer.world_size,
                "batches": trainer.num_training_batches,
                "seen": self.seen,
                "start": self.start,
                "end": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                "selection": float(trainer.callback_metrics["dev/selection"]),
            },
            out / f"rank{trainer.global_rank}.pt",
        )


L.seed_everything(7, workers=True, verbose=False)
settings = FitSettings.from_config(config)
net = build_network("s3", data.meta, settings)
module, info = fit_module(net, settings, data, out, seed=7, model="s3", devices=devices, callbacks=[Record()])
rank = int(__import__("os").environ.get("LOCAL_RANK", 0))
(out / f"returned{rank}.json").write_text(json.dumps({"module": module is not None, "info": info}))
'''


def test_ddp_two_processes_keep_identical_parameters(tmp_path: Path) -> None:
    script = tmp_path / "fit_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script), str(out), "2"], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The second rank is a child of the first; give it a moment to finish after rank 0 returns.
    deadline = time.monotonic() + 60
    while not (out / "returned1.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    assert [r["world"] for r in ranks] == [2, 2]
    # Each rank trains on half of the 6 training batches, and together they cover the training split
    # once per epoch: the sampler shards, it does not give both ranks everything.
    assert [r["batches"] for r in ranks] == [3, 3]
    train_ids = {f"g{g}_p{k}" for g in range(6) for k in range(4)}
    for epoch in (0, 1):
        seen0, seen1 = set(ranks[0]["seen"][epoch]), set(ranks[1]["seen"][epoch])
        assert not seen0 & seen1
        assert seen0 | seen1 == train_ids
    # Gradients are averaged across ranks: different data, identical parameters after every step.
    names = ranks[0]["end"].keys()
    assert names == ranks[1]["end"].keys()
    for name in names:
        assert torch.equal(ranks[0]["end"][name], ranks[1]["end"][name]), name
    # ...and training did change them.
    assert any(not torch.equal(ranks[0]["start"][n], ranks[0]["end"][n]) for n in names)
    # Both ranks score the whole dev split: the same selection metric, hence the same stopping.
    assert ranks[0]["selection"] == pytest.approx(ranks[1]["selection"], abs=1e-7)
    # Rank 0 returns the best module (and writes outputs); the worker rank returns none.
    returned = [json.loads((out / f"returned{r}.json").read_text()) for r in (0, 1)]
    assert returned[0]["module"] and returned[0]["info"]["epochs_run"] >= 1
    assert not returned[1]["module"]
    assert (out / "checkpoints" / "last.ckpt").is_file()  # written once, by rank 0


@pytest.mark.parametrize(
    ("n_items", "world"), [(24, 2), (21, 2), (9, 4), (4, 3)], ids=["even", "odd", "4-ranks", "one-batch"]
)
def test_sharded_group_batches_are_equal_in_number_and_cover_every_batch(n_items: int, world: int) -> None:
    from pianoeval.training.data import GroupBatchSampler

    groups = [i // 3 for i in range(n_items)]
    full = list(GroupBatchSampler(groups, 4, seed=1))
    shards = []
    for rank in range(world):
        sampler = GroupBatchSampler(groups, 4, seed=1, shard=True)
        sampler._replicas = lambda rank=rank: (rank, world)  # as under an initialised process group
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    # Every rank takes the same number of steps (DDP waits for all), and together they see every
    # batch of the unsharded epoch; only the padding (fewer than `world` batches) repeats one.
    assert len({len(shard) for shard in shards}) == 1
    seen = [batch for shard in shards for batch in shard]
    assert all(batch in seen for batch in full)
    assert len(seen) - len(full) < world
    # Without a process group a sharding sampler is the plain one.
    assert list(GroupBatchSampler(groups, 4, seed=1, shard=True)) == full


A3_SCRIPT = '''
"""Fit A3 (small random MuQ) with fit_module on 2 devices; layers are unfrozen at epochs 0 and 1, both
after Lightning wrapped the model in DDP. Every rank saves its parameters at the end."""
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pianoeval.core.config import validate_config
from pianoeval.core.settings import FitSettings
from pianoeval.core.constants import N_DIMS
from pianoeval.training.data import FoldData
from pianoeval.training.registry import build_network
from pianoeval.training.fit import fit_module

out = Path(sys.argv[1])
torch.set_num_threads(1)
audio = {
    "models": ["a3"], "backbone": "muq", "muq_pretrained": False,
    "muq_small": {"encoder_dim": 16, "encoder_depth": 3, "heads": 2, "conv_dim": 4},
    "hidden": 16, "heads": 2, "unfreeze_schedule": {0: [3], 1: [2]}, "backbone_lr": 1e-2,
    "loss_weights": {"invariance": 0.0}, "performances_per_group": 2,
}
config = validate_config({"seed": 5, "audio": audio, "training": {"max_epochs": 2, "batch_size": 4, "patience": 5}})
gen = torch.Generator().manual_seed(0)
items, splits = [], {"train": [], "dev": [], "val": []}
t = torch.arange(24000) / 24000
for g in range(10):
    split = "train" if g < 6 else "dev" if g < 8 else "val"
    for k in range(4):
        splits[split].append(len(items))
        tone = (0.05 + 0.02 * k) * torch.sin(2 * torch.pi * (110.0 * (g + 1) + 7.0 * k) * t)
        items.append(
            {
                "wave": tone + 0.01 * torch.randn(24000, generator=gen),
                "labels": torch.rand(N_DIMS, generator=gen),
                "group": torch.tensor(g),
                "segment_id": f"g{g}_p{k}",
                "split": split,
            }
        )
data = FoldData(items, splits, {}, [])


class Record(Callback):
    def on_train_start(self, trainer, pl_module):
        self.start = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        blocks = pl_module.encoder.backbone.layers()
        torch.save(
            {
                "world": trainer.world_size,
                "unfrozen": list(pl_module.unfrozen),
                "start": self.start,
                "end": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                "block_prefixes": [
                    next(n for n, m in pl_module.named_modules() if m is b) + "." for b in blocks
                ],
            },
            out / f"rank{trainer.global_rank}.pt",
        )


L.seed_everything(5, workers=True, verbose=False)
settings = FitSettings.from_config(config)
net = build_network("a3", {}, settings)
fit_module(net, settings, data, out, seed=5, model="a3", devices=2, callbacks=[Record()])
rank = int(__import__("os").environ.get("LOCAL_RANK", 0))
(out / f"done{rank}").write_text("ok")
'''


def test_ddp_a3_unfreezes_layers_mid_training_and_ranks_stay_identical(tmp_path: Path) -> None:
    script = tmp_path / "fit_a3_ddp.py"
    script.write_text(A3_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    deadline = time.monotonic() + 60
    while not (out / "done1").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # Layer 3 at epoch 0 and layer 2 at epoch 1: both made trainable after DDP wrapped the model.
    assert ranks[0]["unfrozen"] == ranks[1]["unfrozen"] == [3, 2]
    layer = {i + 1: prefix for i, prefix in enumerate(ranks[0]["block_prefixes"])}

    def moved(name_prefix: str) -> bool:
        start, end = ranks[0]["start"], ranks[0]["end"]
        return any(not torch.equal(start[n], end[n]) for n in end if n.startswith(name_prefix))

    assert moved(layer[3]) and moved(layer[2]) and not moved(layer[1])
    # Each rank trained on different batches: without averaging the late layers' gradients the two
    # copies of layers 2 and 3 would differ; every parameter must be identical on both ranks.
    differ = [n for n in ranks[0]["end"] if not torch.equal(ranks[0]["end"][n], ranks[1]["end"][n])]
    assert not differ, differ[:5]
