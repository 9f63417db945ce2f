"""Torch datasets over featurised items, BERT-style masking, and the one collate function for all batches.

An item is a dict of tensors for one performance, e.g. `input_ids [L]`, `curves [T, C]`,
`audio_emb [F, D]`, `graph` (`symbolic.graph.NoteGraph`), `stats [F]`, plus `labels [19]` (optional),
`group` (segment-group index), `index` and `segment_id` (str). Batches follow docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pianoeval.core.constants import DEFAULT_SEED
from pianoeval.core.errors import InputError

# Variable-length sequence fields and the [B, T] mask each gets (True = real step).
SEQUENCE_MASKS: dict[str, str] = {
    "input_ids": "attention_mask",
    "curves": "curve_mask",
    "audio_emb": "audio_mask",
}
# Label value that cross-entropy ignores: pads and unselected positions of masked-token labels.
IGNORE_INDEX: int = -100


def bert_mask(
    ids: torch.Tensor,
    generator: torch.Generator,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Iterable[int],
    mask_prob: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ids [L]: (masked input_ids [L], labels [L] with IGNORE_INDEX where not selected).

    round(mask_prob * n) of the n non-special positions (at least one if n > 0) are selected; of
    those 80 % become the mask token, 10 % a random non-special token, 10 % stay unchanged.
    """
    special = torch.tensor(sorted(set(special_ids) | {mask_token_id}), dtype=torch.long)
    eligible = torch.nonzero(~torch.isin(ids, special)).reshape(-1)
    inputs, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)
    if len(eligible) == 0:
        return inputs, labels
    n_select = max(1, round(mask_prob * len(eligible)))
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:n_select]]
    labels[chosen] = ids[chosen]
    action = torch.rand(n_select, generator=generator)
    to_mask, to_random = chosen[action < 0.8], chosen[(action >= 0.8) & (action < 0.9)]
    inputs[to_mask] = mask_token_id
    if len(to_random):
        allowed = torch.nonzero(~torch.isin(torch.arange(vocab_size), special)).reshape(-1)
        pick = torch.randint(len(allowed), (len(to_random),), generator=generator)
        inputs[to_random] = allowed[pick]
    return inputs, labels


class MIDIPretrainingDataset(Dataset):
    """Masked-token samples of token sequences: `input_ids [L]`, `labels [L]`, `attention_mask [L]`.

    Sequences longer than `max_len` are cut to a random window. Masking is redrawn on every access:
    the generator is seeded from (seed, epoch, index, access count), so runs are reproducible and
    every epoch (with `num_workers=0`, or after `set_epoch`) sees new masks.
    """

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        vocab_size: int,
        mask_token_id: int,
        pad_token_id: int,
        special_ids: Iterable[int] = (),
        mask_prob: float = 0.15,
        max_len: int = 1024,
        seed: int = DEFAULT_SEED,
    ) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.sequences = [torch.as_tensor(list(s), dtype=torch.long) for s in sequences]
        where = "MIDIPretrainingDataset"
        for k, s in enumerate(self.sequences):
            if len(s) == 0:
                raise InputError(f"token sequence {k} is empty", where)
            if int(s.min()) < 0 or int(s.max()) >= vocab_size:
                raise InputError(f"token sequence {k} has ids outside [0, {vocab_size})", where)
        self.vocab_size = int(vocab_size)
        self.mask_token_id = int(mask_token_id)
        self.pad_token_id = int(pad_token_id)
        self.special_ids = sorted({int(i) for i in special_ids} | {self.pad_token_id, self.mask_token_id})
        self.mask_prob = float(mask_prob)
        self.max_len = int(max_len)
        self.seed = int(seed)
        self.epoch = 0
        self._draws = [0] * len(self.sequences)

    def set_epoch(self, epoch: int) -> None:
        """Mix `epoch` into the masking seed (for multi-worker loaders, whose copies restart each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        seed = np.random.SeedSequence([self.seed, self.epoch, k, self._draws[k]]).generate_state(1)[0]
        self._draws[k] += 1
        gen = torch.Generator().manual_seed(int(seed))
        ids = self.sequences[k]
        if len(ids) > self.max_len:
            start = int(torch.randint(len(ids) - self.max_len + 1, (1,), generator=gen))
            ids = ids[start : start + self.max_len]
        inputs, labels = bert_mask(
            ids,
            gen,
            self.vocab_size,
            self.mask_token_id,
            self.special_ids,
            self.mask_prob,
        )
        return {
            "input_ids": inputs,
            "labels": labels,
            "attention_mask": torch.ones(len(ids), dtype=torch.bool),
        }


def _is_graph(value: Any) -> bool:
    """True for a graph with its own `collate` (symbolic.graph.NoteGraph) or a torch_geometric
    Data/HeteroData object (checked without importing torch_geometric)."""
    return hasattr(type(value), "collate") or type(value).__module__.startswith("torch_geometric")


def _collate_graphs(graphs: list[Any]) -> Any:
    """Graphs → one batched graph: a type's own `collate` (symbolic.graph.NoteGraph, without
    torch_geometric), else torch_geometric's `Batch.from_data_list`."""
    if hasattr(type(graphs[0]), "collate"):
        return type(graphs[0]).collate(graphs)
    from torch_geometric.data import Batch

    return Batch.from_data_list(graphs)


