"""Multi-agent inference: known edges are found, identical agents are not, closed forms match hand numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tr1_env import metrics, stats


def _market(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0004, 0.012, n)


def test_known_edge_is_found_and_the_inferior_agent_leaves_the_confidence_set():
    n = 750
    rng = np.random.default_rng(1)
    bh = _market(n, 0)
    table = pd.DataFrame({
        "buy_and_hold": bh,
        "edge": bh + 0.002 + rng.normal(0, 0.004, n),  # +50 %/year over the benchmark, information ratio ~8
        "twin": bh + rng.normal(0, 0.004, n),           # the benchmark plus noise: no edge
        "loser": bh - 0.003 + rng.normal(0, 0.004, n),
    })
    out = stats.compare(table, reps=300, seed=0)
    assert out.loc["edge", "verdict"] == "beats" and out.loc["edge", "spa_p"] < 0.01
    assert out.loc["twin", "verdict"] == "indistinguishable from" and out.loc["twin", "spa_p"] > 0.05
    assert out.loc["loser", "verdict"] == "worse than" and out.loc["loser", "spa_p"] == 1.0  # not better in sample
    assert out.loc["buy_and_hold", "verdict"] == "benchmark"
    assert list(out.index[out["in_mcs"]]) == ["edge"]  # the MCS keeps the best and excludes every inferior agent
    assert out.attrs["spa_p_all"] < 0.01
    assert list(out.index)[0] == "edge" and out.loc["edge", "excess_sharpe"] > 2


def test_identical_agents_reject_at_about_alpha():
    """Agents drawn from the benchmark's own distribution: SPA rejects in about alpha of the seeds, no more."""
    n, trials, alpha = 250, 60, 0.2
    rejections, kept = 0, 0
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        table = pd.DataFrame({"buy_and_hold": rng.normal(0.0004, 0.01, n), "same": rng.normal(0.0004, 0.01, n)})
        out = stats.compare(table, alpha=alpha, reps=100, seed=seed)
        rejections += out.loc["same", "spa_p"] < alpha
        kept += bool(out["in_mcs"].all())
    rate = rejections / trials
    assert 0.08 <= rate <= 0.35, rate  # alpha 0.2; a binomial(60, 0.2) stays in this band with probability > 0.98
    assert kept / trials >= 0.6       # the MCS keeps both equal agents most of the time


def test_closed_forms_against_hand_numbers():
    # one test at 5 %, 80 % power, one year: (1.6449 + 0.8416) * sqrt(252 / 252)
    assert stats.min_detectable_sharpe(252) == pytest.approx(2.4865, abs=1e-3)
    assert stats.min_detectable_sharpe(62) == pytest.approx(2.4865 * math.sqrt(252 / 62), abs=1e-3)  # ~5.0
    # Bailey & Lopez de Prado's setting: SR 2.5/yr over 1250 days, 100 trials of annualised variance 0.5,
    # skew -3, kurtosis 10; by hand: SR0 = sqrt(0.5/250) * (0.4228 * 2.3263 + 0.5772 * 2.6797) = 0.1132 per day,
    # z = (0.1581 - 0.1132) * sqrt(1249) / sqrt(1 + 3 * 0.1581 + 2.25 * 0.1581^2) = 1.284, DSR = 0.9004 (the
    # paper's worked example prints SR0 = 0.1132 and DSR = 0.9004)
    sr0 = stats.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=2e-4)
    assert stats.deflated_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=2e-3)
    assert stats.expected_max_sharpe(1, 0.3) == 0.0
    assert stats.deflated_sharpe(0.0, 100, 0.0, 3.0, 0.0) == pytest.approx(0.5)


def test_hand_written_bootstrap_agrees_with_arch():
    """metrics.sharpe_ci (vectorised, used per table cell) and arch's StationaryBootstrap give the same interval."""
    r = _market(500, 3)
    ours = metrics.sharpe_ci(r, n_boot=4000, seed=1)
    theirs = stats.sharpe_interval(r, reps=4000, seed=1)
    assert ours == pytest.approx(theirs, abs=0.15)  # Monte Carlo error of a 2.5 % quantile at 4000 draws ~0.05
    assert ours[0] < metrics.sharpe(r) < ours[1]


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="benchmark"):
        stats.compare(pd.DataFrame({"a": [0.0, 0.1, 0.2]}))
    with pytest.raises(ValueError, match="gaps"):
        stats.compare(pd.DataFrame({"buy_and_hold": [0.01, -0.01, 0.0], "a": [0.0, np.nan, 0.0]}))


def test_every_agent_worse_is_a_verdict_not_a_crash():
    """arch 8.0's StepM fails when every remaining model is superior; the verdicts still come out."""
    bh = _market(400, 5)
    rng = np.random.default_rng(6)
    table = pd.DataFrame({"buy_and_hold": bh, "a": bh - 0.004 + rng.normal(0, 0.002, 400),
                          "b": bh - 0.003 + rng.normal(0, 0.002, 400)})
    out = stats.compare(table, reps=200)
    assert list(out.loc[["a", "b"], "verdict"]) == ["worse than", "worse than"]


def test_copies_of_a_series_share_their_verdicts():
    """Two agents with the very same days (a plain and an anonymized replay that agree) and a copy of the benchmark."""
    bh = _market(300, 8)
    edge = bh + 0.003 + np.random.default_rng(9).normal(0, 0.003, 300)
    out = stats.compare(pd.DataFrame({"buy_and_hold": bh, "copy": bh, "a": edge, "a+anon": edge}), reps=200)
    assert out.loc["copy", "spa_p"] == 1.0 and out.loc["copy", "verdict"] == "indistinguishable from"
    assert out.loc["a", "in_mcs"] and out.loc["a+anon", "in_mcs"] and not out.loc["copy", "in_mcs"]
    assert list(out.loc[["a", "a+anon"], "verdict"]) == ["beats", "beats"]
