"""A2 as planned: P x K batches, the contrastive term over a whole optimisation step (micro-batches and
ranks), and unlabelled rendered clips in the self-supervised stage."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pianoeval.training.data import GroupBatchSampler, PKBatchSampler

# PercePiano-like group sizes: median 13 performances per segment group.
GROUP_SIZES = [13, 13, 14, 12, 13, 9, 13, 15, 4, 13]


def _groups(sizes: list[int]) -> list[int]:
    return [g for g, n in enumerate(sizes) for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed0", "seed1", "seed2"])
def test_pk_batches_hold_p_groups_of_k_and_cover_the_epoch(seed: int) -> None:
    groups = _groups(GROUP_SIZES)
    sampler = PKBatchSampler(groups, batch_size=8, per_group=4, seed=seed)
    for _ in range(2):  # two epochs, different orders
        batches = list(sampler)
        assert len(batches) == len(sampler)
        # Every item exactly once per epoch.
        assert sorted(i for b in batches for i in b) == list(range(len(groups)))
        per_batch = [Counter(groups[i] for i in b) for b in batches]
        assert all(len(c) <= 2 and max(c.values()) <= 4 for c in per_batch)
        # Most batches hold 2 groups (P) of 4 (K); only the tail, when one group is left, has one.
        two_groups = sum(len(c) == 2 for c in per_batch)
        assert two_groups >= len(batches) - 2, per_batch


def test_old_group_sampler_had_almost_no_negatives() -> None:
    # What the P x K sampler replaces for A1-A3: with groups of 13 and batches of 8, most batches of
    # the contiguous sampler held one group only.
    groups = _groups(GROUP_SIZES)
    old = [len({groups[i] for i in b}) for b in GroupBatchSampler(groups, 8, seed=0)]
    new = [len({groups[i] for i in b}) for b in PKBatchSampler(groups, 8, per_group=4, seed=0)]
    assert np.mean([n == 1 for n in old]) > 0.4
    assert np.mean([n >= 2 for n in new]) > 0.85


@pytest.mark.parametrize(("world", "seed"), [(2, 0), (3, 5)], ids=["2-ranks", "3-ranks"])
def test_pk_batches_shard_across_ranks(world: int, seed: int) -> None:
    groups = _groups(GROUP_SIZES)
    full = list(PKBatchSampler(groups, 8, per_group=4, seed=seed))
    shards = []
    for rank in range(world):
        sampler = PKBatchSampler(groups, 8, per_group=4, seed=seed, shard=True)
        sampler._replicas = lambda rank=rank: (rank, world)  # as under an initialised process group
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    assert len({len(s) for s in shards}) == 1
    seen = [b for s in shards for b in s]
    assert all(b in seen for b in full) and len(seen) - len(full) < world


def test_extra_groups_only_in_the_first_epochs() -> None:
    groups = _groups(GROUP_SIZES)
    n = len(groups)
    extra = [100 + i // 5 for i in range(200)]  # 40 unlabelled groups of 5 clips
    sampler = PKBatchSampler(groups, 8, per_group=4, seed=3, extra_groups=extra, extra_epochs=2, extra_fraction=0.5)
    expected = len(sampler)
    assert expected == len(PKBatchSampler(groups, 8, per_group=4))
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == expected
        items = [i for b in batches for i in b]
        share = np.mean([i >= n for i in items])
        if epoch < 2:
            # About half of the self-supervised epoch's items are unlabelled clips, whole groups of them.
            assert 0.35 < share < 0.65, share
            assert all(i < n + len(extra) for i in items)
        else:
            assert share == 0.0
            assert sorted(items) == list(range(n))


# --- the contrastive term over the whole optimisation step ------------------------------------------


def test_without_extra_keys_it_is_the_supervised_contrastive_loss() -> None:
    import torch

    from pianoeval.audio.step_contrastive import contrastive_with_keys
    from pianoeval.networks.losses import supervised_contrastive_loss

    gen = torch.Generator().manual_seed(0)
    z, groups = torch.randn(8, 5, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    torch.testing.assert_close(contrastive_with_keys(z, groups), supervised_contrastive_loss(z, groups))
    # Keys are extra columns: the anchors' loss equals that of the concatenation, averaged over the anchors.
    keys, key_groups = torch.randn(6, 5, generator=gen), torch.tensor([3, 4, 5, 5, 0, 9])
    full = torch.cat([z, keys])
    zn = torch.nn.functional.normalize(full, dim=-1)
    all_groups = torch.cat([groups, key_groups])
    logits = zn[:8] @ zn.T / 0.1
    logits[torch.arange(8), torch.arange(8)] = float("-inf")
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (groups[:, None] == all_groups[None, :]) & ~torch.eye(8, 14, dtype=torch.bool)
    expected = torch.stack([-log_prob[i][pos[i]].mean() for i in range(8) if pos[i].any()]).mean()
    torch.testing.assert_close(contrastive_with_keys(z, groups, keys, key_groups), expected)
    # Anchors 6 and 7 (groups 3, 4) have positives only among the keys: more anchors count.
    assert contrastive_with_keys(z, groups, keys, key_groups) != contrastive_with_keys(z, groups)


def test_memory_keeps_the_rest_of_the_step() -> None:
    import torch

    from pianoeval.audio.step_contrastive import StepMemory

    memory = StepMemory()
    batches = [(torch.randn(4, 3), torch.tensor([i, i, 10 + i, 10 + i])) for i in range(4)]
    seen = []
    for z, g in batches:
        keys, key_groups = memory.keys(z, g, micro_batches_per_step=3)
        seen.append(key_groups.tolist())
        assert not keys.requires_grad
    # With 3 micro-batches per step every micro-batch sees the 2 before it (after the first ones).
    assert seen == [[], [0, 0, 10, 10], [0, 0, 10, 10, 1, 1, 11, 11], [1, 1, 11, 11, 2, 2, 12, 12]]
    memory.reset()
    assert memory.keys(*batches[0], micro_batches_per_step=3)[0].shape == (0, 3)


def test_under_a_trainer_each_micro_batch_sees_the_others_of_its_step() -> None:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from pianoeval.audio.models import AudioScoreNetwork
    from pianoeval.core.constants import N_DIMS
    from pianoeval.data.datasets import multi_task_collate_fn
    from pianoeval.training.audio_modules import MuQLoRAModel

    gen = torch.Generator().manual_seed(0)
    items = [
        {"audio_emb": torch.randn(6, 8, generator=gen), "labels": torch.rand(N_DIMS, generator=gen), "group": g}
        for g in [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    ]
    items = [dict(it, group=torch.tensor(it["group"])) for it in items]
    module = MuQLoRAModel(AudioScoreNetwork(in_dim=8, hidden=16, heads=2), lora_rank=0)

    class Keys(L.Callback):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seen.append(pl_module.step_memory.last_n_keys)

    keys = Keys()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        accumulate_grad_batches=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[keys],
    )
    trainer.fit(module, DataLoader(items, batch_size=2, collate_fn=multi_task_collate_fn))
    # Micro-batches of 2 (one group each: no negative inside), 3 per step: from the third on each
    # sees the 2 micro-batches before it (4 keys), the first two what the epoch has given so far.
    assert keys.seen == [0, 2, 4, 4, 4, 4]


RANKS_SCRIPT = """
import sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pianoeval.audio.step_contrastive import StepMemory