def _pad(tensors: list[torch.Tensor], value: float | int | bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad tensors [T_i, ...] along dim 0 → ([B, T_max, ...], mask [B, T_max] bool)."""
    longest = max(len(t) for t in tensors)
    ref = tensors[0]
    out = torch.full((len(tensors), longest, *ref.shape[1:]), value, dtype=ref.dtype)
    mask = torch.zeros(len(tensors), longest, dtype=torch.bool)
    for b, t in enumerate(tensors):
        out[b, : len(t)] = t
        mask[b, : len(t)] = True
    return out, mask


def _collate_tensors(key: str, values: list[torch.Tensor | None], pad_id: int, out: dict[str, Any]) -> None:
    """Collate one tensor field into `out` (see multi_task_collate_fn for the rules)."""
    present = [v for v in values if v is not None]
    ref = present[0]
    is_int_labels = key == "labels" and not ref.is_floating_point() and ref.dtype != torch.bool
    varying = len({tuple(v.shape) for v in present}) > 1
    sequence = key in SEQUENCE_MASKS or is_int_labels or ref.dim() >= 2 or varying
    if sequence and ref.dim() >= 1:
        # A missing sequence is an empty one: its mask row is all False.
        filled = [v if v is not None else ref.new_zeros((0, *ref.shape[1:])) for v in values]
        if is_int_labels:
            pad: float | int | bool = IGNORE_INDEX
        elif ref.dtype == torch.bool:
            pad = False
        elif key == "input_ids":
            pad = pad_id
        else:
            pad = 0
        out[key], mask = _pad(filled, pad)
        mask_key = SEQUENCE_MASKS.get(key, f"{key}_mask")
        if not is_int_labels and ref.dtype != torch.bool:
            out.setdefault(mask_key, mask)  # a mask the samples carry themselves wins
        return
    # Fixed-size fields: stack, zero-filling absent entries and saying which are real.
    filled = [v if v is not None else torch.zeros_like(ref) for v in values]
    out[key] = torch.stack(filled)
    if key == "labels":
        out["label_mask"] = torch.tensor([v is not None for v in values])
    elif len(present) < len(values):
        out[f"{key}_mask"] = torch.tensor([v is not None for v in values])


def multi_task_collate_fn(samples: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, Any]:
    """Collate item dicts into one batch dict (for any model family; see docs/architecture.md).

    - `input_ids`, `curves [T, C]`, `audio_emb [F, D]` (and any field of rank >= 2 or varying length)
      are padded along dim 0 with a [B, T] bool mask: `attention_mask`, `curve_mask`, `audio_mask`,
      else `<key>_mask`. `input_ids` pads with `pad_token_id`; integer `labels` (masked-token
      targets) pad with -100; bool fields pad with False; floats with 0. A mask field the samples
      carry (e.g. `attention_mask`) is padded with False and takes precedence.
    - Fixed-size tensors and scalars (`labels [19]`, `group`, `index`, numbers) are stacked. A
      fixed-size field missing in some samples is zero-filled and `<key>_mask [B]` says where it is
      real; float `labels` always get `label_mask [B]`.
    - `graph` (symbolic.graph.NoteGraph, or torch_geometric Data) → one batched graph; strings and
      other objects → lists (None where missing); nested dicts (the `a`/`b` of pairs) are collated recursively.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys: list[str] = []
    for s in samples:
        keys.extend(k for k in s if k not in keys)
    out: dict[str, Any] = {}
    # Sample-provided masks first, so that they take precedence over masks derived from lengths.
    keys.sort(key=lambda k: k not in SEQUENCE_MASKS.values())
    for key in keys:
        values = [s.get(key) for s in samples]
        present = [v for v in values if v is not None]
        ref = present[0]
        if isinstance(ref, dict):
            if len(present) < len(values):
                raise ValueError(f"nested field {key!r} is missing in some samples")
            out[key] = multi_task_collate_fn(values, pad_token_id=pad_token_id)
        elif _is_graph(ref):
            if len(present) < len(values):
                raise ValueError(f"graph field {key!r} is missing in some samples")
            out[key] = _collate_graphs(values)
        elif isinstance(ref, torch.Tensor | np.ndarray | int | float | bool | np.number | np.bool_):
            tensors = [None if v is None else torch.as_tensor(v) for v in values]
            _collate_tensors(key, tensors, pad_token_id, out)
        else:
            out[key] = values
    return out
