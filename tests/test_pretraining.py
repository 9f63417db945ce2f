"""Tests of the symbolic pretraining objectives: masked tokens, link prediction, contrastive curves."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from pianoeval.symbolic.networks import MultiScaleCurveEncoder, NoteGAT, REMITransformer
from pianoeval.symbolic.pretraining import (
    IGNORE_INDEX,
    ContrastiveCurveObjective,
    GumbelVectorQuantizer,
    LinkPredictionObjective,
    MaskedTokenObjective,
    binary_auc,
    compute_span_mask,
)

VOCAB, PAD, MASK_ID = 30, 0, 1


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def mlm_batch() -> dict[str, Any]:
    """Two sequences (one padded), 3 + 2 masked positions whose labels are the original ids."""
    g = torch.Generator().manual_seed(1)
    original = torch.randint(2, VOCAB, (2, 12), generator=g)
    attention = torch.ones(2, 12, dtype=torch.bool)
    attention[1, 9:] = False
    original[1, 9:] = PAD
    selected = torch.zeros(2, 12, dtype=torch.bool)
    selected[0, [1, 5, 8]] = True
    selected[1, [2, 6]] = True
    inputs = original.masked_fill(selected, MASK_ID)
    labels = original.masked_fill(~selected, IGNORE_INDEX)
    return {"input_ids": inputs, "labels": labels, "attention_mask": attention}


def make_s1() -> REMITransformer:
    return REMITransformer(VOCAB, PAD, hidden=32, layers=2, heads=4, ff=64, dropout=0.0, max_len=32)


def overfit(objective: torch.nn.Module, batch: dict[str, Any], steps: int, lr: float) -> list[dict[str, float]]:
    """Run Adam on one batch; return the loss and logs of each step."""
    opt = torch.optim.Adam(objective.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss, logs = objective(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}})
    return history


# --- masked tokens (S1) ---


def test_mlm_loss_decreases_when_overfitting() -> None:
    objective = MaskedTokenObjective(make_s1(), vocab_size=VOCAB)
    history = overfit(objective, mlm_batch(), steps=30, lr=3e-3)
    assert history[0]["loss"] > 2.0  # about log(30) at the start
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["mlm_accuracy"] == 1.0
    assert history[-1]["n_masked"] == 5


def test_mlm_only_masked_positions_contribute() -> None:
    objective = MaskedTokenObjective(make_s1(), vocab_size=VOCAB).eval()
    batch = mlm_batch()
    loss, _ = objective(batch)
    # Hand-computed: cross-entropy of the head at exactly the 5 labelled positions.
    h, _ = objective.encoder.encode_sequence(batch)
    selected = batch["labels"] != IGNORE_INDEX
    logits = objective.decoder(objective.transform(h[selected]))
    assert torch.allclose(loss, F.cross_entropy(logits, batch["labels"][selected]), atol=1e-6)
    # Changing the label of an unselected position (to another ignored value) or a padded label
    # does not change the loss; changing a selected label does.
    other = dict(batch, labels=batch["labels"].clone())
    other["labels"][1, 10] = 3  # padding: attention_mask is False there
    assert torch.allclose(objective(other)[0], loss)
    other["labels"][0, 1] = (batch["labels"][0, 1] + 1) % VOCAB
    assert not torch.allclose(objective(other)[0], loss)


def test_mlm_ties_decoder_to_token_embedding() -> None:
    encoder = make_s1()
    tied = MaskedTokenObjective(encoder, vocab_size=VOCAB)
    assert tied.decoder.weight is encoder.token_embedding.weight
    untied = MaskedTokenObjective(make_s1(), vocab_size=VOCAB, tie_weights=False)
    assert untied.decoder.weight is not untied.encoder.token_embedding.weight


def test_mlm_without_masked_positions_is_zero_and_backpropagates() -> None:
    objective = MaskedTokenObjective(make_s1(), vocab_size=VOCAB)
    batch = mlm_batch()
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    loss, logs = objective(batch)
    assert float(loss) == 0.0 and float(logs["n_masked"]) == 0
    loss.backward()


# --- link prediction (S2) ---


def chain_graph(n: int, edge_types: int = 3) -> Data:
    """Notes in a chain plus skip-2 links, both directions, with one-hot edge types."""
    pairs = [(i, i + 1) for i in range(n - 1)] + [(i, i + 2) for i in range(n - 2)]
    src = torch.tensor([a for a, b in pairs] + [b for a, b in pairs])
    dst = torch.tensor([b for a, b in pairs] + [a for a, b in pairs])
    types = torch.tensor([0] * (n - 1) + [1] * (n - 2)).repeat(2)
    pos = torch.arange(n, dtype=torch.float32)
    # Node features carry position (as sin/cos) so linked notes are predictable from features.
    x = torch.stack([pos / n, torch.sin(pos), torch.cos(pos), torch.sin(pos / 2), torch.cos(pos / 2)], dim=1)
    return Data(x=x, edge_index=torch.stack([src, dst]), edge_attr=F.one_hot(types, edge_types).float())


def make_link_objective(**kwargs: Any) -> LinkPredictionObjective:
    encoder = NoteGAT(5, 3, hidden=32, layers=2, heads=4, dropout=0.0)
    return LinkPredictionObjective(encoder, **kwargs)


def test_held_out_edges_are_removed_from_message_passing() -> None:
    objective = make_link_objective(holdout_fraction=0.3)
    graph = Batch.from_data_list([chain_graph(10), chain_graph(7)])
    mp_index, mp_attr, pos = objective.split_edges(graph.edge_index, graph.edge_attr, graph.num_nodes)
    n_pairs = (9 + 8) + (6 + 5)
    assert pos.shape[1] == round(0.3 * n_pairs)
    held = {tuple(sorted(p)) for p in pos.T.tolist()}
    mp = {tuple(sorted(p)) for p in mp_index.T.tolist()}
    full = {tuple(sorted(p)) for p in graph.edge_index.T.tolist()}
    assert held and not held & mp  # neither direction of a held-out pair is left
    assert held | mp == full  # nothing else was removed
    assert mp_index.shape[1] == graph.edge_index.shape[1] - 2 * len(held)
    assert mp_attr.shape == (mp_index.shape[1], 3)
    # Edge attributes stay aligned with their edges (type 0 = chain links |a-b| = 1).
    chain = (mp_index[0] - mp_index[1]).abs() == 1
    assert torch.equal(mp_attr[:, 0].bool(), chain)


def test_negatives_stay_within_their_graph_and_are_non_edges() -> None:
    objective = make_link_objective()
    graph = Batch.from_data_list([chain_graph(10), chain_graph(7)])
    _, _, pos = objective.split_edges(graph.edge_index, graph.edge_attr, graph.num_nodes)
    neg = objective._negatives(graph.edge_index, graph.batch, pos)
    assert neg.shape[1] == pos.shape[1]
    assert torch.equal(graph.batch[neg[0]], graph.batch[neg[1]])
    full = {tuple(p) for p in graph.edge_index.T.tolist()}
    assert not {tuple(p) for p in neg.T.tolist()} & full


def test_link_prediction_loss_decreases_when_overfitting() -> None:
    objective = make_link_objective(holdout_fraction=0.3)
    batch = {"graph": Batch.from_data_list([chain_graph(12), chain_graph(9)])}
    history = overfit(objective, batch, steps=60, lr=3e-3)
    first = sum(h["loss"] for h in history[:5]) / 5
    last = sum(h["loss"] for h in history[-5:]) / 5
    assert last < 0.6 * first
    assert sum(h["link_auc"] for h in history[-5:]) / 5 > 0.8


def test_dot_scorer_is_symmetric() -> None:
    objective = make_link_objective(scorer="dot")
    h = torch.randn(6, 32)
    pairs = torch.tensor([[0, 2, 4], [1, 3, 5]])
    assert torch.allclose(objective.score_pairs(h, pairs), objective.score_pairs(h, pairs.flip(0)))
    mlp = make_link_objective()
    assert torch.allclose(mlp.score_pairs(h, pairs), mlp.score_pairs(h, pairs.flip(0)))


@pytest.mark.parametrize(
    ("scores", "targets", "expected"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.9, 0.8, 0.1], [1, 1, 0], 1.0),
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),
    ],
    ids=["mixed", "perfect", "ties"],
)
def test_binary_auc(scores: list[float], targets: list[int], expected: float) -> None:
    assert float(binary_auc(torch.tensor(scores), torch.tensor(targets))) == pytest.approx(expected)


# --- contrastive curves (S3) ---


def curve_batch() -> dict[str, Any]:
    """Two curve sequences; the second has 24 of 64 frames padding."""
    g = torch.Generator().manual_seed(2)
    t = torch.linspace(0, 6.28, 64)
    base = torch.stack([torch.sin(t * k) for k in (1, 2, 3, 5)], dim=1)
    curves = torch.stack([base, base.roll(7, dims=0)]) + 0.1 * torch.randn(2, 64, 4, generator=g)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 40:] = False
    curves[1, 40:] = 0.0
    return {"curves": curves, "curve_mask": mask}


def make_contrastive(**kwargs: Any) -> ContrastiveCurveObjective:
    encoder = MultiScaleCurveEncoder(4, hidden=32, layers=2, heads=4, dropout=0.0, downsample=2)
    return ContrastiveCurveObjective(encoder, codebook_groups=2, codebook_entries=16, **kwargs)


def test_span_mask_respects_padding_and_spans() -> None:
    mask = torch.zeros(3, 40, dtype=torch.bool)
    mask[0, :40] = True
    mask[1, :12] = True
    mask[2, :1] = True
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        spans = compute_span_mask(mask, mask_prob=0.5, span=5, generator=g)
        assert not (spans & ~mask).any()
        assert int(spans[0].sum()) >= 5  # at least one whole span fits
        assert int(spans[1].sum()) >= 2  # always at least one distractor
        assert int(spans[2].sum()) == 1
    # The number of spans follows mask_prob: 0.5 * 40 / 5 = 4 spans → at most 20 steps.
    assert int(compute_span_mask(mask[:1], 0.5, 5, generator=g).sum()) <= 20


def test_quantizer_diversity_and_annealing() -> None:
    quant = GumbelVectorQuantizer(8, groups=2, entries=4, out_dim=8, max_temp=2.0, min_temp=0.5, temp_decay=0.5)
    x = torch.randn(3, 10, 8)
    out = quant(x)
    assert out["q"].shape == (3, 10, 8) and out["codes"].shape == (3, 10, 2)
    assert 0.0 <= float(out["diversity_loss"]) <= 1.0
    # Each q group is exactly one codeword of that group (hard selection).
    book = quant.codevectors.reshape(2, 4, 4)
    q = out["q"].reshape(3, 10, 2, 4)
    for grp in range(2):
        dist = (q[:, :, grp, None, :] - book[grp]).abs().sum(-1)
        assert torch.all(dist.min(dim=-1).values < 1e-6)
    # Uniform soft assignments are the most diverse: loss 0; a single code everywhere: (GV - G) / GV.
    with torch.no_grad():
        quant.weight_proj.weight.zero_()
        assert float(quant(x)["diversity_loss"]) == pytest.approx(0.0, abs=1e-5)
        quant.weight_proj.bias.copy_(torch.tensor([100.0, 0, 0, 0] * 2))
        assert float(quant(x)["diversity_loss"]) == pytest.approx(6 / 8, abs=1e-4)
    quant.set_num_updates(0)
    assert quant.curr_temp == 2.0
    quant.set_num_updates(1)
    assert quant.curr_temp == 1.0
    quant.set_num_updates(10)
    assert quant.curr_temp == 0.5


def test_negatives_come_from_other_masked_steps_of_same_sequence() -> None:
    objective = make_contrastive(num_negatives=50)
    time_mask = torch.zeros(3, 10, dtype=torch.bool)
    time_mask[0, [1, 2, 3, 7]] = True
    time_mask[1, [4]] = True
    time_mask[2, [0, 9]] = True
    idx, valid = objective.sample_negatives(time_mask)
    seq = torch.nonzero(time_mask)[:, 0]
    assert idx.shape == (7, 50)
    own = torch.arange(7).unsqueeze(1)
    assert torch.equal(seq[idx][valid], seq.unsqueeze(1).expand(-1, 50)[valid])
    assert not (idx == own)[valid].any()
    assert valid.all(dim=1).tolist() == [True, True, True, True, False, True, True]
    # With replacement and enough draws, every other masked step of the sequence shows up.
    assert set(idx[0].tolist()) == {1, 2, 3}


def test_contrastive_loss_finite_and_logs() -> None:
    objective = make_contrastive()
    loss, logs = objective(curve_batch())
    assert torch.isfinite(loss)
    assert 0.0 <= float(logs["diversity"]) <= 1.0
    assert float(logs["n_masked"]) > 0
    expected = float(logs["contrastive"]) + objective.diversity_weight * float(logs["diversity"])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert objective.encoder.branches[0].weight.grad.abs().sum() > 0
    assert objective.mask_embedding.grad.abs().sum() > 0
    assert objective.quantizer.codevectors.grad.abs().sum() > 0
    assert int(objective.num_updates) == 1


def test_contrastive_masking_never_touches_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    import pianoeval.symbolic.pretraining as pt

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = pt.compute_span_mask

    def spy(mask: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = original(mask, *args, **kwargs)
        seen.append((mask.clone(), out.clone()))
        return out

    monkeypatch.setattr(pt, "compute_span_mask", spy)
    objective = make_contrastive()
    for _ in range(5):
        objective(curve_batch())
    for mask, spans in seen:
        assert mask[1].sum() == 20  # 40 real frames downsampled by 2
        assert not (spans & ~mask).any()


def test_contrastive_accuracy_rises_when_overfitting() -> None:
    objective = make_contrastive(num_negatives=10, temp_decay=0.97)
    history = overfit(objective, curve_batch(), steps=80, lr=2e-3)
    first = sum(h["accuracy"] for h in history[:10]) / 10
    last = sum(h["accuracy"] for h in history[-10:]) / 10
    assert last > first + 0.2
    assert last > 0.5
    assert history[-1]["contrastive"] < history[0]["contrastive"]
    # The codebook is still in use (not collapsed to one code per group).
    assert history[-1]["perplexity"] > 2.5
    assert history[-1]["temp"] < 2.0


def test_s3_pretraining_cuts_long_curves_to_random_windows() -> None:
    """Whole pieces (thousands of frames) reach S3's pretraining as windows of at most max_len frames."""
    from pianoeval.training.pretrain import build_pretrain_loader

    long = {"curves": torch.arange(5000.0).repeat(3, 1).T.contiguous()}  # [5000, 3], frame t holds t
    short = {"curves": torch.ones(40, 3)}
    loader = build_pretrain_loader("s3", [long, short] * 4, {}, batch_size=8, seed=0, max_len=256)
    batch = next(iter(loader))
    assert batch["curves"].shape[1] == 256 and batch["curve_mask"].sum(dim=1).max() == 256
    windows = batch["curves"][batch["curves"][:, 1, 0] != 1.0]  # the long items' windows
    starts = windows[:, 0, 0]
    assert len(starts.unique()) > 1  # random offsets, not always the start of the piece
    assert torch.equal(windows[:, :, 0] - starts[:, None], torch.arange(256.0).expand(len(windows), -1))
    # Another seed draws other windows; the same seed the same ones.
    again = next(iter(build_pretrain_loader("s3", [long, short] * 4, {}, batch_size=8, seed=0, max_len=256)))
    assert torch.equal(again["curves"], batch["curves"])


