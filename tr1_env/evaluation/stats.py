"""Which agents beat the benchmark, and with what confidence: inference on paired daily return series.

Input is one table, a column of daily net returns per agent over the same days (the benchmark one of them);
output is one table, a row per agent. Days are resampled with ``arch``'s stationary bootstrap
(:func:`tr1_env.evaluation.metrics.stationary_bootstrap`), one set of indices shared by every test of a call. The test
statistics are written here because arch 8.0's SPA and StepM are not the studentized tests their names promise
(see :func:`spa`) and its model confidence set fails on exact ties (see :func:`mcs_pvalues`).

Two questions, two tests:

* ``verdict`` (beats / indistinguishable from / worse than) is decided on *risk-adjusted* performance: the
  difference of per-day Sharpe ratios to the benchmark, Delta_k = SR_k - SR_0, studentized (Jobson-Korkie/Memmel
  standard error) and referred to its paired block-bootstrap distribution (the bootstrap-t of Ledoit & Wolf 2008),
  inside one two-sided Romano-Wolf step-down (:func:`stepm`) at family-wise ``alpha`` over the agents.
* ``spa_p`` / ``spa_p_all`` ask whether the *mean* daily return is above the benchmark's: Hansen's (2005)
  studentized SPA (loss = -return), consistent p-value. Its power is set by the information ratio of the daily
  difference, which is why :func:`min_detectable_ir` is stated in those units.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kurtosis, norm, skew

from tr1_env.evaluation.metrics import (
    PERIODS,
    daily_rf,
    day_counts,
    resampled_sharpe,
    sharpe,
    sharpe_ci,
    stationary_bootstrap,
)

__all__ = ["NO_SHARPE", "TOO_SHORT", "VERDICTS", "compare", "deflated_sharpe", "expected_max_sharpe",
           "days_to_verdict", "mcs_pvalues", "min_detectable_excess_sharpe", "min_detectable_ir", "spa", "stepm"]

#: Verdict of an agent against the benchmark, after multiple-testing control.
VERDICTS = ("beats", "indistinguishable from", "worse than")
#: Verdict when the series is shorter than ``min_days``: no p-value, no interval.
TOO_SHORT = "too short"
#: Verdict of an agent whose Sharpe ratio is undefined in the sample or in some resample (no variance).
NO_SHARPE = "n/a (no variance)"
_EULER = 0.5772156649015329


def spa(diffs: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """Hansen's (2005) SPA p-values (``lower``, ``consistent``, ``upper``) of H0: no column of ``diffs`` (n, k) has
    a positive mean. ``diffs`` are benchmark loss minus model loss (positive: the model is better), ``counts`` the
    :func:`~tr1_env.evaluation.metrics.day_counts` of the resamples.

    omega_k / sqrt(n) is the bootstrap standard deviation of the resampled mean; T = max(0, max_k dbar_k /
    (omega_k / sqrt(n))); T*_b = max(0, max_k (dbar*_bk - mu_k) / (omega_k / sqrt(n))) with mu_k = max(dbar_k, 0)
    (lower), dbar_k where its t-statistic is above -sqrt(2 log log n) and 0 elsewhere (consistent, Hansen eq.
    7-8), dbar_k (upper); p = share of b with T*_b >= T (1 when no model is better in sample).

    arch 8.0's ``SPA`` recentres the same way but compares the *unscaled* largest mean difference with the largest
    unscaled bootstrap mean: its ``studentize`` flag only feeds the variance into the recentring threshold, and
    ``True`` and ``False`` give the same p-value. A noisy model's mean then swamps a steady one's (a steady edge
    with t ~ 13 beside a noisy no-edge model: arch p ~ 0.23, Hansen's ~ 0). So the statistic is ours; the
    resampling stays arch's.
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    dbar = d.mean(axis=0)
    boot = counts @ d / n
    se = boot.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, dbar / se, np.where(dbar == 0, 0.0, np.sign(dbar) * np.inf))
        scale = np.where(se > 0, se, np.inf)  # a constant difference adds nothing to the bootstrap maximum
        observed = max(0.0, float(np.max(t)))
        threshold = -math.sqrt(2 * max(math.log(math.log(n)), 0.0)) if n > 1 else 0.0
        centres = {"lower": np.maximum(dbar, 0.0), "consistent": np.where(t >= threshold, dbar, 0.0), "upper": dbar}
        return {key: float(np.mean(np.maximum(0.0, ((boot - mu) / scale).max(axis=1)) >= observed))
                for key, mu in centres.items()}


