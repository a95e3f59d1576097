"""Multi-agent inference: known edges are found, identical agents are not, closed forms match hand numbers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from tr1_env.evaluation import metrics, stats


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
    # one test at 5 %, 80 % power, one year: (1.6449 + 0.8416) * sqrt(252 / 252), in information-ratio units
    assert stats.min_detectable_ir(252) == pytest.approx(2.4865, abs=1e-3)
    assert stats.min_detectable_ir(62) == pytest.approx(2.4865 * math.sqrt(252 / 62), abs=1e-3)  # ~5.0
    # Jobson-Korkie/Memmel at rho 0.5, per-day Sharpe 0.1 and 0.05, 500 days, two-sided 5 % over 2 agents:
    # Var = (2 - 1 + (0.01 + 0.0025) / 2 - 0.005 * 0.25) / 500 = 1.005 / 500, z = 2.2414 + 0.8416
    mde = stats.min_detectable_excess_sharpe(500, 0.1, 0.05, 0.5, 0.05, 0.8, 2)
    assert mde == pytest.approx(3.0830 * math.sqrt(1.005 / 500 * 252), abs=1e-3)
    # Bailey & Lopez de Prado's setting: SR 2.5/yr over 1250 days, 100 trials of annualised variance 0.5,
    # skew -3, kurtosis 10; by hand: SR0 = sqrt(0.5/250) * (0.4228 * 2.3263 + 0.5772 * 2.6797) = 0.1132 per day,
    # z = (0.1581 - 0.1132) * sqrt(1249) / sqrt(1 + 3 * 0.1581 + 2.25 * 0.1581^2) = 1.284, DSR = 0.9004 (the
    # paper's worked example prints SR0 = 0.1132 and DSR = 0.9004)
    sr0 = stats.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=2e-4)
    assert stats.deflated_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=2e-3)
    assert stats.expected_max_sharpe(1, 0.3) == 0.0
    assert stats.deflated_sharpe(0.0, 100, 0.0, 3.0, 0.0) == pytest.approx(0.5)


def test_spa_and_stepm_against_a_worked_example():
    """Hansen's studentized SPA and Romano-Wolf's StepM recomputed by loops over explicit resamples."""
    d = np.array([[0.3, -1.0], [-0.4, 2.0], [0.2, -1.5], [0.4, 1.0], [-0.3, -0.5], [0.1, 0.3]])  # n 6, k 2
    idx = np.array([[0, 1, 2, 3, 4, 5], [1, 1, 2, 2, 3, 3], [5, 0, 1, 2, 4, 4], [3, 4, 5, 0, 0, 1],
                    [2, 3, 4, 5, 5, 5], [0, 0, 0, 1, 1, 1], [4, 5, 0, 1, 2, 3], [2, 2, 2, 2, 1, 0]])
    n, B = 6, len(idx)
    dbar = [sum(d[t, k] for t in range(n)) / n for k in range(2)]
    means = [[sum(d[i, k] for i in row) / n for k in range(2)] for row in idx]
    se = [math.sqrt(sum((m[k] - sum(x[k] for x in means) / B) ** 2 for m in means) / (B - 1)) for k in range(2)]
    t = [dbar[k] / se[k] for k in range(2)]
    T = max(0.0, *t)
    cut = -math.sqrt(2 * math.log(math.log(n)))
    mu = [dbar[k] if t[k] >= cut else 0.0 for k in range(2)]  # consistent recentring
    T_star = [max(0.0, *[(m[k] - mu[k]) / se[k] for k in range(2)]) for m in means]
    p = sum(x >= T for x in T_star) / B
    assert stats.spa(d, metrics.day_counts(idx))["consistent"] == pytest.approx(p)
    assert stats.spa(d, metrics.day_counts(idx))["upper"] >= stats.spa(d, metrics.day_counts(idx))["lower"]
    assert p == pytest.approx(0.5)  # by the loops above; 0 < p < 1, so a wrong scale or centre moves it

    # StepM, two-sided, alpha 0.25 over 8 resamples: c = 6th smallest of max_k |z_bk| (inverted CDF)
    tt = np.array([5.0, 0.5, -3.0])
    z = np.array([[0.1, 1.0, -0.2], [2.0, -0.3, 0.5], [-0.4, 0.2, 2.5], [0.3, -2.8, 0.1],
                  [1.2, 0.0, -0.9], [-0.6, 1.9, 0.4], [0.2, -0.1, 3.5], [0.8, 0.7, -1.1]])
    c1 = sorted(np.abs(z).max(axis=1))[5]                     # 2.5: rejects 5.0 and -3.0
    c2 = sorted(np.abs(z[:, [1]]).max(axis=1))[5]             # 1.0: 0.5 stays
    assert c1 == pytest.approx(2.5) and c2 == pytest.approx(1.0)
    assert list(stats.stepm(tt, z, 0.25)) == [1, 0, -1]
    assert list(stats.stepm(tt, z, 0.25, two_sided=False)) == [1, 0, 0]


def _steady_edge(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    bh = _market(n, 10)
    return pd.DataFrame({"buy_and_hold": bh, "steady": bh + rng.normal(3e-4, 5e-4, n),
                         "noisy": bh + rng.normal(0.0, 0.03, n)}, index=pd.bdate_range("2023-01-02", periods=n))


def test_steady_edge_beats_next_to_a_noisy_agent():
    """The issue's example: arch's unscaled SPA says p ~ 0.23; the studentized SPA and the verdict find the edge."""
    out = stats.compare(_steady_edge(), reps=500, seed=0)
    assert out.attrs["spa_p_all"] < 0.05
    assert out.loc["steady", "verdict"] == "beats" and out.loc["noisy", "verdict"] != "beats"


def test_null_families_hold_the_family_wise_alpha():
    """400 families of 3 agents whose true Sharpe equals the benchmark's (correlations 0.3, 0.6, 0.9 with it): a
    verdict other than "indistinguishable" in at most alpha of them, plus Monte Carlo error. Two one-sided
    step-downs at alpha each (the old verdict) call about twice as many."""
    n, reps, families, alpha = 250, 300, 400, 0.1
    rng = np.random.default_rng(5)
    mix = np.array([1.0, 0.3, 0.6, 0.9])
    called = called_twice = 0
    for _ in range(families):
        counts = metrics.day_counts(metrics.stationary_bootstrap(n, reps, 5.0, rng))
        z0 = rng.normal(size=(n, 1))
        excess = 0.0005 + 0.01 * (mix * z0 + np.sqrt(1 - mix ** 2) * rng.normal(size=(n, 4)))
        _, _, codes = stats._verdicts(excess, counts, alpha)
        called += bool(np.any(codes != 0))
        _, _, up = stats._verdicts(excess, counts, 2 * alpha)  # two-sided at 2 alpha = one-sided at alpha each way
        called_twice += bool(np.any(up != 0))
    share = called / families
    assert share <= alpha + 2.5 * math.sqrt(alpha * (1 - alpha) / families), share  # 0.1375
    assert called_twice / families > alpha + 2.5 * math.sqrt(alpha * (1 - alpha) / families)


def test_rarely_trading_agent_gets_an_explicit_na():
    bh = _market(300, 12)
    rare = np.zeros(300)
    rare[[40, 150, 260]] = [0.01, -0.02, 0.015]  # trades on 3 of 300 days
    ci = metrics.sharpe_ci(rare, n_boot=500, seed=0)
    assert np.isnan(ci[0]) and np.isnan(ci[1]) and "no variance" in ci.reason
    out = stats.compare(pd.DataFrame({"buy_and_hold": bh, "rare": rare}), reps=300)
    assert np.isnan(out.loc["rare", "sharpe_lo"]) and "no variance" in out.loc["rare", "sharpe_ci_note"]
    assert out.loc["rare", "verdict"] == stats.NO_SHARPE
    # the leaderboard's interval is the per-ticker tables' function, on the same seed
    assert (out.loc["buy_and_hold", "sharpe_lo"], out.loc["buy_and_hold", "sharpe_hi"]) == pytest.approx(tuple(
        metrics.sharpe_ci(bh, n_boot=300, level=0.95, seed=0)), rel=1e-12)


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="benchmark"):
        stats.compare(pd.DataFrame({"a": [0.0, 0.1, 0.2]}))
    with pytest.raises(ValueError, match="gaps"):
        stats.compare(pd.DataFrame({"buy_and_hold": [0.01, -0.01, 0.0], "a": [0.0, np.nan, 0.0]}))
    days = pd.bdate_range("2024-01-02", periods=3)
    with pytest.raises(ValueError, match=r"'a' on 2024-01-03 is inf"):
        stats.compare(pd.DataFrame({"buy_and_hold": [0.01, -0.01, 0.0], "a": [0.0, np.inf, 0.0]}, index=days))


@pytest.mark.parametrize("n", [1, 2, 3, 19])
def test_short_samples_are_too_short(n):
    """1 day used to give spa_p 0, 3 days of a constant +0.1 % "beats", 2 days a NaN CI with a warning."""
    bh = _market(n, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.compare(pd.DataFrame({"buy_and_hold": bh, "a": bh + 0.001}), reps=100)
    assert out.loc["a", "verdict"] == stats.TOO_SHORT
    assert np.isnan(out.loc["a", "spa_p"]) and np.isnan(out.loc["a", "excess_sharpe_p"])
    assert np.isnan(out.loc["a", "sharpe_lo"]) and np.isnan(out.attrs["spa_p_all"])
    assert stats.compare(pd.DataFrame({"buy_and_hold": _market(20, 13), "a": _market(20, 13) + 0.001}),
                         reps=100).loc["a", "verdict"] != stats.TOO_SHORT  # min_days 20 by default


def test_ties_in_the_confidence_set_are_no_crash():
    """buy-and-hold, always_hold and always-short at zero cost: arch's R statistic raised IndexError on the tie."""
    bh = _market(250, 14)
    out = stats.compare(pd.DataFrame({"buy_and_hold": bh, "hold": np.zeros(250), "short": -bh}), reps=200)
    assert out["in_mcs"].notna().all() and out.loc["hold", "verdict"] == stats.NO_SHARPE


