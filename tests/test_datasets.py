"""Datasets (pairs, competitions, augmented views, masked-token pretraining) and the multi-task collate."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from pianoeval.core.errors import InputError
from pianoeval.data.datasets import (
    IGNORE_INDEX,
    MIDIPretrainingDataset,
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