def stepm(t: np.ndarray, z: np.ndarray, alpha: float, two_sided: bool = True) -> np.ndarray:
    """Romano & Wolf's (2005) StepM: -1 / 0 / +1 per column (rejected below / not rejected / rejected above).

    ``t`` (k,) are the observed studentized statistics, ``z`` (B, k) the bootstrap ones centred at the estimate,
    (theta*_bk - theta_k) / se_k, all from the same resamples. Step j: c_j is the (1 - alpha) quantile (inverted
    CDF) over b of the largest z_bk (|z_bk| when two-sided) over the columns not yet rejected; every remaining
    column with t_k (|t_k|) above c_j is rejected; stop when a step rejects nothing. Two-sided is one family at
    ``alpha`` for both directions of a three-way verdict; two one-sided families at ``alpha`` each hold only
    2 alpha.
    """
    t, z = np.asarray(t, dtype=float), np.asarray(z, dtype=float)
    stat, boot = (np.abs(t), np.abs(z)) if two_sided else (t, z)
    rejected = np.zeros(len(t), dtype=bool)
    while not rejected.all():
        c = np.quantile(boot[:, ~rejected].max(axis=1), 1 - alpha, method="inverted_cdf")
        new = ~rejected & (stat > c)
        if not new.any():
            break
        rejected |= new
    return np.where(rejected, np.sign(t), 0).astype(int)


def _jk_se(sr, sr0, rho, n: int):
    """Jobson-Korkie standard error of a per-day Sharpe difference SR - SR0 with Memmel's (2003) correction:
    sqrt([2 - 2 rho + (SR^2 + SR0^2)/2 - SR SR0 rho^2] / n) (normal returns); NaN where a ratio is infinite."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.maximum(2 - 2 * rho + (sr ** 2 + sr0 ** 2) / 2 - sr * sr0 * rho ** 2, 0.0) / n)


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """E[max Sharpe] of ``n_trials`` unskilled strategies whose Sharpe estimates have this variance (Bailey &
    Lopez de Prado 2014, eq. 6): the bar a selected strategy's Sharpe has to clear. 0 for a single trial."""
    if n_trials < 2 or not np.isfinite(sharpe_variance):
        return 0.0
    z = (1 - _EULER) * norm.ppf(1 - 1 / n_trials) + _EULER * norm.ppf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(sharpe_variance) * z)


def deflated_sharpe(sr: float, n_days: int, skewness: float, kurt: float, sr_benchmark: float) -> float:
    """P(true Sharpe > ``sr_benchmark``) given the estimate ``sr`` over ``n_days`` (all per period, not
    annualised), with non-normal returns (``kurt`` is Pearson's, 3 for a normal). With ``sr_benchmark`` from
    :func:`expected_max_sharpe` this is the deflated Sharpe ratio; with 0 the probabilistic one (PSR)."""
    denom = 1 - skewness * sr + (kurt - 1) / 4 * sr ** 2
    if n_days < 2 or not np.isfinite(sr) or not denom > 0:
        return float("nan")
    return float(norm.cdf((sr - sr_benchmark) * math.sqrt(n_days - 1) / math.sqrt(denom)))


def min_detectable_ir(n_days: int, alpha: float = 0.05, power: float = 0.8, n_tests: int = 1,
                      periods: int = PERIODS) -> float:
    """Smallest annualised information ratio (mean over standard deviation of the daily difference agent -
    benchmark) that a one-sided test at ``alpha`` (Bonferroni over ``n_tests``) detects with probability
    ``power`` after ``n_days`` days: (z_{1-alpha/m} + z_power) sqrt(P/T). Not a Sharpe-ratio difference."""
    if n_days < 2:
        return float("nan")
    return float((norm.ppf(1 - alpha / max(n_tests, 1)) + norm.ppf(power)) * math.sqrt(periods / n_days))


