"""The baselines (training mean, segment mean, ridge and extremely randomised trees on the hand-made
statistics) and their inputs."""

from __future__ import annotations

import logging

import numpy as np

from pianoeval.training.data import FoldData

log = logging.getLogger(__name__)


def stats_matrix(data: FoldData, split: str) -> np.ndarray:
    """The hand-made statistics of a split's items as [N, S] (the baselines' input)."""
    return np.stack([data.items[i]["stats"].numpy() for i in data.splits[split]])


def transcription_flags(data: FoldData, split: str) -> np.ndarray | None:
    """Transcription flags [N, 1] of a split's items (1 = TransKun transcription); None without views."""
    if not data.meta.get("transcribed_views"):
        return None
    return np.array([[float(data.items[i].get("transcribed", 0.0))] for i in data.splits[split]])


def trees_input(data: FoldData, split: str) -> np.ndarray:
    """The trees baseline's input [N, S(+1)] of a split: the statistics and, with transcription views,
    the flag (the trees can split on it)."""
    x, t = stats_matrix(data, split), transcription_flags(data, split)
    return x if t is None else np.concatenate([x, t], axis=1)


def _ridge_baseline(data: FoldData) -> dict[str, np.ndarray]:
    """Ridge on the standardised statistics, alpha chosen on dev; predictions [N, 19] of every split.

    With transcription views, the transcriptions get a ridge of their own (same alpha, their own
    standardisation), so the fit to the ground-truth MIDI is the one without them; transcriptions without
    any in training (only val_transcribed) are scored by the ground-truth fit."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    def rows(split: str, transcribed: bool) -> np.ndarray:
        t = transcription_flags(data, split)
        flag = np.zeros(len(data.splits[split]), dtype=bool) if t is None else t[:, 0] > 0.5
        return flag == transcribed

    x_all = {split: stats_matrix(data, split) for split in data.splits}
    y_train = data.labels("train")
    gt = rows("train", False)
    scaler = StandardScaler().fit(x_all["train"][gt])
    x_fit = scaler.transform(x_all["train"][gt])
    if data.splits["dev"]:
        dev = rows("dev", False)
        x_dev, y_dev = scaler.transform(x_all["dev"][dev]), data.labels("dev")[dev]
    best = None
    for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0):
        reg = Ridge(alpha=alpha).fit(x_fit, y_train[gt])
        # No dev split: prefer the strongest regularisation tried.
        score = -np.mean((reg.predict(x_dev) - y_dev) ** 2) if data.splits["dev"] else -alpha
        if best is None or score > best[0]:
            best = (score, alpha, reg)
    _, alpha, reg = best
    log.info("ridge alpha chosen on dev: %s", alpha)
    models = {False: (scaler, reg)}
    tr = rows("train", True)
    models[True] = models[False]  # no transcription among the training rows: the ground-truth fit
    if tr.any():
        t_scaler = StandardScaler().fit(x_all["train"][tr])
        models[True] = (t_scaler, Ridge(alpha=alpha).fit(t_scaler.transform(x_all["train"][tr]), y_train[tr]))
    out: dict[str, np.ndarray] = {}
    for split in data.splits:
        pred = np.zeros((len(data.splits[split]), y_train.shape[1]))
        for transcribed, (sc, model) in models.items():
            sel = rows(split, transcribed)
            if sel.any():
                pred[sel] = model.predict(sc.transform(x_all[split][sel]))
        out[split] = np.clip(pred, 0.0, 1.0)
    return out


def baseline_predict(model: str, data: FoldData) -> dict[str, np.ndarray]:
    """Predictions of a baseline for every split (fitted on train, alpha chosen on dev)."""

    y_train = data.labels("train")
    out: dict[str, np.ndarray] = {}
    if model == "baseline_mean":
        for split in data.splits:
            out[split] = np.tile(y_train.mean(axis=0), (len(data.splits[split]), 1))
    elif model == "baseline_segment_mean":
        # Mean of the training performances of the same musical segment (global mean if none):
        # the "no performance information" reference of the performer-disjoint protocol.
        g_train = data.groups("train")
        means = {g: y_train[g_train == g].mean(axis=0) for g in np.unique(g_train)}
        for split in data.splits:
            out[split] = np.stack([means.get(g, y_train.mean(axis=0)) for g in data.groups(split)])
    elif model == "baseline_ridge":
        out = _ridge_baseline(data)
    elif model == "baseline_trees":
        # Extremely randomised trees on the same statistics: the non-linear, non-deep reference
        # (interactions such as "fast and loud" that a linear model cannot express).
        from pianoeval.networks.side_input import TREES_MIN_LEAF, make_trees

        x_train, y_mean = trees_input(data, "train"), y_train.mean(axis=0)
        x_dev = trees_input(data, "dev") if data.splits["dev"] else None
        best = None
        for leaf in TREES_MIN_LEAF:
            reg = make_trees(leaf).fit(x_train, y_train - y_mean)
            # No dev split: prefer the smoothest trees tried.
            score = -np.mean((reg.predict(x_dev) + y_mean - data.labels("dev")) ** 2) if x_dev is not None else -leaf
            if best is None or score > best[0]:
                best = (score, leaf, reg)
        _, leaf, reg = best
        log.info("trees min_samples_leaf chosen on dev: %s", leaf)
        for split in data.splits:
            out[split] = np.clip(reg.predict(trees_input(data, split)) + y_mean, 0.0, 1.0)
    else:
        from pianoeval.core.errors import ConfigError

        raise ConfigError(f"unknown baseline {model!r}")
    return out