def worker(rank, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    memory, out = StepMemory(), []
    for step in range(2):
        # Rank r's micro-batch `step`: 3 + r items whose values say where they come from.
        z = torch.full((3 + rank, 4), 10.0 * rank + step)
        groups = torch.full((3 + rank,), 100 * rank + step)
        keys, key_groups = memory.keys(z, groups, micro_batches_per_step=2)
        out.append((keys, key_groups))
    torch.save(out, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
"""


def test_keys_come_from_the_other_ranks_too(tmp_path) -> None:
    import os
    import subprocess
    import sys

    import torch

    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank, other in ((0, 1), (1, 0)):
        (keys0, groups0), (keys1, groups1) = torch.load(tmp_path / f"rank{rank}.pt")
        # Micro-batch 0: the other rank's micro-batch 0 (its size: 3 + other).
        assert groups0.tolist() == [100 * other] * (3 + other)
        assert torch.all(keys0 == 10.0 * other)
        # Micro-batch 1: the other rank's micro-batch 1, then micro-batch 0 of both ranks from memory.
        expected = [100 * other + 1] * (3 + other) + [100 * rank] * (3 + rank) + [100 * other] * (3 + other)
        assert groups1.tolist() == expected
        values = [10.0 * other + 1] * (3 + other) + [10.0 * rank] * (3 + rank) + [10.0 * other] * (3 + other)
        assert keys1[:, 0].tolist() == values


# --- unlabelled music for A2's self-supervised stage ------------------------------------------------


def test_beat_windows_follow_the_median_performance() -> None:
    from pianoeval.training.audio_data import beat_windows

    # Two performances of 41 beats, one at 0.5 s per beat and one at 0.6 s: median 0.55 s per beat.
    beats = np.stack([np.arange(41) * 0.5, np.arange(41) * 0.6])
    windows = beat_windows(beats, clip_seconds=5.5)
    assert windows == [(0, 10), (10, 20), (20, 30), (30, 40)]
    # A tail shorter than half a clip is dropped.
    assert beat_windows(beats[:, :24], clip_seconds=5.5) == [(0, 10), (10, 20)]


def test_asap_clips_are_beat_aligned_and_leave_out_the_percepiano_piece(shared_data) -> None:
    from pianoeval.data.asap import load_asap
    from pianoeval.training.audio_data import is_excluded, unlabelled_clips

    df = load_asap(shared_data / "asap_full")
    df["audio_path"] = df["segment_id"] + ".wav"  # paths only: nothing is read here
    overlap = "Schubert/Impromptu_op142/3"
    clips, stats = unlabelled_clips(df, 10.0, pieces=[overlap])
    assert stats["n_unlabelled_rendered"] == 1058 and stats["excluded_pieces"] == [overlap]
    assert not any(c.group.startswith(overlap) for c in clips)
    # One group = the same beats of several performances (different players, different times).
    by_group: dict[str, list] = {}
    for c in clips:
        by_group.setdefault(c.group, []).append(c)
    shared = [g for g in by_group.values() if len(g) >= 3]
    assert len(shared) > 1000
    assert all(len({c.audio_path for c in g}) == len(g) for g in shared)
    assert 8.0 < float(np.median([c.end_s - c.start_s for c in clips])) < 12.0
    # A fold whose val holds PercePiano's Schubert D935 no. 3 excludes the ASAP piece even without the default.
    assert is_excluded(overlap, overlap, {"Schubert_D935_no.3"}, set())
    assert not is_excluded("Chopin/Ballade_1", "Chopin/Ballade_1", {"Schubert_D935_no.3"}, set())


def test_clip_items_read_their_window(tmp_path) -> None:
    import soundfile as sf
    import torch

    from pianoeval.training.audio_data import Clip, UnlabelledClips, WaveformSpec

    sr = 24_000
    wave = np.arange(5 * sr, dtype=np.float32) / (5 * sr)  # a ramp: each sample says where it is
    sf.write(tmp_path / "perf.wav", wave, sr, subtype="FLOAT")
    clips = [Clip(str(tmp_path / "perf.wav"), 1.0, 2.5, "p#10@4", "asap::p/x@4")]
    spec = WaveformSpec({}, sr, clip_seconds=2.0, augment=True, augment_prob=1.0, seed=0)
    item = UnlabelledClips(clips, spec, group_offset=50)[0]
    assert int(item["group"]) == 50 and float(item["unlabelled"]) == 1.0 and "labels" not in item
    # 2 s windows from 1.0 s; the clip ends at 2.5 s, so the last 0.5 s is padding (masked).
    assert int(item["wave_mask"].sum()) == int(1.5 * sr) and item["wave"].shape == (2 * sr,)
    torch.testing.assert_close(item["wave"][: int(1.5 * sr)], torch.from_numpy(wave[sr : int(2.5 * sr)]))
    assert item["wave_aug"].shape == item["wave"].shape and not torch.equal(item["wave_aug"], item["wave"])