def min_detectable_excess_sharpe(n_days: int, sr: float, sr_benchmark: float, rho: float, alpha: float = 0.05,
                                 power: float = 0.8, n_tests: int = 1, periods: int = PERIODS) -> float:
    """Smallest annualised Sharpe-ratio difference to the benchmark that the two-sided verdict (family-wise
    ``alpha``, Bonferroni over ``n_tests``) detects with probability ``power``: (z_{1-alpha/2m} + z_power) times
    the Jobson-Korkie standard error with Memmel's (2003) correction (:func:`_jk_se`) at the observed per-day
    Sharpe ratios and correlation ``rho``, annualised."""
    if n_days < 2:
        return float("nan")
    z = norm.ppf(1 - alpha / (2 * max(n_tests, 1))) + norm.ppf(power)
    return float(z * _jk_se(sr, sr_benchmark, rho, n_days) * math.sqrt(periods))


def days_to_verdict(n_days: int, excess_sharpe: float, min_detectable: float, verdict: str,
                    min_days: int = 20) -> float:
    """Further days after which the current verdict could change if the observed Sharpe difference stayed what it
    is: 0 for a decided verdict (``beats``/``worse than``: at that effect more days only strengthen it), else the
    smallest k with :func:`min_detectable_excess_sharpe` over n + k days at or below |``excess_sharpe``|, and at
    least the days still missing to ``min_days``; inf when there is no difference (or no variance) to find.

    The detectable difference is z times the Jobson-Korkie-Memmel standard error, which at fixed Sharpe ratios
    and correlation falls as 1/sqrt(n): ``min_detectable`` (over ``n_days``) scales to n + k days as
    ``min_detectable * sqrt(n / (n + k))``, so k = ceil(n (min_detectable / |excess|)^2) - n."""
    if verdict in VERDICTS[::2]:
        return 0.0
    if verdict == NO_SHARPE or not (np.isfinite(excess_sharpe) and np.isfinite(min_detectable)) or excess_sharpe == 0:
        return float("inf")
    needed = math.ceil(n_days * (min_detectable / abs(excess_sharpe)) ** 2 - 1e-9)
    return float(max(needed - n_days, min_days - n_days, 0))


def _check(returns: pd.DataFrame, benchmark: str) -> None:
    """A benchmark column, and a finite number for every agent on every day (the tests pair the days)."""
    if benchmark not in returns.columns:
        raise ValueError(f"benchmark {benchmark!r} is not a column of the returns table ({list(returns.columns)})")
    values = returns.to_numpy(dtype=float)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        i, j = bad[0]
        day = returns.index[i]
        when = f"{day:%Y-%m-%d}" if isinstance(day, pd.Timestamp) else f"row {day}"
        why = ("a gap: the tests need paired series on the same days, so gaps are refused" if np.isnan(values[i, j])
               else "not a finite return")
        raise ValueError(f"return of {returns.columns[j]!r} on {when} is {values[i, j]}: {why}")


