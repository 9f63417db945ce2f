"""Wide & deep: an encoder's embedding joined with hand-made MIDI statistics of the same performance.

Why: the learned encoders see raw tokens, graphs or curves and need many examples to discover
global properties (mean loudness, pedal share, tempo) that one line of numpy measures exactly.
PercePiano has about 900 training performances per fold and the demo 30; on such sizes the
statistics carry most of the signal, and the encoder is left to learn what they miss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pianoeval.core.constants import N_DIMS

# Ridge strengths tried for the wide part (the ridge baseline's grid).
RIDGE_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
# Leaf sizes tried for the trees (baseline and wide part, chosen on dev): 3 fits detail, 10 smooths noise.
TREES_MIN_LEAF: tuple[int, ...] = (3, 10)
# Shares of the ridge part in the wide part's ridge/trees blend, chosen on dev (`wide_part: blend`).
BLEND_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
# Cross-fitting folds for the trees' training-row predictions (out-of-fold, by segment group).
OOF_FOLDS = 5


def make_trees(min_samples_leaf: int) -> Any:
    """The project's extremely randomised trees (baseline_trees and the wide part share them)."""
    from sklearn.ensemble import ExtraTreesRegressor

    return ExtraTreesRegressor(
        n_estimators=300, min_samples_leaf=min_samples_leaf, max_features=0.5, n_jobs=-1, random_state=0
    )