def test_a_collapsed_codebook_is_the_worst_case_not_a_free_one() -> None:
    """With every step quantised to one code, the contrastive loss is log(1 + N) (all candidates tie),
    never 0: collapse must not be a way out of the task (it was, on PercePiano, within one epoch)."""
    objective = make_contrastive(num_negatives=10)
    with torch.no_grad():
        objective.quantizer.weight_proj.weight.zero_()
        groups, entries = 2, 16  # make_contrastive's codebook
        objective.quantizer.weight_proj.bias.copy_(torch.tensor(([100.0] + [0.0] * (entries - 1)) * groups))
    objective.eval()
    _, logs = objective(curve_batch())
    assert float(logs["perplexity"]) == pytest.approx(groups, abs=1e-3)  # one code per group
    assert float(logs["contrastive"]) == pytest.approx(math.log(11), rel=1e-3)
    assert math.isnan(float(logs["accuracy"]))  # no distractor of another code: nothing to count


# Three "musical states" (silence, two textures) in 8-frame blocks: like performance curves, which sit
# in a few states most of the time, the contrastive task is solved with about one code per state.
CURVE_STATES = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
# Code perplexity (of 2 x 8 codes) below which the codebook counts as collapsed: 2 x 3 name the states.
# Measured (seed 0, steps 36-40): about 15 with the defaults, about 6 with the weight 0.1.
COLLAPSE_BELOW = 10.0