def mcs_pvalues(loss: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Hansen, Lunde & Nason's (2011) model confidence set p-value of each column of ``loss`` (n, k), T_R statistic:
    a model is in the (1 - alpha) set when its p-value is above alpha.

    t_ij = dbar_ij / sd_ij for the mean loss difference of every pair still in the set, sd_ij from the resamples
    (:func:`~tr1_env.evaluation.metrics.day_counts`); each step drops the model with the largest max_j t_ij, its p-value
    the share of resamples whose max over the remaining pairs of (d*_ij - dbar_ij) / sd_ij exceeds that t, kept
    monotone over the steps. Arch's ``MCS(method="R")`` computes the same (tested equal on its own indices) but
    raises ``IndexError`` when two models tie exactly, and its ``method="max"`` never ends when a loss difference
    has no variance (three models r, 0, -r). Here a pair with no variance in its difference is a tie (t = 0) when
    its mean is 0 and a certain ranking (t = +-inf) otherwise; models tied for the largest t leave together, and
    copies of one series left last stay together.
    """
    x = np.asarray(loss, dtype=float)
    n, k = x.shape
    mean, boot = x.mean(axis=0), counts @ (x - x.mean(axis=0)) / n  # resampled mean loss minus the sample's
    dbar = mean[:, None] - mean[None, :]
    centred = boot[:, :, None] - boot[:, None, :]
    sd = np.sqrt((centred ** 2).mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, dbar / sd, np.where(np.abs(dbar) > 1e-15, np.sign(dbar) * np.inf, 0.0))
        z = np.where(sd > 0, centred / sd, 0.0)
    p, left, running = np.ones(k), np.ones(k, dtype=bool), 0.0
    while left.sum() > 1:
        inside = np.flatnonzero(left)
        pairs = np.ix_(inside, inside)
        if not t[pairs].any() and not sd[pairs].any():  # copies of one series: the set, p = 1
            break
        worst = t[pairs].max(axis=1)
        stat = worst.max()
        running = max(running, float(np.mean(z[:, inside][:, :, inside].max(axis=(1, 2)) > stat)))
        out = inside[worst == stat]
        p[out], left[out] = running, False
    return p


def _verdicts(excess: np.ndarray, counts: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sharpe differences of columns 1.. to column 0 (per day), their two-sided bootstrap p-values, and the
    StepM verdict codes (+1 beats, 0, -1 worse, NaN where a Sharpe ratio is undefined in sample or resample).

    Bootstrap-t in the manner of Ledoit & Wolf (2008): t_k = Delta_k / se_k and z_bk = (Delta*_bk - Delta_k) /
    se*_bk, each standard error from its own sample's moments (Jobson-Korkie/Memmel); the block resampling carries
    the serial dependence and fat tails that the i.i.d. formula leaves out, since both sides use the same formula.
    """
    n = len(excess)
    sr, boot, rho, rho_star = resampled_sharpe(excess, counts)
    with np.errstate(invalid="ignore"):  # a resample with no variance: inf - inf, the agent's verdict is n/a
        delta, delta_star = sr[1:] - sr[0], boot[:, 1:] - boot[:, :1]
    se, se_star = _jk_se(sr[1:], sr[0], rho[1:], n), _jk_se(boot[:, 1:], boot[:, :1], rho_star[:, 1:], n)
    defined = np.isfinite(delta) & np.isfinite(delta_star).all(axis=0) & (se > 0) & (se_star > 0).all(axis=0)
    codes, p = np.full(len(delta), np.nan), np.full(len(delta), np.nan)
    copies = np.isfinite(delta) & (se == 0)  # the benchmark's own series: no difference on any resample
    codes[copies], p[copies] = 0, 1.0
    if defined.any():
        t = delta[defined] / se[defined]
        z = (delta_star[:, defined] - delta[defined]) / se_star[:, defined]
        codes[defined] = stepm(t, z, alpha)
        p[defined] = np.mean(np.abs(z) >= np.abs(t), axis=0)
    return delta, p, codes


def compare(returns: pd.DataFrame, benchmark: str = "buy_and_hold", alpha: float = 0.05, reps: int = 1000,
            block: float = 5.0, seed: int = 0, rf: float = 0.04, periods: int = PERIODS, min_days: int = 20,
            trials: int = 0) -> pd.DataFrame:
    """One row per column of ``returns`` (paired daily net returns, no gaps), ranked by Sharpe.

    Columns: ``n_days``, ``cr``, ``sharpe`` with its (1 - alpha) bootstrap interval ``sharpe_lo/hi``
    (:func:`tr1_env.evaluation.metrics.sharpe_ci`; ``sharpe_ci_note`` says why it is n/a), ``excess_sharpe`` (minus the
    benchmark's, annualised) with ``excess_sharpe_p`` (its two-sided studentized bootstrap p-value, per agent) and
    ``min_detectable_excess_sharpe`` (80% power at the verdict's family-wise ``alpha``), ``spa_p`` (Hansen's SPA
    p-value of "this agent's mean return is not above the benchmark's"), ``in_mcs`` (the model confidence set of
    the best agents at ``alpha``, benchmark included, :func:`mcs_pvalues`), ``psr`` (probabilistic Sharpe ratio,
    P(true Sharpe > 0)),
    ``deflated_sharpe`` (PSR against the expected best of ``trials`` unskilled trials; NaN for the benchmark, which
    is no trial) and ``verdict`` (see the module docstring). Fewer than ``min_days`` days: verdict ``too short``,
    p-values, intervals and the MCS n/a.

    The deflated Sharpe's SR0 (Bailey & Lopez de Prado 2014, eq. 6) takes ``trials`` (0: the agents in the table)
    and, as the variance of the trials' Sharpe estimates, 1 / (n - 1): the sampling variance of a per-day Sharpe
    estimate under the null of unskilled trials (their Sharpe ratios are unknown when a researcher states how many
    configurations were tried, and the spread of unlike agents here would let a bad agent deflate a good one).

    ``attrs`` carry the whole-family numbers: ``spa_p_all`` (SPA over all agents at once), ``min_detectable_ir``
    (80% power, one-sided, Bonferroni over the agents), ``n_trials``, ``alpha``, ``min_days``.
    """
    _check(returns, benchmark)
    names = [benchmark, *[c for c in returns.columns if c != benchmark]]
    agents, n = names[1:], len(returns)
    r = returns[names].to_numpy(dtype=float)
    excess = r - daily_rf(rf, periods)
    n_trials = trials or len(agents)
    sr0 = expected_max_sharpe(n_trials, 1 / (n - 1)) if n > 1 else float("nan")
    short = n < min_days
    cis = sharpe_ci(r, rf, reps, 1 - alpha, block, seed, periods)
    rows = []
    for j, name in enumerate(names):
        x = excess[:, j]
        sr = sharpe(r[:, j], rf, periods) / math.sqrt(periods)
        moments = (float(skew(x)), float(kurtosis(x, fisher=False))) if x.std() > 0 else (np.nan, np.nan)
        ci = cis[j]
        rows.append({
            "agent": name, "n_days": n, "cr": float(np.prod(1 + r[:, j]) - 1), "sharpe": sr * math.sqrt(periods),
            "sharpe_lo": np.nan if short else ci[0], "sharpe_hi": np.nan if short else ci[1],
            "sharpe_ci_note": "n/a: too short" if short else ci.reason,
            "psr": deflated_sharpe(sr, n, *moments, 0.0),
            "deflated_sharpe": np.nan if j == 0 else deflated_sharpe(sr, n, *moments, sr0),
            "min_detectable_excess_sharpe": np.nan if j == 0 else min_detectable_excess_sharpe(
                n, sr, sharpe(r[:, 0], rf, periods) / math.sqrt(periods), float(np.corrcoef(r[:, j], r[:, 0])[0, 1])
                if x.std() > 0 and r[:, 0].std() > 0 else np.nan, alpha, 0.8, len(agents), periods),
        })
    table = pd.DataFrame(rows).set_index("agent")
    table["excess_sharpe"] = table["sharpe"] - table.loc[benchmark, "sharpe"]
    table["excess_sharpe_p"], table["spa_p"], table["in_mcs"] = np.nan, np.nan, None
    table["verdict"] = TOO_SHORT
    table.loc[benchmark, "verdict"] = "benchmark"
    spa_all = float("nan")
    if agents and not short:
        counts = day_counts(stationary_bootstrap(n, reps, block, np.random.default_rng(seed)))
        diffs = r[:, 1:] - r[:, :1]  # benchmark loss - agent loss, loss = -return
        table.loc[agents, "spa_p"] = [spa(diffs[:, [k]], counts)["consistent"] for k in range(len(agents))]
        spa_all = spa(diffs, counts)["consistent"]
        _, p, codes = _verdicts(excess, counts, alpha)
        table.loc[agents, "excess_sharpe_p"] = p
        table.loc[agents, "verdict"] = [NO_SHARPE if np.isnan(c) else VERDICTS[1 - int(c)] for c in codes]
        table["in_mcs"] = pd.Series(mcs_pvalues(-r, counts) > alpha, index=names)
    elif not short:
        table["in_mcs"] = True
    columns = ["n_days", "cr", "sharpe", "sharpe_lo", "sharpe_hi", "sharpe_ci_note", "excess_sharpe",
               "excess_sharpe_p", "min_detectable_excess_sharpe", "spa_p", "in_mcs", "psr", "deflated_sharpe",
               "verdict"]
    table = table[columns].sort_values("sharpe", ascending=False, na_position="last")
    table.attrs = {"spa_p_all": spa_all, "n_trials": n_trials, "alpha": alpha, "min_days": min_days,
                   "min_detectable_ir": min_detectable_ir(n, alpha, 0.8, max(len(agents), 1), periods)}
    return table
