"""Metrics against empyrical and quantstats on the same returns, hit rate by hand, the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tr1_env.evaluation import metrics as m


@pytest.fixture
def returns() -> pd.Series:
    rng = np.random.default_rng(7)
    return pd.Series(rng.normal(0.0008, 0.015, 250), index=pd.bdate_range("2024-01-02", periods=250))


def test_agrees_with_empyrical(returns):
    empyrical = pytest.importorskip("empyrical")
    rf = 0.04
    assert m.sharpe(returns, rf) == pytest.approx(empyrical.sharpe_ratio(returns, risk_free=m.daily_rf(rf)), rel=1e-10)
    assert m.sharpe(returns, 0) == pytest.approx(empyrical.sharpe_ratio(returns), rel=1e-10)
    assert m.max_drawdown(returns) == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-10)
    assert m.annual_volatility(returns) == pytest.approx(empyrical.annual_volatility(returns), rel=1e-10)
    assert m.cumulative_return(returns) == pytest.approx(empyrical.cum_returns_final(returns), rel=1e-10)


def test_agrees_with_quantstats(returns):
    qs = m.quantstats_stats(returns, returns * 0.5, rf=0.04)
    assert qs["qs_sharpe"] == pytest.approx(m.sharpe(returns, 0.04), rel=1e-10)
    assert qs["qs_beta"] == pytest.approx(2.0)
    with pytest.raises(TypeError, match="Series"):
        m.quantstats_stats(returns, "SPY")  # a ticker would make quantstats call Yahoo


def test_drawdown_counts_the_start_as_a_peak():
    assert m.max_drawdown([-0.1, 0.05]) == pytest.approx(0.1)
    assert m.max_drawdown([0.1, -0.5, 0.2]) == pytest.approx(0.5)


def test_hit_rate_by_hand():
    directions = [1, -1, 0, 1, -1, 1]
    forward = [0.02, 0.01, 0.5, -0.01, -0.03, 0.0]
    # calls: + vs + hit, - vs + miss, hold skipped, + vs - miss, - vs - hit, + vs 0 miss -> 2 / 5
    assert m.hit_rate(directions, forward) == pytest.approx(0.4)
    assert np.isnan(m.hit_rate([0, 0], [0.1, -0.1]))


def test_flat_series_has_no_sharpe():
    flat = np.zeros(60)
    assert np.isnan(m.sharpe(flat)) and np.isnan(m.sharpe_ci(flat, n_boot=50)[0])
    assert m.max_drawdown(flat) == 0 and m.cumulative_return(flat) == 0


def test_stationary_bootstrap_indices():
    idx = m.stationary_bootstrap(50, 200, 5.0, np.random.default_rng(0))
    assert idx.shape == (200, 50) and idx.min() >= 0 and idx.max() < 50
    steps = (np.diff(idx, axis=1) % 50 == 1).mean()
    assert 0.7 < steps < 0.9  # blocks continue with probability 1 - 1/5
    assert (m.stationary_bootstrap(50, 3, 5.0, np.random.default_rng(1)) ==
            m.stationary_bootstrap(50, 3, 5.0, np.random.default_rng(1))).all()


def test_sharpe_ci_is_seeded_and_brackets_the_estimate(returns):
    lo, hi = m.sharpe_ci(returns, n_boot=500, seed=3)
    assert (lo, hi) == m.sharpe_ci(returns, n_boot=500, seed=3)
    assert lo < m.sharpe(returns) < hi


def test_paired_sharpe_test(returns):
    better = returns + 0.002  # same risk, more return
    diff, p = m.sharpe_diff_test(better, returns, n_boot=500)
    assert diff > 0 and p < 0.05
    diff, p = m.sharpe_diff_test(returns - 0.002, returns, n_boot=500)
    assert diff < 0 and p > 0.5
    assert m.sharpe_diff_test(returns, returns, n_boot=100)[1] == 1.0
    with pytest.raises(ValueError, match="aligned"):
        m.sharpe_diff_test(returns[:10], returns, n_boot=10)


def test_investorbench_by_hand():
    positions, asset = np.array([1.0, -1.0, 0.0, 1.0]), np.array([0.1, 0.05, -0.2, -0.02])
    rewards = positions * np.log1p(asset)
    out = m.investorbench(positions, asset)
    assert out["cr"] == pytest.approx(rewards.sum())
    assert out["av"] == pytest.approx(rewards.std(ddof=1) * np.sqrt(252))
    assert out["sharpe"] == pytest.approx(rewards.mean() * 252 / out["av"])


def test_the_bootstrap_counts_and_a_benchmarks_resamples_are_remembered_per_series(returns):
    """A run tests every agent of a ticker against one benchmark: its resamples are drawn once, and keyed by its
    values (not its length), so another benchmark of as many days gets its own."""
    counts = m.seeded_counts(len(returns), 50, 5.0, 3)
    assert (counts == m.day_counts(m.stationary_bootstrap(len(returns), 50, 5.0, np.random.default_rng(3)))).all()
    assert counts is m.seeded_counts(len(returns), 50, 5.0, 3) and not counts.flags.writeable
    r = returns.to_numpy()
    for bench in (r, r[::-1].copy()):
        idx = m.seeded_bootstrap(len(r), 300, 5.0, 0)
        boot = m._sharpe(r[idx] + 0.001, 0.04, 252) - m._sharpe(bench[idx], 0.04, 252)
        diff = m.sharpe(r + 0.001) - m.sharpe(bench)
        expected = (1 + np.sum(boot - diff >= diff)) / (1 + len(boot))
        assert m.sharpe_diff_test(r + 0.001, bench, n_boot=300) == (diff, expected)