def test_deflated_sharpe_column_recomputed_from_its_definition():
    """Skew, Pearson kurtosis, SR0 from the trial count and 1/(n-1), by hand; the benchmark is no trial (PSR)."""
    n = 600
    rng = np.random.default_rng(15)
    fat = pd.DataFrame({"buy_and_hold": 0.0008 + 0.01 * rng.standard_t(3, n),
                        "a": 0.002 + 0.01 * rng.standard_t(3, n), "b": 0.0005 + 0.012 * rng.standard_t(4, n)})
    for trials in (0, 40):
        out = stats.compare(fat, reps=100, trials=trials)
        n_trials = trials or 2
        g = 0.5772156649015329
        sr0 = math.sqrt(1 / (n - 1)) * ((1 - g) * norm.ppf(1 - 1 / n_trials)
                                        + g * norm.ppf(1 - 1 / (n_trials * math.e)))
        assert out.attrs["n_trials"] == n_trials
        for name in fat.columns:
            x = fat[name].to_numpy() - metrics.daily_rf(0.04)
            c = x - x.mean()
            g3, g4 = np.mean(c ** 3) / np.mean(c ** 2) ** 1.5, np.mean(c ** 4) / np.mean(c ** 2) ** 2
            sr = x.mean() / x.std(ddof=1)
            psr = norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2))
            dsr = norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2))
            assert out.loc[name, "psr"] == pytest.approx(psr, abs=1e-9)
            if name == "buy_and_hold":
                assert np.isnan(out.loc[name, "deflated_sharpe"])
            else:
                assert out.loc[name, "deflated_sharpe"] == pytest.approx(dsr, abs=1e-9)


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


def test_confidence_set_equals_arch_where_arch_runs():
    """On arch's own resamples, the T_R elimination gives arch's MCS p-values (no ties here)."""
    from arch.bootstrap import MCS

    rng = np.random.default_rng(21)
    loss = pd.DataFrame(rng.normal(0, 0.01, (300, 4)) + [0.0, 0.0005, 0.001, 0.003], columns=list("abcd"))
    arch_mcs = MCS(loss, size=0.1, reps=200, block_size=5, method="R", seed=3)
    arch_mcs.compute()
    counts = metrics.day_counts(np.array(arch_mcs._bootstrap_indices))
    ours = pd.Series(stats.mcs_pvalues(loss.to_numpy(), counts), index=loss.columns)
    theirs = arch_mcs.pvalues["Pvalue"]
    assert ours.reindex(theirs.index).to_numpy() == pytest.approx(theirs.to_numpy())
    assert theirs["d"] < 0.1 < theirs["a"] < theirs["c"] < 1  # the worst leaves; p-values between 0 and 1 agree too
