"""Score-relative statistics: each one moves with the performance property it names, and only then."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pianoeval.core.constants import ALL_STAT_NAMES, SCORE_COLUMNS, SCORE_STAT_NAMES, STAT_NAMES
from pianoeval.data.midi import Performance
from pianoeval.networks.side_input import WithStatistics
from pianoeval.symbolic.features import FEATURE_NAMES, SCORE_CURVE_NAMES, extract_continuous_features
from pianoeval.symbolic.score_stats import match_score, score_relative_statistics
from pianoeval.symbolic.stats import performance_statistics


def _score(n_bars: int = 8, seed: int = 0) -> Performance:
    """A notated piece: melody eighths over a chord per beat, dynamics in three levels, 2 beats/s."""
    rng = np.random.default_rng(seed)
    notes = []
    for beat in range(n_bars * 4):
        t = beat * 0.5
        level = (64, 96, 48)[(beat // 8) % 3]
        for p in (48, 52, 55):
            notes.append((t, t + 0.5, p + int(rng.integers(0, 3)), level))
        for half in (0.0, 0.25):
            notes.append((t + half, t + half + 0.25, 72 + int(rng.integers(0, 12)), level))
    return Performance(np.array(notes, dtype=float))


def _stats(perf: Performance, score: Performance) -> dict[str, float]:
    return dict(zip(SCORE_STAT_NAMES, score_relative_statistics(perf, score).tolist(), strict=True))


def _play(score: Performance, tempo: float = 1.0, warp=None, dur_scale: float = 1.0, vel=None, jitter: float = 0.0):
    """A performance of `score`: global tempo factor, time warp f(t), duration scale, velocity map, jitter (s)."""
    rng = np.random.default_rng(1)
    n = score.notes.copy()
    on = n[:, 0] / tempo
    if warp is not None:
        on = warp(on)
    on = on + rng.normal(0.0, jitter, len(on)) if jitter else on
    dur = (n[:, 1] - n[:, 0]) / tempo * dur_scale
    v = n[:, 3] if vel is None else vel(n[:, 3])
    return Performance(np.stack([on - on.min() + 0.1, on - on.min() + 0.1 + dur, n[:, 2], v], axis=1))


def test_a_faithful_rendition_is_neutral() -> None:
    score = _score()
    s = _stats(_play(score), score)
    assert abs(s["log_tempo_ratio"]) < 0.01
    assert s["local_tempo_std"] < 0.01 and s["onset_deviation_ms"] < 1.0
    assert abs(s["articulation_log_mean"]) < 0.05
    assert s["velocity_score_corr"] > 0.99
    assert s["extra_note_share"] == 0.0 and s["missed_note_share"] == 0.0


def test_tempo_rubato_and_ritardando_are_measured() -> None:
    score = _score()
    assert _stats(_play(score, tempo=1.25), score)["log_tempo_ratio"] == pytest.approx(np.log(1.25), abs=0.02)
    # A steady slowing down over the last quarter: positive final_ritardando, negative trend.
    end = score.onsets.max()

    def rit(t: np.ndarray) -> np.ndarray:
        late = np.clip(t - 0.75 * end, 0, None)
        return t + 0.8 * late**2 / (0.25 * end)

    s = _stats(_play(score, warp=rit), score)
    plain = _stats(_play(score), score)
    assert s["final_ritardando"] > 0.1 > plain["final_ritardando"]
    assert s["tempo_trend"] < plain["tempo_trend"]
    assert s["local_tempo_std"] > plain["local_tempo_std"] + 0.05
    # Onset jitter (uneven playing) raises the deviation from the smoothed tempo map.
    assert _stats(_play(score, jitter=0.02), score)["onset_deviation_ms"] > 8.0


def test_articulation_dynamics_and_accuracy() -> None:
    score = _score()
    stacc = _stats(_play(score, dur_scale=0.3), score)
    assert stacc["articulation_log_mean"] < -0.8 and stacc["staccato_share"] > 0.9
    legato = _stats(_play(score, dur_scale=1.8), score)
    assert legato["overlap_share"] > 0.9
    # Ignoring the notated dynamics (flat velocity) kills the correlation; exaggerating them widens the range.
    flat = _stats(_play(score, vel=lambda v: np.full_like(v, 70.0) + (v % 3)), score)
    assert abs(flat["velocity_score_corr"]) < 0.5
    wide = _stats(_play(score, vel=lambda v: np.clip(64 + 2.0 * (v - 64), 1, 127)), score)
    assert wide["velocity_score_slope"] == pytest.approx(2.0, abs=0.3)
    assert wide["velocity_range_ratio"] > 0.3
    # Dropping every fourth note is a missed-note share of about 1/4; no extra notes.
    perf = _play(score)
    keep = np.arange(len(perf.notes)) % 4 != 0
    missed = _stats(Performance(perf.notes[keep]), score)
    assert missed["missed_note_share"] == pytest.approx(0.25, abs=0.03)
    assert missed["extra_note_share"] < 0.02


def test_full_vector_layout_and_missing_score() -> None:
    score = _score()
    perf = _play(score)
    full = performance_statistics(perf, score)
    assert full.shape == (len(ALL_STAT_NAMES),) and np.isfinite(full).all()
    assert full[SCORE_COLUMNS][-1] == 1.0
    alone = performance_statistics(perf)
    assert np.array_equal(alone[: len(STAT_NAMES)], full[: len(STAT_NAMES)])
    assert not alone[SCORE_COLUMNS].any()
    # A "score" sharing no note with the performance does not align: the score part stays empty.
    foreign = Performance(np.array([[0.0, 0.5, 30.0, 64.0], [0.5, 1.0, 31.0, 64.0]]))
    assert not performance_statistics(perf, foreign)[SCORE_COLUMNS].any()


class _Zero(nn.Module):
    hidden_size = 2

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.zeros(batch["stats"].shape[0], 2)


def _side_inputs(net: WithStatistics) -> list[torch.Tensor]:
    """Record the standardised statistics that reach the side MLP."""
    seen: list[torch.Tensor] = []
    net.side[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    return seen


def test_score_dropout_and_missing_scores_sit_at_the_training_mean() -> None:
    torch.manual_seed(0)
    net = WithStatistics(_Zero(), n_stats=6, side=4, score_columns=slice(3, 6), score_dropout=0.5)
    seen = _side_inputs(net)
    stats = torch.randn(400, 6) + 3.0
    stats[:, 5] = 1.0  # every row has a score
    net({"stats": stats})
    dropped = (seen[-1][:, 3:5] == 0).all(dim=1)
    assert 0.35 < dropped.float().mean() < 0.65
    assert (seen[-1][:, :3] != 0).all()  # the performance part is never touched
    assert ((seen[-1][:, 3:5] == 0).any(dim=1) == dropped).all()  # a row loses all its score part or none
    net.eval()
    net({"stats": stats})
    assert (seen[-1][:, 3:5] != 0).all()  # no dropout at evaluation
    unscored = stats.clone()
    unscored[:, 3:] = 0.0  # what featurize writes without a score: the flag at 0
    net({"stats": unscored})
    assert (seen[-1][:, 3:] == 0).all() and (seen[-1][:, :3] != 0).all()


def test_wide_part_starts_at_the_ridge_fit() -> None:
    """init_wide: predictions from the wide part alone match a ridge fit of the label logits."""
    from pianoeval.networks.heads import ScoreHeads

    torch.manual_seed(0)
    x = torch.randn(300, 5) * torch.tensor([1.0, 10.0, 0.1, 5.0, 2.0]) + 4.0
    w_true = torch.randn(5, 3) * 0.3
    y = torch.sigmoid(((x - x.mean(0)) / x.std(0)) @ w_true + 0.1 * torch.randn(300, 3))
    net = WithStatistics(_Zero(), n_stats=5, side=4, n_dims=3)
    alpha = net.init_wide(x[:200], y[:200], x[200:], y[200:])
    assert alpha in (0.1, 1.0, 10.0)  # strong signal: the dev split picks little shrinkage
    heads = ScoreHeads(net.hidden_size, n_dims=3)
    heads.init_bias(y[:200].mean(0))
    with torch.no_grad():
        heads.regression[-1].weight.zero_()
    net.eval(), heads.eval()
    batch = {"stats": x[200:]}
    pred = heads(*net.encode(batch))
    r2 = 1 - ((pred - y[200:]) ** 2).sum(0) / ((y[200:] - y[200:].mean(0)) ** 2).sum(0)
    assert (r2 > 0.8).all()
    # The moments are fixed: a training-mode forward of one odd batch does not move them.
    net.train()
    before = net.norm.running_mean.clone()
    net({"stats": x[:8] * 100})
    assert torch.equal(before, net.norm.running_mean)


def _score_curves(perf: Performance, score: Performance | None, fr: int = 20) -> dict[str, np.ndarray]:
    """The score-aligned curves of `perf` by name (score None: no score given)."""
    match = match_score(perf, score) if score is not None else None
    curves = extract_continuous_features(perf, fr, score, match)
    return {name: curves[:, FEATURE_NAMES.index(name)] for name in SCORE_CURVE_NAMES}


def test_score_curves_follow_the_score_frame_by_frame() -> None:
    score = _score()
    faithful = _score_curves(_play(score), score)
    assert (faithful["score_aligned"] == 1.0).all()
    for name in ("score_tempo", "score_timing", "score_articulation"):
        assert np.abs(faithful[name]).max() < 0.05, name
    # Notated dynamics, held: the first 8 beats (4 s) are marked 64, the next 8 are 96 (0.1 s offset).
    assert faithful["score_velocity"][20 * 2] == pytest.approx(64 / 127)
    assert faithful["score_velocity"][20 * 6] == pytest.approx(96 / 127)
    faster = _score_curves(_play(score, tempo=1.25), score)
    assert np.median(faster["score_tempo"]) == pytest.approx(np.log(1.25), abs=0.02)
    assert np.median(_score_curves(_play(score, dur_scale=0.3), score)["score_articulation"]) == pytest.approx(
        np.log(0.3) / 2, abs=0.05
    )


def test_a_late_chord_shows_on_its_own_frames() -> None:
    score = _score()
    perf = _play(score)
    notes = perf.notes.copy()
    beat = np.isclose(score.notes[:, 0], 5.0)  # the chord and melody note of beat 10 (score time 5 s)
    notes[beat, :2] += 0.1
    curves = _score_curves(Performance(notes), score)["score_timing"]
    late = round((5.1 + 0.1) * 20)  # performed at 5.2 s (the rendition starts at 0.1 s)
    assert curves[late] == pytest.approx(1.0, abs=0.15)
    assert np.abs(curves[: late - 1]).max() < 0.05 and np.abs(curves[late + 6 :]).max() < 0.05


def test_without_an_aligned_score_the_score_curves_are_zero(tiny_midi, tmp_path) -> None:
    from pianoeval.core.settings import FeaturesSettings
    from pianoeval.data.midi import load_performance, write_performance
    from pianoeval.symbolic.featurize import featurize_file

    score = _score()
    assert all((c == 0).all() for c in _score_curves(_play(score), None).values())
    features = FeaturesSettings(max_seq_len=512, frame_rate=20)
    perf_path = write_performance(_play(score), tmp_path / "perf.mid")
    score_path = write_performance(score, tmp_path / "score.mid")
    item = featurize_file("curves", str(perf_path), features, str(score_path))
    aligned = item["curves"][:, FEATURE_NAMES.index("score_aligned")]
    assert (aligned == 1).all()
    # The statistics read the same alignment as before the curves shared it.
    perf, notated = load_performance(perf_path), load_performance(score_path)
    assert np.array_equal(item["stats"].numpy(), performance_statistics(perf, notated))
    # Another piece as "score" does not align: the score curves and the score statistics stay at 0.
    other = featurize_file("curves", str(perf_path), features, str(tiny_midi()))
    assert (other["curves"][:, len(FEATURE_NAMES) - len(SCORE_CURVE_NAMES) :] == 0).all()
    assert other["stats"][-1] == 0


def _curve_encoder(score_dropout: float) -> nn.Module:
    from pianoeval.symbolic.networks import MultiScaleCurveEncoder

    n = len(FEATURE_NAMES)
    start = n - len(SCORE_CURVE_NAMES)
    return MultiScaleCurveEncoder(
        n, hidden=16, layers=1, heads=2, dropout=0.0, score_channels=(start, n), score_dropout=score_dropout
    )


def test_curve_score_dropout_zeroes_whole_rows_and_only_in_training() -> None:
    torch.manual_seed(0)
    enc = _curve_encoder(score_dropout=0.5)
    seen: list[torch.Tensor] = []
    enc.branches[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].transpose(1, 2).clone()))
    curves = torch.rand(200, 30, len(FEATURE_NAMES)) + 0.1
    start = len(FEATURE_NAMES) - len(SCORE_CURVE_NAMES)
    enc({"curves": curves})
    score_part = seen[-1][:, :, start:]
    dropped = (score_part == 0).all(dim=2).all(dim=1)
    assert 0.35 < dropped.float().mean() < 0.65
    assert ((score_part == 0).any(dim=2).any(dim=1) == dropped).all()  # a row loses all its score curves or none
    assert torch.equal(seen[-1][:, :, :start], curves[:, :, :start])  # the performance curves are never touched
    enc.eval()
    enc({"curves": curves})
    assert torch.equal(seen[-1], curves)


def test_wide_and_deep_drops_the_score_curves_with_the_score_statistics() -> None:
    """The rows whose score statistics are dropped are the rows whose score curves are dropped."""
    torch.manual_seed(0)
    enc = _curve_encoder(score_dropout=0.0)  # on its own it would never drop
    net = WithStatistics(enc, n_stats=6, side=4, score_columns=slice(3, 6), score_dropout=0.5)
    side = _side_inputs(net)
    seen: list[torch.Tensor] = []
    enc.branches[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].transpose(1, 2).clone()))
    stats = torch.randn(100, 6) + 3.0
    stats[:, 5] = 1.0
    net({"stats": stats, "curves": torch.rand(100, 20, len(FEATURE_NAMES)) + 0.1})
    start = len(FEATURE_NAMES) - len(SCORE_CURVE_NAMES)
    curves_dropped = (seen[-1][:, :, start:] == 0).all(dim=2).all(dim=1)
    stats_dropped = (side[-1][:, 3:5] == 0).all(dim=1)
    assert 0.3 < stats_dropped.float().mean() < 0.7
    assert torch.equal(curves_dropped, stats_dropped)