def few_state_batch(seed: int) -> dict[str, Any]:
    """Four 64-frame curves of 4 channels, each 8-frame block one of CURVE_STATES plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, 3, (4, 8), generator=g).repeat_interleave(8, dim=1)
    curves = CURVE_STATES[which] + 0.02 * torch.randn(4, 64, 4, generator=g)
    return {"curves": curves, "curve_mask": torch.ones(4, 64, dtype=torch.bool)}


@pytest.mark.parametrize(
    ("weights", "collapses"),
    [({}, False), ({"diversity_weight": 0.1}, True)],
    ids=["defaults-keep-the-codebook", "wav2vec-weight-collapses"],
)
def test_the_codebook_does_not_collapse_onto_the_few_states_of_the_music(
    weights: dict[str, float], collapses: bool
) -> None:
    """With the defaults the picked codes stay spread (code perplexity well above the 2 x 3 codes that
    name the states) while the contrastive loss falls below chance; wav2vec 2.0's diversity weight 0.1
    lets them fall onto about one code per state, as the codebook of ASAP's curves fell to a perplexity
    of 2.9 of 128 (docs/benchmarks.md). The second case shows this test can see a collapse."""
    torch.manual_seed(0)
    encoder = MultiScaleCurveEncoder(4, hidden=32, layers=1, heads=4, dropout=0.0, downsample=2)
    objective = ContrastiveCurveObjective(
        encoder, codebook_groups=2, codebook_entries=8, num_negatives=10, temp_decay=0.95, **weights
    )
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)
    history = []
    for step in range(40):
        loss, logs = objective(few_state_batch(step % 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v) for k, v in logs.items()})
    last = history[-5:]
    code_perplexity = sum(h["code_perplexity"] for h in last) / len(last)
    contrastive = sum(h["contrastive"] for h in last) / len(last)
    if collapses:
        assert code_perplexity < COLLAPSE_BELOW
    else:
        assert code_perplexity > COLLAPSE_BELOW
        assert contrastive < math.log(11) - 0.2  # and learns: below chance (all 11 candidates tied)


def test_pretraining_leaves_out_the_transcriptions_of_validation_music() -> None:
    """A transcription view (`<id>@clean`, `<id>@augmented`) of a validation segment is that segment's
    music: pretraining on the fold must not read it, as it does not read the segment itself."""
    import pandas as pd

    from pianoeval.training.pretrain import pretraining_keys

    manifest = pd.DataFrame(
        {
            "segment_id": ["a1", "a2", "b1", "asap::x"],
            "segment_group": ["a", "a", "b", "x"],
            "score_midi_path": [None, None, "b.mid", None],
        }
    )
    folds = {"folds": [{"fold": 0, "train": ["a1", "a2"], "dev": [], "val": ["b1"]}]}
    keys = ["a1", "a1@clean", "a2@augmented", "b1", "b1@clean", "b1@augmented", "score::b.mid", "asap::x"]
    store = {"items": dict.fromkeys(keys)}
    assert pretraining_keys(store, manifest, folds, 0) == ["a1", "a1@clean", "a2@augmented", "asap::x"]
