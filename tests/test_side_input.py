"""The wide & deep side input: shapes, standardisation, and how the registry and featurizer use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pianoeval.core.config import validate_config
from pianoeval.core.constants import ALL_STAT_NAMES
from pianoeval.core.settings import FeaturesSettings, FitSettings
from pianoeval.networks.side_input import WithStatistics
from pianoeval.symbolic.featurize import featurize_file, kind_meta
from pianoeval.training.registry import build_encoder, build_network


class _Constant(nn.Module):
    """An encoder that ignores its input: z is all zeros, so only the side path can vary."""

    hidden_size = 8

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.zeros(batch["stats"].shape[0], self.hidden_size)


def test_side_input_shape_and_signal() -> None:
    net = WithStatistics(_Constant(), n_stats=5, side=4)
    stats = torch.randn(6, 5) * torch.tensor([1.0, 10.0, 100.0, 1e3, 1e4])
    z = net({"stats": stats})
    assert z.shape == (6, 12)
    assert net.hidden_size == 12
    assert torch.allclose(z[:, :8], torch.zeros(6, 8))
    # The statistics reach z: different rows give different side embeddings.
    assert z[:, 8:].std(dim=0).min() > 0


def test_side_input_standardises_with_training_moments() -> None:
    net = WithStatistics(_Constant(), n_stats=3, side=4)
    train = torch.randn(64, 3) * 1000.0 + 5000.0
    for _ in range(50):
        net({"stats": train})
    assert torch.allclose(net.norm.running_mean, train.mean(dim=0), rtol=0.05)
    net.eval()
    one = net({"stats": train[:1]})  # eval: a batch of one works and uses the running moments
    assert torch.isfinite(one).all()
    net.train()
    assert torch.isfinite(net({"stats": train[:1]})).all()  # training batch of one: no BatchNorm error


def test_gradients_reach_both_paths() -> None:
    base = nn.Linear(3, 8)
    base.hidden_size = 8
    net = WithStatistics(base, n_stats=3, side=4)

    class Wrap(nn.Module):
        hidden_size = 8

        def __init__(self) -> None:
            super().__init__()
            self.lin = base

        def forward(self, batch: dict) -> torch.Tensor:
            return self.lin(batch["x"])

    net.base = Wrap()
    net({"x": torch.randn(4, 3), "stats": torch.randn(4, 3)}).sum().backward()
    assert base.weight.grad is not None and base.weight.grad.abs().sum() > 0
    assert net.side[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("enabled", [True, False], ids=["wrapped", "bare"])
def test_registry_wraps_symbolic_encoders(enabled: bool) -> None:
    config = validate_config({"symbolic": {"stats_side_input": enabled, "hidden": 32, "layers": 2, "heads": 2}})
    meta = kind_meta("curves", FeaturesSettings.from_config(config))
    net = build_network("s3", meta, FitSettings.from_config(config))
    assert isinstance(net, WithStatistics) is enabled
    assert not isinstance(build_encoder("s3", meta, FitSettings.from_config(config)), WithStatistics)


@pytest.mark.parametrize("kind", ["tokens", "graphs", "curves", "stats"])
def test_every_feature_kind_carries_statistics(kind: str, tiny_midi) -> None:
    config = validate_config({})
    item = featurize_file(kind, str(tiny_midi()), FeaturesSettings.from_config(config))
    assert item["stats"].shape == (len(ALL_STAT_NAMES),)
    assert torch.isfinite(item["stats"]).all()
    assert kind_meta(kind, FeaturesSettings.from_config(config))["n_stats"] == len(ALL_STAT_NAMES)


def _forest(n_out: int, leaf: int = 3, seed: int = 0):
    """A small fitted ExtraTrees on a non-linear target: (x [N, 4] float32, y [N, n_out], model)."""
    import numpy as np
    from sklearn.ensemble import ExtraTreesRegressor

    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(300, 4)) * [1.0, 100.0, 0.01, 5.0]).astype("float32")
    y = np.stack([np.sin(x[:, 0]) * (x[:, 1] > 0) + k * x[:, 3] / 5 for k in range(n_out)], axis=1)
    return x, y, ExtraTreesRegressor(n_estimators=25, min_samples_leaf=leaf, random_state=seed).fit(x, y)


@pytest.mark.parametrize("n_out", [1, 3], ids=["one-output", "three-outputs"])
def test_tree_ensemble_matches_sklearn(n_out: int) -> None:
    from pianoeval.networks.side_input import TreeEnsemble

    x, _, reg = _forest(n_out)
    trees = TreeEnsemble(n_out)
    assert torch.equal(trees(torch.from_numpy(x)), torch.zeros(300, n_out))  # empty: no offset
    trees.load_sklearn(reg, scale=0.5)
    probe = torch.from_numpy(x[:50]) * 1.3  # off the training points, other leaves
    expected = 0.5 * reg.predict(probe.numpy()).reshape(50, n_out)
    assert torch.allclose(trees(probe).double(), torch.from_numpy(expected), atol=1e-5)
    # A fresh ensemble takes the trees' shapes from a state dict (how checkpoints load).
    fresh = TreeEnsemble(n_out)
    fresh.load_state_dict(trees.state_dict())
    assert fresh.n_trees == 25 and torch.equal(fresh(probe), trees(probe))


def test_tree_ensemble_agrees_with_sklearn_on_split_thresholds() -> None:
    """Inputs sitting exactly on a split threshold rounded to float32 go the way sklearn sends them
    (float32 input against the float64 threshold); a float32 comparison, as hummingbird-ml compiles,
    sends about a third of them the other way (docs/benchmarks.md, "Libraries of the field")."""
    import numpy as np

    from pianoeval.networks.side_input import TreeEnsemble

    x, _, reg = _forest(2)
    rng = np.random.default_rng(1)
    edge = x[rng.integers(len(x), size=400)].copy()
    flips = 0
    for row in edge:
        tree = reg.estimators_[int(rng.integers(len(reg.estimators_)))].tree_
        node = int(rng.choice(np.flatnonzero(tree.children_left != -1)))
        row[tree.feature[node]] = np.float32(tree.threshold[node])
        flips += bool(np.float32(tree.threshold[node]) > tree.threshold[node])  # sklearn goes right, float32 left
    assert flips > 50  # the probe does hit the rounding cases
    trees = TreeEnsemble(2)
    trees.load_sklearn(reg)
    torch.testing.assert_close(trees(torch.from_numpy(edge)).double(), torch.from_numpy(reg.predict(edge)))


def test_init_trees_blend_chosen_on_dev_and_training_priors_out_of_fold() -> None:
    """On a target ridge cannot fit, the dev split picks a trees share; the training rows' priors are
    out of fold (worse on their own rows than the in-sample trees); masked rows read the masked prior."""
    import numpy as np

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(400, 6)).astype("float32"))
    x[:, 5] = 1.0  # every row has a score (columns 3-5 are the score part, 5 its flag)
    y = torch.sigmoid(2 * torch.sin(2 * x[:, :1]) * torch.sign(x[:, 3:4]) + 0.1 * torch.randn(400, 2))
    groups = torch.arange(400) // 4
    net = WithStatistics(_Constant(), n_stats=6, side=4, n_dims=2, score_columns=slice(3, 6), score_dropout=0.5)
    net.init_wide(x[:300], y[:300], x[300:], y[300:])
    choices, priors = net.init_trees("blend", x[:300], y[:300], groups[:300], x[300:], y[300:])
    assert choices["ridge_share"] < 0.5 and net.trees.n_trees == 300
    assert set(priors) == {"wide_prior", "wide_prior_masked"} and priors["wide_prior"].shape == (300, 2)
    net.eval()
    linear = net.wide(net.standardise(x[:300]))
    target = torch.logit(y[:300]) - torch.logit(y[:300].mean(0))
    in_sample = linear + net.trees(x[:300])
    oof = linear + priors["wide_prior"]
    assert ((oof - target) ** 2).mean() > 1.5 * ((in_sample - target) ** 2).mean()
    # A batch that carries the priors uses them instead of the trees: the masked prior for rows
    # without a score (it cannot see the sign of column 3).
    unscored = x[:300].clone()
    unscored[:, 5] = 0.0
    _, offsets = net.encode({"stats": unscored, **priors})
    expected = net.wide(net.standardise(unscored)) + priors["wide_prior_masked"]
    assert torch.allclose(offsets, expected, atol=1e-6)
    _, offsets = net.encode({"stats": x[:300], **priors})
    assert torch.allclose(offsets, oof, atol=1e-6)


def test_init_trees_ridge_mode_changes_nothing() -> None:
    net = WithStatistics(_Constant(), n_stats=3, side=4, n_dims=2)
    x, y = torch.randn(40, 3), torch.rand(40, 2) * 0.8 + 0.1
    net.init_wide(x, y)
    weight = net.wide.weight.clone()
    choices, priors = net.init_trees("ridge", x, y, torch.arange(40) // 4)
    assert choices == {"wide_part": "ridge"} and priors is None
    assert net.trees.n_trees == 0 and torch.equal(net.wide.weight, weight)


@pytest.mark.parametrize("mode", ["ridge", "blend"])
def test_transcription_flag_gives_transcriptions_their_own_fit(mode: str) -> None:
    """Ground-truth rows follow y = f(x0); transcriptions see a compressed x0 (as TransKun's velocities are).
    With the flag the wide part fits both; the ground-truth fit is the one a model without transcriptions
    finds, and without the flag (mixed, one slope) both are worse."""
    import numpy as np

    rng = np.random.default_rng(1)
    n = 300
    x = torch.from_numpy(rng.normal(size=(n, 3)).astype("float32"))
    y = torch.sigmoid(1.5 * x[:, :1] + 0.05 * torch.randn(n, 1)).repeat(1, 2)
    xt = x.clone()
    xt[:, 0] = 0.3 * x[:, 0] + 2.0  # compressed and shifted
    x_all, y_all = torch.cat([x, xt]), torch.cat([y, y])
    t_all = torch.cat([torch.zeros(n, 1), torch.ones(n, 1)])
    groups = torch.cat([torch.arange(n) // 3] * 2)

    def fit(flag: bool) -> WithStatistics:
        torch.manual_seed(0)
        net = WithStatistics(_Constant(), n_stats=3, side=4, n_dims=2, transcribed_flag=flag)
        kw = {"t_train": t_all, "t_dev": t_all} if flag else {}
        net.init_wide(x_all, y_all, x_all, y_all, **kw)
        net.init_trees(mode, x_all, y_all, groups, x_all, y_all, **kw)
        return net.eval()

    def mse(net: WithStatistics, stats: torch.Tensor, t: float) -> float:
        _, offsets = net.encode({"stats": stats, "transcribed": torch.full((len(stats),), t)})
        pred = torch.sigmoid(offsets + torch.logit(y_all.mean(0)))
        return float(((pred - y) ** 2).mean())

    flagged, mixed = fit(True), fit(False)
    assert flagged.wide.weight.shape == (2, 3 * 2 + 2) and mixed.wide.weight.shape == (2, 3)
    # Without the flag in the batch, a row counts as ground-truth MIDI.
    b0, b1 = {"stats": x[:5]}, {"stats": x[:5], "transcribed": torch.zeros(5)}
    assert torch.equal(flagged.encode(b0)[1], flagged.encode(b1)[1])
    # Each domain is fitted well with the flag; one slope for both fits neither as well.
    assert mse(flagged, x, 0.0) < 0.5 * mse(mixed, x, 0.0)
    assert mse(flagged, xt, 1.0) < 0.5 * mse(mixed, xt, 1.0)
    # The side MLP reads the flag too: the same statistics give another embedding as a transcription.
    z0 = flagged({"stats": x[:5], "transcribed": torch.zeros(5)})
    z1 = flagged({"stats": x[:5], "transcribed": torch.ones(5)})
    assert not torch.allclose(z0[:, 8:], z1[:, 8:])


def test_transcriptions_leave_the_ground_truth_fit_as_it_was() -> None:
    """Ridge on [(1 - t) x, t x, 1 - t, t] with the ground-truth rows' moments splits in two: the fit of
    the ground-truth MIDI is the one a model trained without transcriptions finds."""
    import numpy as np

    rng = np.random.default_rng(2)
    n = 200
    x = torch.from_numpy(rng.normal(size=(n, 4)).astype("float32"))
    y = torch.sigmoid(x[:, :2] @ torch.tensor([[1.0, -0.5], [0.3, 0.8]]) + 0.3 * torch.randn(n, 2))
    xt = x * 0.5 + 1.0 + 0.2 * torch.randn(n, 4)
    dev = slice(150, None)
    plain = WithStatistics(_Constant(), n_stats=4, side=4, n_dims=2)
    alpha = plain.init_wide(x[:150], y[:150], x[dev], y[dev])
    flagged = WithStatistics(_Constant(), n_stats=4, side=4, n_dims=2, transcribed_flag=True)
    t = torch.cat([torch.zeros(150, 1), torch.ones(150, 1)])
    alpha_flagged = flagged.init_wide(
        torch.cat([x[:150], xt[:150]]), torch.cat([y[:150], y[:150]]), x[dev], y[dev], t_train=t
    )
    assert alpha_flagged == alpha
    plain.eval(), flagged.eval()
    a = plain.encode({"stats": x[dev]})[1]
    b = flagged.encode({"stats": x[dev], "transcribed": torch.zeros(50)})[1]
    # The intercept column (1 - t) absorbs what the heads' shared bias (the logit of the mean label)
    # misses, the only difference: a small shift per dimension.
    assert torch.allclose(a - a.mean(0), b - b.mean(0), atol=1e-4)


def test_a_transcription_is_bounded_to_the_training_transcriptions_range() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(80, 3), torch.rand(80, 2) * 0.8 + 0.1
    t = torch.cat([torch.zeros(40, 1), torch.ones(40, 1)])
    net = WithStatistics(_Constant(), n_stats=3, side=4, n_dims=2, transcribed_flag=True)
    net.init_wide(x, y, x[:10], y[:10], t_train=t)
    net.eval()
    far = torch.tensor([[50.0, -50.0, 0.0]])
    edge = torch.stack([x[40:, 0].max(), x[40:, 1].min(), torch.tensor(0.0)]).unsqueeze(0)
    logits = {}
    for name, stats, flag in (("far_t", far, 1.0), ("edge_t", edge, 1.0), ("far_gt", far, 0.0)):
        logits[name] = net.encode({"stats": stats, "transcribed": torch.tensor([flag])})[1]
    # Beyond the range the transcription's statistics stop counting; ground-truth MIDI is not bounded.
    assert torch.allclose(logits["far_t"], logits["edge_t"], atol=1e-5)
    assert (logits["far_gt"] - logits["edge_t"]).abs().max() > 1.0
