"""Datasets (pairs, competitions, augmented views, masked-token pretraining) and the multi-task collate."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from pianoeval.core.errors import InputError
from pianoeval.data.datasets import (
    IGNORE_INDEX,
    AugmentedEmbeddingDataset,
    CompetitionDataset,
    MIDIPretrainingDataset,
    PairedPerformanceDataset,
    multi_task_collate_fn,
)


def _item(sid: str, group: int, labels: list[float], length: int = 4) -> dict:
    return {
        "segment_id": sid,
        "group": torch.tensor(group),
        "labels": torch.tensor(labels),
        "input_ids": torch.arange(1, length + 1),
    }


def _pair_items() -> list[dict]:
    return [
        _item("a1", 0, [0.2, 0.5, 0.3], 3),
        _item("a2", 0, [0.4, 0.52, 0.3], 5),
        _item("a3", 0, [0.9, 0.1, 0.6], 2),
        _item("b1", 1, [0.5, 0.5, 0.5]),
        _item("b2", 1, [0.51, 0.5, 0.5]),  # every dim ambiguous against b1: no pair
        _item("c1", 2, [0.1, 0.1, 0.1]),  # alone in its group
    ]


def test_paired_dataset_pairs_signs_and_masks() -> None:
    ds = PairedPerformanceDataset(_pair_items(), threshold=0.05, seed=0)
    assert len(ds) == 3  # (a1,a2) (a1,a3) (a2,a3) only
    seen = set()
    for k in range(len(ds)):
        s = ds[k]
        a, b = s["a"], s["b"]
        assert int(a["group"]) == int(b["group"]) == 0
        diff = a["labels"] - b["labels"]
        assert torch.equal(s["target_sign"], torch.sign(diff))
        assert torch.equal(s["pair_mask"], (diff.abs() >= 0.05) & (diff != 0))
        seen.add(frozenset((a["segment_id"], b["segment_id"])))
    assert seen == {frozenset(p) for p in (("a1", "a2"), ("a1", "a3"), ("a2", "a3"))}
    by_ids = {frozenset((ds[k]["a"]["segment_id"], ds[k]["b"]["segment_id"])): ds[k] for k in range(3)}
    pair_a1_a2 = by_ids[frozenset(("a1", "a2"))]
    # dim 1 differs by 0.02 and dim 2 not at all: both masked out.
    assert pair_a1_a2["pair_mask"].tolist() == [True, False, False]


def test_paired_dataset_pairs_per_epoch_resamples() -> None:
    items = [_item(f"s{k}", k % 3, [k / 30, 1 - k / 30]) for k in range(30)]
    ds = PairedPerformanceDataset(items, seed=1, pairs_per_epoch=50)
    assert len(ds) == 50
    first = [(ds[k]["a"]["segment_id"], ds[k]["b"]["segment_id"]) for k in range(50)]
    assert first == [(ds[k]["a"]["segment_id"], ds[k]["b"]["segment_id"]) for k in range(50)]
    ds.set_epoch(1)
    assert first != [(ds[k]["a"]["segment_id"], ds[k]["b"]["segment_id"]) for k in range(50)]
    # Random orientation: both "a above b" and "a below b" occur.
    signs = {int(ds[k]["target_sign"][0]) for k in range(50)}
    assert signs == {-1, 1}


def test_paired_dataset_requires_labels() -> None:
    items = _pair_items()
    del items[2]["labels"]
    with pytest.raises(InputError, match="a3 has no labels"):
        PairedPerformanceDataset(items)


def test_paired_batches_collate_recursively() -> None:
    ds = PairedPerformanceDataset(_pair_items(), threshold=0.05, seed=0)
    batch = multi_task_collate_fn([ds[k] for k in range(len(ds))])
    assert batch["target_sign"].shape == (3, 3) and batch["pair_mask"].dtype == torch.bool
    assert batch["a"]["labels"].shape == (3, 3)
    assert batch["a"]["input_ids"].shape[0] == 3
    lengths = batch["a"]["attention_mask"].sum(dim=1)
    assert lengths.tolist() == [len(ds[k]["a"]["input_ids"]) for k in range(3)]


def test_competition_dataset() -> None:
    items = [
        {"segment_id": "x1", "competition": "Chopin2015", "round": "final", "placement": 2},
        {"segment_id": "x2", "competition": "Chopin2015", "round": "final", "placement": 1},
        {"segment_id": "x3", "competition": "Chopin2015", "round": "final", "placement": 3},
        {"segment_id": "y1", "competition": "Chopin2015", "round": "semi", "placement": 1},
        {"segment_id": "y2", "competition": "Chopin2015", "round": "semi", "placement": 1},
    ]
    ds = CompetitionDataset(items)
    # final round: x2 (1st) > x1 (2nd) > x3 (3rd); semi round: a shared placement, no pair.
    assert ds.ordered_pairs() == [(0, 2), (1, 0), (1, 2)]
    assert ds[0]["placement"].item() == 2
    assert ds[0]["competition_id"].item() == ds[2]["competition_id"].item() != ds[3]["competition_id"].item()
    batch = multi_task_collate_fn([ds[k] for k in range(len(ds))])
    assert batch["placement"].tolist() == [2, 1, 3, 1, 1]
    assert batch["competition"] == ["Chopin2015"] * 5
    with pytest.raises(InputError, match="placement"):
        CompetitionDataset([{"segment_id": "z", "competition": "c", "placement": 0}])


def test_augmented_embedding_dataset() -> None:
    clean = [
        {"segment_id": "s1", "audio_emb": torch.zeros(3, 2)},
        {"segment_id": "s2", "audio_emb": torch.ones(4, 2)},
    ]
    aug = [
        {"segment_id": "s2", "audio_emb": torch.full((4, 2), 2.0)},
        {"segment_id": "s1", "audio_emb": torch.full((3, 2), 3.0)},
        {"segment_id": "s1", "audio_emb": torch.full((3, 2), 4.0)},
        {"segment_id": "other", "audio_emb": torch.zeros(1, 2)},
    ]
    ds = AugmentedEmbeddingDataset(clean, aug)
    assert len(ds) == 3
    for k in range(len(ds)):
        assert ds[k]["clean"]["segment_id"] == ds[k]["augmented"]["segment_id"]
    batch = multi_task_collate_fn([ds[k] for k in range(3)])
    assert batch["augmented"]["audio_emb"].shape == (3, 4, 2)
    with pytest.raises(InputError, match="s3"):
        AugmentedEmbeddingDataset([*clean, {"segment_id": "s3"}], aug)


VOCAB, PAD, MASK, BOS = 500, 0, 1, 2


def _pretraining(n: int = 40, length: int = 1000, **kw) -> MIDIPretrainingDataset:
    gen = torch.Generator().manual_seed(0)
    seqs = []
    for _ in range(n):
        body = torch.randint(3, VOCAB, (length - 1,), generator=gen).tolist()
        seqs.append([BOS, *body])
    args = {"vocab_size": VOCAB, "mask_token_id": MASK, "pad_token_id": PAD, "special_ids": [BOS], "seed": 3}
    args.update(kw)
    return MIDIPretrainingDataset(seqs, **args)


def test_pretraining_masking_proportions() -> None:
    ds = _pretraining(max_len=1000)
    selected = masked = randomised = unchanged = 0
    for k in range(len(ds)):
        s = ds[k]
        orig = ds.sequences[k]
        sel = s["labels"] != IGNORE_INDEX
        assert torch.equal(s["labels"][sel], orig[sel])  # labels hold the original ids
        assert s["labels"][0] == IGNORE_INDEX and s["input_ids"][0] == BOS  # special never touched
        assert int(sel.sum()) == round(0.15 * 999)  # 15 % of the non-special tokens
        assert not torch.isin(s["input_ids"][~sel], torch.tensor([MASK])).any()
        changed = s["input_ids"][sel]
        selected += int(sel.sum())
        masked += int((changed == MASK).sum())
        randomised += int(((changed != MASK) & (changed != orig[sel])).sum())
        unchanged += int((changed == orig[sel]).sum())
        assert not torch.isin(changed[changed != MASK], torch.tensor([PAD, BOS])).any()
    assert selected == 40 * 150
    # 6000 selections: the binomial std of a 10 % share is ~0.4 %, so ±2 % is a wide margin.
    assert masked / selected == pytest.approx(0.8, abs=0.02)
    assert randomised / selected == pytest.approx(0.1, abs=0.02)
    assert unchanged / selected == pytest.approx(0.1, abs=0.02)


def test_pretraining_reproducible_and_remasked() -> None:
    a, b = _pretraining(n=2, length=50), _pretraining(n=2, length=50)
    first = a[0]["input_ids"]
    assert torch.equal(first, b[0]["input_ids"])  # same seed, same first draw
    assert not torch.equal(first, a[0]["input_ids"])  # the next access draws a new mask


def test_pretraining_crops_and_collates() -> None:
    ds = _pretraining(n=3, length=100, max_len=64)
    s = ds[0]
    assert s["input_ids"].shape == s["labels"].shape == s["attention_mask"].shape == (64,)
    seqs = [[BOS, 5, 6], [BOS, 7, 8, 9, 10]]
    short = MIDIPretrainingDataset(seqs, VOCAB, MASK, PAD, special_ids=[BOS], seed=0)
    batch = multi_task_collate_fn([short[0], short[1]], pad_token_id=PAD)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][0, 3:].tolist() == [PAD, PAD]
    assert batch["labels"][0, 3:].tolist() == [IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    with pytest.raises(InputError, match="outside"):
        MIDIPretrainingDataset([[1, VOCAB]], VOCAB, MASK, PAD)


def test_collate_mixed_lengths_and_optional_labels() -> None:
    samples = [
        {
            "curves": torch.ones(3, 2),
            "audio_emb": torch.ones(2, 4),
            "group": torch.tensor(5),
            "segment_id": "p",
        },
        {
            "curves": torch.full((5, 2), 2.0),
            "audio_emb": torch.ones(6, 4),
            "group": torch.tensor(7),
            "segment_id": "q",
            "labels": torch.full((19,), 0.5),
        },
    ]
    batch = multi_task_collate_fn(samples)
    assert batch["curves"].shape == (2, 5, 2)
    assert batch["curve_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (batch["curves"][0, 3:] == 0).all() and (batch["curves"][1] == 2).all()
    assert batch["audio_emb"].shape == (2, 6, 4) and batch["audio_mask"].sum(dim=1).tolist() == [2, 6]
    assert batch["group"].tolist() == [5, 7] and batch["group"].dtype == torch.long
    assert batch["segment_id"] == ["p", "q"]
    assert batch["labels"].shape == (2, 19)
    assert (batch["labels"][0] == 0).all() and (batch["labels"][1] == 0.5).all()
    assert batch["label_mask"].tolist() == [False, True]


def test_collate_token_padding_value() -> None:
    samples = [{"input_ids": torch.tensor([4, 5])}, {"input_ids": torch.tensor([6, 7, 8])}]
    batch = multi_task_collate_fn(samples, pad_token_id=9)
    assert batch["input_ids"].tolist() == [[4, 5, 9], [6, 7, 8]]
    assert batch["attention_mask"].tolist() == [[True, True, False], [True, True, True]]


def test_collate_graphs() -> None:
    g1 = Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    g2 = Data(x=torch.zeros(2, 2), edge_index=torch.tensor([[0], [1]]))
    batch = multi_task_collate_fn([{"graph": g1, "index": 0}, {"graph": g2, "index": 1}])
    graph = batch["graph"]
    assert graph.batch.tolist() == [0, 0, 0, 1, 1]
    assert graph.edge_index.tolist() == [[0, 1, 3], [1, 2, 4]]  # second graph offset by 3 nodes
    assert graph.num_graphs == 2
    assert batch["index"].tolist() == [0, 1]