class TreeEnsemble(nn.Module):
    """A fitted sklearn tree ensemble evaluated in torch: x [B, S] → mean leaf value over trees [B, O].

    Why in torch: the trees are then buffers of the network, saved in its checkpoint and loaded by
    `pianoeval score` and fusion with the rest of it (no pickle beside the weights). The node arrays
    are padded to the largest tree; a leaf points to itself, so `depth` steps reach every leaf.
    Splits compare in float32 input against float64 thresholds, as sklearn does. Empty (no trees):
    the output is 0.
    """

    _BUFFERS = ("feature", "threshold", "child", "value", "depth")

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.n_out = n_out
        self.register_buffer("feature", torch.zeros(0, 0, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("child", torch.zeros(0, 0, 2, dtype=torch.long))
        self.register_buffer("value", torch.zeros(0, 0, n_out))
        self.register_buffer("depth", torch.zeros((), dtype=torch.long))

    @property
    def n_trees(self) -> int:
        """How many trees are loaded (0: the ensemble outputs zeros)."""
        return int(self.feature.shape[0])

    @torch.no_grad()
    def load_sklearn(self, ensemble: Any, scale: float = 1.0) -> None:
        """Copy a fitted multi-output sklearn forest (`estimators_`), its leaf values times `scale`."""
        trees = [est.tree_ for est in ensemble.estimators_]
        n_nodes = max(t.node_count for t in trees)
        self_loop = torch.arange(n_nodes)
        feature = torch.zeros(len(trees), n_nodes, dtype=torch.long)
        threshold = torch.zeros(len(trees), n_nodes, dtype=torch.float64)
        child = self_loop.view(1, -1, 1).repeat(len(trees), 1, 2)
        value = torch.zeros(len(trees), n_nodes, self.n_out)
        for k, t in enumerate(trees):
            c = t.node_count
            leaf = torch.from_numpy(t.children_left[:c] == -1)
            feature[k, :c] = torch.from_numpy(t.feature[:c].astype("int64")).masked_fill(leaf, 0)
            threshold[k, :c] = torch.from_numpy(t.threshold[:c].astype("float64"))
            for side, kids in enumerate((t.children_left, t.children_right)):
                child[k, :c, side] = torch.where(leaf, self_loop[:c], torch.from_numpy(kids[:c].astype("int64")))
            value[k, :c] = torch.from_numpy(t.value[:c, :, 0]).float() * scale
        for name, tensor in zip(self._BUFFERS[:4], (feature, threshold, child, value), strict=True):
            setattr(self, name, tensor)
        self.depth = torch.tensor(max(t.max_depth for t in trees), dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean leaf value [B, O] of x [B, S] over the trees."""
        if self.n_trees == 0:
            return x.new_zeros(x.shape[0], self.n_out)
        xd = x.detach().float().double()
        trees = torch.arange(self.n_trees, device=x.device)
        node = torch.zeros(x.shape[0], self.n_trees, dtype=torch.long, device=x.device)
        for _ in range(int(self.depth)):
            right = xd.gather(1, self.feature[trees, node]) > self.threshold[trees, node]
            node = self.child[trees, node, right.long()]
        return self.value[trees, node].mean(dim=1).to(x.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The trees' sizes are known only from the checkpoint: take its shapes before loading.
        for name in self._BUFFERS:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class NoEncoder(nn.Module):
    """An encoder that sees nothing: z [B, 0]. Wrapped in WithStatistics it leaves the wide part and
    the side MLP alone (`baseline_blend`: the wide part the wide & deep encoders start from)."""

    hidden_size = 0

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """An empty embedding [B, 0] (B from the batch's statistics)."""
        stats = batch["stats"]
        return stats.new_zeros(stats.shape[0], 0, dtype=torch.float32)


class WithStatistics(nn.Module):
    """`base(batch) -> z [B, H]` concatenated with an MLP of `batch["stats"] [B, S]` → z [B, H + side].

    Wide part: per-dimension logit offsets (`encode`'s second value) from the statistics, which the
    score heads add to their own logits: a linear map of the standardised statistics, which `init_wide` fits in
    closed form (ridge on the training labels' logits, freezing the standardisation at the training
    moments), plus trees (`init_trees`, optional: ridge/trees blend chosen on dev). Training starts
    from that fit and the deep part learns what it misses.

    `score_columns` (a slice of the statistics, its last column the "score aligned" flag) is the
    part measured against the score. Rows whose flag is 0 (no score) get that part at the training
    mean (0 after standardisation); in training each row's score part is dropped the same way with
    probability `score_dropout`, so that a model trained on scored data still predicts sensibly for a
    recording without a score.

    `transcribed_flag`: the training data mixes ground-truth MIDI with TransKun transcriptions of the
    recordings (steps/transcribe.py), whose statistics differ systematically (compressed
    velocities, missed pedal). `batch["transcribed"] [B]` (1 for a transcription, 0 or absent for MIDI)
    then joins the side MLP's and the trees' input, and the linear part reads [(1 - t) x, t x, 1 - t, t]:
    its own slopes and intercept for transcriptions, so that the ground-truth fit is not averaged with
    theirs. The standardisation moments are the ground-truth rows' (`init_wide`), and a transcription's
    standardised statistics are clamped to the range of the training transcriptions' (`bound`): a
    degraded recording's transcription (a fifth of the notes lost) would otherwise be extrapolated.
    """

    def __init__(
        self,
        base: nn.Module,
        n_stats: int,
        side: int = 64,
        dropout: float = 0.1,
        score_columns: slice | None = None,
        score_dropout: float = 0.0,
        n_dims: int = N_DIMS,
        transcribed_flag: bool = False,
    ) -> None:
        super().__init__()
        self.base = base
        self.transcribed_flag = bool(transcribed_flag)
        flag = int(self.transcribed_flag)
        self.score_columns = score_columns
        self.score_dropout = float(score_dropout)
        # BatchNorm standardises the statistics with running moments of the training data (their
        # scales differ by orders of magnitude); eval mode then applies the training moments.
        self.norm = nn.BatchNorm1d(n_stats)
        self.side = nn.Sequential(
            nn.Linear(n_stats + flag, side), nn.GELU(), nn.Dropout(dropout), nn.Linear(side, side)
        )
        self.wide = nn.Linear(n_stats * (1 + flag) + 2 * flag, n_dims, bias=False)
        nn.init.zeros_(self.wide.weight)
        # The non-linear half of the wide part (`init_trees`); empty until fitted, then its logit
        # offsets add to the linear part's.
        self.trees = TreeEnsemble(n_dims)
        # 1 once init_wide has fixed the moments: BatchNorm then always uses them (no batch noise).
        self.register_buffer("moments_fixed", torch.zeros((), dtype=torch.bool))
        if self.transcribed_flag:
            # The range of the training transcriptions' standardised statistics (init_wide): a transcription
            # is bounded to it, since a degraded recording's (a fifth of the notes missed) lies far outside.
            self.register_buffer("transcribed_low", torch.full((n_stats,), -torch.inf))
            self.register_buffer("transcribed_high", torch.full((n_stats,), torch.inf))
        self.hidden_size = int(base.hidden_size) + side

    def score_missing(self, stats: torch.Tensor) -> torch.Tensor | None:
        """[B, 1] bool: rows whose score part is absent (flag 0) or, in training, dropped; None
        without score columns."""
        cols = self.score_columns
        if cols is None:
            return None
        missing = stats[:, cols.stop - 1 : cols.stop] < 0.5
        if self.training and self.score_dropout > 0:
            missing = missing | (torch.rand(stats.shape[0], 1, device=stats.device) < self.score_dropout)
        return missing

    def standardise(self, stats: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised statistics [B, S], the score part of `missing` rows ([B, 1], default:
        `score_missing(stats)`) at 0."""
        if self.moments_fixed or not self.training or stats.shape[0] == 1:
            # Fixed moments; or BatchNorm cannot estimate a variance from one row.
            x = nn.functional.batch_norm(stats, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
            x = x * self.norm.weight + self.norm.bias
        else:
            x = self.norm(stats)
        cols = self.score_columns
        if cols is None:
            return x
        missing = self.score_missing(stats) if missing is None else missing
        x = x.clone()
        x[:, cols] = x[:, cols].masked_fill(missing, 0.0)
        return x

    def tree_input(self, stats: torch.Tensor, missing: torch.Tensor | None) -> torch.Tensor:
        """The statistics [B, S] as the trees read them: a `missing` row's score part at the training
        mean and its flag at 0 (what standardise's 0 means for the linear part)."""
        cols = self.score_columns
        if cols is None or missing is None:
            return stats
        x = stats.clone()
        mean = self.norm.running_mean[cols].to(x.dtype).expand(x.shape[0], -1).clone()
        mean[:, -1] = 0.0
        x[:, cols] = torch.where(missing, mean, x[:, cols])
        return x

    def flag(self, batch: dict[str, Any], like: torch.Tensor) -> torch.Tensor | None:
        """[B, 1] the transcription flag of a batch (0 where absent); None without `transcribed_flag`."""
        if not self.transcribed_flag:
            return None
        t = batch.get("transcribed")
        if t is None:
            return like.new_zeros(like.shape[0], 1)
        return t.reshape(-1, 1).to(like.dtype)

    def bound(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """Standardised statistics x [B, S] with the transcriptions' rows (t [B, 1] = 1) clamped to the
        range of the training transcriptions; x unchanged without `transcribed_flag`."""
        if t is None:
            return x
        bounded = torch.maximum(torch.minimum(x, self.transcribed_high.to(x)), self.transcribed_low.to(x))
        return torch.where(t > 0.5, bounded, x)

    @staticmethod
    def wide_input(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The linear part's input: standardised statistics x [B, S]; with a flag t [B, 1],
        [(1 - t) x, t x, 1 - t, t]: each domain its own slopes and intercept, so that ridge splits into
        two independent fits and the ground-truth one is what it would be without transcriptions."""
        return x if t is None else torch.cat([(1 - t) * x, t * x, 1 - t, t], dim=1)

    @staticmethod
    def with_flag(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """x [B, S] with the flag t [B, 1] as one more column (the trees' and the side MLP's input)."""
        return x if t is None else torch.cat([x, t.to(x.dtype)], dim=1)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """z [B, H + side] (see `encode`, which also returns the wide part's offsets)."""
        return self.encode(batch)[0]

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [B, H + side], wide logit offsets [B, n_dims]) from the base encoder's inputs plus
        `stats [B, S]` (and `transcribed [B]`).

        The offsets are the wide part's, for the score heads (computed from the same standardised,
        score-dropped statistics as the side embedding). The trees' share is read from
        `batch["wide_prior"]` (and `wide_prior_masked` for score-dropped rows) when the batch carries
        it: the out-of-fold predictions of training rows (`init_trees`).
        """
        # The score part is dropped (or absent) first: an encoder with score inputs of its own (S3's
        # score-aligned curves) drops the same rows' (`batch["score_missing"]`).
        missing = self.score_missing(batch["stats"])
        z = self.base(batch if missing is None else {**batch, "score_missing": missing[:, 0]})
        stats = batch["stats"].to(z.dtype)
        t = self.flag(batch, stats)
        x = self.bound(self.standardise(stats, missing), t)
        prior = batch.get("wide_prior")
        if prior is None:
            trees = self.trees(self.with_flag(self.tree_input(stats, missing), t))
        elif missing is None:
            trees = prior.to(z.dtype)
        else:
            trees = torch.where(missing, batch["wide_prior_masked"], prior).to(z.dtype)
        offsets = self.wide(self.wide_input(x, t)) + trees
        return torch.cat([z, self.side(self.with_flag(x, t))], dim=-1), offsets

    @torch.no_grad()
    def init_wide(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_dev: torch.Tensor | None = None,
        y_dev: torch.Tensor | None = None,
        alphas: tuple[float, ...] = RIDGE_ALPHAS,
        t_train: torch.Tensor | None = None,
        t_dev: torch.Tensor | None = None,
    ) -> float:
        """Fix the standardisation at the moments of x_train [N, S]; fit the wide part by ridge.

        Targets are the label logits minus the logit of the label mean (the heads' initial bias).
        The ridge strength is chosen on (x_dev, y_dev) by MSE in label space (the largest without a
        dev split). `t_train`/`t_dev` [N, 1]: the rows' transcription flags (with `transcribed_flag`;
        default 0); the moments are then the ground-truth rows'. Returns the chosen alpha.
        """
        x_train, y_train = x_train.double(), y_train.double()
        t = self._rows_flag(t_train, x_train)
        # With transcriptions, the ground-truth rows' moments: that fit is then the one without them.
        ref = x_train if t is None or bool((t > 0.5).all()) else x_train[t[:, 0] < 0.5]
        self.norm.running_mean.copy_(ref.mean(dim=0).to(self.norm.running_mean))
        self.norm.running_var.copy_(ref.var(dim=0, unbiased=False).to(self.norm.running_var))
        self.norm.weight.fill_(1.0)
        self.norm.bias.zero_()
        self.moments_fixed.fill_(True)
        was_training = self.training
        self.eval()  # no score dropout while fitting
        xs = self.standardise(x_train.to(self.norm.running_mean.dtype)).double()
        if t is not None:
            rows = xs[t[:, 0] > 0.5] if bool((t > 0.5).any()) else xs
            self.transcribed_low.copy_(rows.min(dim=0).values.to(self.transcribed_low))
            self.transcribed_high.copy_(rows.max(dim=0).values.to(self.transcribed_high))
        xs = self.wide_input(xs, None if t is None else t.to(xs.dtype))
        base = torch.logit(y_train.mean(dim=0).clamp(1e-4, 1 - 1e-4))
        target = torch.logit(y_train.clamp(1e-4, 1 - 1e-4)) - base
        gram, cross = xs.T @ xs, xs.T @ target
        best: tuple[float, float, torch.Tensor] | None = None
        for alpha in alphas:
            w = torch.linalg.solve(gram + alpha * torch.eye(len(gram), dtype=gram.dtype), cross)
            if x_dev is not None and y_dev is not None and len(x_dev):
                xd = self.standardise(x_dev.to(self.norm.running_mean.dtype)).double()
                td = self._rows_flag(t_dev, xd)
                xd = self.wide_input(self.bound(xd, td), td)
                err = float(((torch.sigmoid(base + xd @ w) - y_dev.double()) ** 2).mean())
            else:
                err = -alpha
            if best is None or err < best[0]:
                best = (err, alpha, w)
        assert best is not None
        self.wide.weight.copy_(best[2].T.to(self.wide.weight))
        self.train(was_training)
        return best[1]

    def _rows_flag(self, t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """Flags [N, 1] of fitting rows like `like` (zeros when not given); None without `transcribed_flag`."""
        if not self.transcribed_flag:
            return None
        return like.new_zeros(like.shape[0], 1) if t is None else t.reshape(-1, 1).to(like.dtype)

    @torch.no_grad()
    def init_trees(
        self,
        mode: str,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        groups: torch.Tensor,
        x_dev: torch.Tensor | None = None,
        y_dev: torch.Tensor | None = None,
        t_train: torch.Tensor | None = None,
        t_dev: torch.Tensor | None = None,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """Add trees to the ridge wide part (call after `init_wide`): `mode` is `ridge` (none),
        `trees` (trees only) or `blend` (ridge share w and trees share 1 - w, w chosen on dev).

        The trees (make_trees, leaf size chosen on dev) fit the same logit targets as ridge, on the
        training rows plus, with score columns, the same rows with their score part missing. Returns
        (choices, priors): priors `wide_prior`/`wide_prior_masked` [N, n_dims] are the trees' share for
        the training rows *out of fold* (5 folds by `groups` [N]), for the batches to carry: in-sample
        trees fit their training rows almost exactly, and the deep part would learn to trust them.
        """
        if mode == "ridge":
            return {"wide_part": "ridge"}, None
        xt, yt = x_train.double(), y_train.double()
        base = torch.logit(yt.mean(dim=0).clamp(1e-4, 1 - 1e-4))
        target = (torch.logit(yt.clamp(1e-4, 1 - 1e-4)) - base).numpy()
        was_training = self.training
        self.eval()
        tt = self._rows_flag(t_train, xt)
        views = [self.with_flag(self.tree_input(xt, torch.zeros(len(xt), 1, dtype=torch.bool)), tt)]
        if self.score_columns is not None:
            views.append(self.with_flag(self.tree_input(xt, torch.ones(len(xt), 1, dtype=torch.bool)), tt))
        x_fit = torch.cat(views).float().numpy()
        y_fit = np.concatenate([target] * len(views))
        has_dev = x_dev is not None and y_dev is not None and len(x_dev) > 0
        if has_dev:
            xd = x_dev.double()
            td = self._rows_flag(t_dev, xd)
            x_dev_trees = self.with_flag(self.tree_input(xd, self.score_missing(xd)), td).float().numpy()
            xs_dev = self.standardise(x_dev.to(self.norm.running_mean.dtype))
            td_s = self._rows_flag(t_dev, xs_dev)
            ridge_dev = self.wide(self.wide_input(self.bound(xs_dev, td_s), td_s)).double()
        best: tuple[float, int, float, Any] | None = None
        for leaf in TREES_MIN_LEAF:
            reg = make_trees(leaf).fit(x_fit, y_fit)
            for w in BLEND_WEIGHTS if mode == "blend" else (0.0,):
                if has_dev:
                    logits = base + w * ridge_dev + (1 - w) * torch.from_numpy(reg.predict(x_dev_trees))
                    err = float(((torch.sigmoid(logits) - y_dev.double()) ** 2).mean())
                else:  # no dev split: the smoothest trees, an even blend
                    err = -leaf - (w == 0.5)
                if best is None or err < best[0]:
                    best = (err, leaf, w, reg)
        assert best is not None
        _, leaf, w, reg = best
        choices = {"wide_part": mode, "trees_min_leaf": leaf, "ridge_share": w}
        self.wide.weight.mul_(w)
        priors = None
        if w < 1.0:
            self.trees.load_sklearn(reg, scale=1.0 - w)
            priors = self._out_of_fold(x_fit, y_fit, groups.numpy(), len(views), leaf, 1.0 - w)
        self.train(was_training)
        return choices, priors

    def _out_of_fold(
        self, x_fit: np.ndarray, y_fit: np.ndarray, groups: np.ndarray, n_views: int, leaf: int, scale: float
    ) -> dict[str, torch.Tensor]:
        """Out-of-fold trees logits of the training rows, scored and (with score columns) masked views."""
        from sklearn.model_selection import GroupKFold

        n = len(groups)
        out = np.zeros((n_views, n, y_fit.shape[1]))
        splits = min(OOF_FOLDS, len(np.unique(groups)))
        if splits < 2:  # one group: nothing to hold out, the in-sample fit is all there is
            out[:] = self.trees(torch.from_numpy(x_fit)).double().numpy().reshape(n_views, n, -1) / scale
        else:
            for fit_rows, held in GroupKFold(n_splits=splits).split(np.zeros(n), groups=groups):
                rows = np.concatenate([fit_rows + v * n for v in range(n_views)])
                reg = make_trees(leaf).fit(x_fit[rows], y_fit[rows])
                for v in range(n_views):
                    out[v, held] = reg.predict(x_fit[held + v * n])
        priors = {"wide_prior": torch.from_numpy(out[0] * scale).float()}
        if n_views > 1:
            priors["wide_prior_masked"] = torch.from_numpy(out[1] * scale).float()
        return priors


def pooled_statistics(frames: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of each dimension over frames: [F, D] → [2 D] (float32).

    The audio track's hand-made statistics: what a linear probe on a frozen backbone reads (the
    audio baselines, and the wide part of the wide & deep probe).
    """
    x = frames.float()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected frames [F, D] with F > 0, got {tuple(x.shape)}")
    return torch.cat([x.mean(dim=0), x.std(dim=0, unbiased=False)])
