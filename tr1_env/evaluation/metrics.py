"""Performance metrics of a daily return series: pure functions of arrays, no accounting, no I/O.

Conventions (Trading-R1's tables): returns are simple daily returns; Sharpe is annualised with sqrt(252) on
excess returns over a risk-free rate given per year (4% as in Trading-R1) and compounded down to a
day; standard deviations use ddof=1 (as empyrical and quantstats); MDD is reported as a positive
fraction, as the paper's tables print it. The InvestorBench variant used by FLAG-TRADER
is a separate function because its CR and Sharpe are defined on log rewards with no risk-free rate.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from tr1_env.execution import trading_reward

__all__ = ["PERIODS", "Interval", "annual_volatility", "cumulative_return", "daily_rf", "day_counts", "hit_rate",
           "investorbench", "max_drawdown", "quantstats_stats", "resampled_sharpe", "sharpe", "sharpe_ci",
           "sharpe_diff_ci", "sharpe_diff_test", "stationary_bootstrap"]

PERIODS = 252
_ZERO_STD = 1e-12  # below this a return series is constant and its Sharpe undefined
_FLAT = 1e-5  # a resample whose standard deviation is below this share of the sample's has no Sharpe ratio


def daily_rf(annual: float, periods: int = PERIODS) -> float:
    """The per-period rate that compounds to ``annual`` (what quantstats does with ``rf=``)."""
    return (1 + annual) ** (1 / periods) - 1


def cumulative_return(returns: Sequence[float]) -> float:
    """Compounded return over the whole series."""
    return float(np.prod(1 + np.asarray(returns, dtype=float)) - 1)


def _sharpe(returns: np.ndarray, rf_annual: float, periods: int) -> np.ndarray:
    """Sharpe along the last axis (bootstrap samples are rows); NaN where undefined."""
    excess = returns - daily_rf(rf_annual, periods)
    if excess.shape[-1] < 2:
        return np.full(excess.shape[:-1], np.nan)
    std = excess.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = excess.mean(axis=-1) / std * np.sqrt(periods)
    return np.where(std > _ZERO_STD, out, np.nan)


def sharpe(returns: Sequence[float], rf: float = 0.04, periods: int = PERIODS) -> float:
    """Annualised Sharpe ratio of excess daily returns; NaN for a constant series (a flat agent)."""
    return float(_sharpe(np.asarray(returns, dtype=float), rf, periods))


def max_drawdown(returns: Sequence[float]) -> float:
    """Largest peak-to-trough fall of the equity curve, the starting equity counted as a peak; positive."""
    equity = np.cumprod(np.concatenate([[1.0], 1 + np.asarray(returns, dtype=float)]))
    return float(np.max(1 - equity / np.maximum.accumulate(equity)))


def annual_volatility(returns: Sequence[float], periods: int = PERIODS) -> float:
    """Standard deviation of daily returns times sqrt(periods)."""
    r = np.asarray(returns, dtype=float)
    return float(r.std(ddof=1) * np.sqrt(periods)) if len(r) > 1 else float("nan")


def hit_rate(directions: Sequence[int], forward_returns: Sequence[float]) -> float:
    """Share of directional calls (non-zero direction) whose sign matches the return that followed.

    A flat next period counts as a miss; HOLDs are neither hits nor misses. NaN with no directional call.
    """
    d = np.sign(np.asarray(directions, dtype=float))
    f = np.sign(np.asarray(forward_returns, dtype=float))
    calls = d != 0
    return float(np.mean(d[calls] == f[calls])) if calls.any() else float("nan")


def stationary_bootstrap(n: int, n_boot: int, mean_block: float, rng: np.random.Generator) -> np.ndarray:
    """Politis-Romano stationary bootstrap indices from ``arch``'s sampler, shape ``(n_boot, n)``.

    Blocks of geometric length (mean ``mean_block``) start at uniform positions and wrap around, which keeps the
    short-range dependence of daily returns that an i.i.d. bootstrap would destroy. Every interval and test of
    the project resamples days with these indices, so a CI and a test on the same seed see the same days.
    """
    from arch.bootstrap import StationaryBootstrap

    sampler = StationaryBootstrap(max(mean_block, 1.0), np.empty(n), seed=rng)
    return np.stack([sampler.update_indices() for _ in range(n_boot)]) if n_boot else np.empty((0, n), dtype=int)


@lru_cache(maxsize=8)
def seeded_bootstrap(n: int, n_boot: int, mean_block: float, seed: int) -> np.ndarray:
    """:func:`stationary_bootstrap` from a fresh generator seeded ``seed``, remembered (read-only): every agent x
    ticker of a run with as many days draws the same indices, once instead of once per row."""
    out = stationary_bootstrap(n, n_boot, mean_block, np.random.default_rng(seed))
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4)
def seeded_counts(n: int, n_boot: int, mean_block: float, seed: int) -> np.ndarray:
    """:func:`day_counts` of :func:`seeded_bootstrap`, remembered (read-only): every interval of a run with as many
    days counts the same resamples, once instead of once per agent x ticker."""
    out = day_counts(seeded_bootstrap(n, n_boot, mean_block, seed))
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def _seeded_sharpes(series: bytes, n_boot: int, mean_block: float, seed: int, rf: float, periods: int) -> np.ndarray:
    """The resampled Sharpe ratios of a float64 series given as bytes, remembered: a benchmark every agent of a
    ticker is tested against is resampled once, not once per agent."""
    x = np.frombuffer(series)
    out = _sharpe(x[seeded_bootstrap(len(x), n_boot, mean_block, seed)], rf, periods)
    out.setflags(write=False)
    return out


class Interval(tuple):
    """``(lo, hi)``, unpacked like a pair; ``reason`` says why it is n/a (empty when it is defined)."""

    reason: str

    def __new__(cls, lo: float, hi: float, reason: str = "") -> "Interval":
        out = super().__new__(cls, (float(lo), float(hi)))
        out.reason = reason
        return out


def day_counts(indices: np.ndarray) -> np.ndarray:
    """How often each day is drawn in each resample, shape ``(B, n)``: a resampled mean of any daily series ``x``
    is then ``counts @ x / n``, one matrix product instead of a ``(B, n, k)`` copy."""
    reps, n = indices.shape
    flat = (indices + n * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * n).reshape(reps, n).astype(float)


def resampled_sharpe(excess: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-day Sharpe ratios of the columns of ``excess`` (n, k) and their correlations with column 0, in sample
    ((k,), (k,)) and in each resample ((B, k), (B, k)); NaN where a series has no variance in sample, +-inf (the
    sign of its resampled mean) where only the resample has none. Moments through :func:`day_counts`, on the
    series centred at its sample mean (no cancellation)."""
    x = np.asarray(excess, dtype=float)
    n = len(x)
    mean, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    y = x - mean
    m1, m2, m12 = counts @ y / n, counts @ (y * y) / n, counts @ (y * y[:, :1]) / n
    sd_star = np.sqrt(np.maximum(m2 - m1 * m1, 0.0) * n / (n - 1))
    flat = sd_star <= _FLAT * sd
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(sd > _ZERO_STD, mean / sd, np.nan)
        boot = np.where(flat, np.sign(m1 + mean) * np.inf, (m1 + mean) / sd_star)
        boot = np.where(sd > _ZERO_STD, boot, np.nan)
        rho = (y * y[:, :1]).sum(axis=0) / (n - 1) / (sd * sd[0])
        rho_star = (m12 - m1 * m1[:, :1]) * n / (n - 1) / (sd_star * sd_star[:, :1])
    return sr, boot, rho, rho_star


def sharpe_ci(returns, rf: float = 0.04, n_boot: int = 2000, level: float = 0.95, mean_block: float = 5.0,
              seed: int = 0, periods: int = PERIODS) -> Interval | list[Interval]:
    """Percentile confidence interval of the annualised Sharpe ratio under the stationary bootstrap: the project's
    only one (per-ticker tables and the leaderboard both call it). ``returns`` (n,) gives one interval, (n, k) one
    per column, every column resampled on the same days.

    A resample with no variance (an agent that trades on a few days, none of them drawn) has no Sharpe; it is
    ranked as -inf or +inf by the sign of its excess return (the limit of a vanishing risk), never dropped, so
    the interval is n/a, with the share of such resamples as ``reason``, when one of its ends falls on them.
    """
    r = np.asarray(returns, dtype=float)
    table = r.reshape(len(r), -1)
    n, k = table.shape
    if n_boot < 1 or n < 3:
        out = [Interval(np.nan, np.nan, f"n/a: {n} day(s)" if n_boot >= 1 else "n/a: no resamples")] * k
    else:
        counts = seeded_counts(n, n_boot, mean_block, seed)
        sr, boot, _, _ = resampled_sharpe(table - daily_rf(rf, periods), counts)
        with np.errstate(invalid="ignore"):  # an end between -inf and +inf resamples is n/a
            lo, hi = np.quantile(boot * np.sqrt(periods), [(1 - level) / 2, (1 + level) / 2], axis=0)
        flat = np.isinf(boot).mean(axis=0)
        out = [Interval(np.nan, np.nan, "n/a: the returns have no variance") if np.isnan(sr[j])
               else Interval(lo[j], hi[j]) if np.isfinite(lo[j]) and np.isfinite(hi[j])
               else Interval(np.nan, np.nan, f"n/a: {flat[j]:.0%} of the resamples have no variance (a rarely "
                                             "trading agent)") for j in range(k)]
    return out[0] if r.ndim == 1 else out


def sharpe_diff_test(returns: Sequence[float], benchmark: Sequence[float], rf: float = 0.04, n_boot: int = 2000,
                     mean_block: float = 5.0, seed: int = 0, periods: int = PERIODS) -> tuple[float, float]:
    """``(Sharpe(returns) - Sharpe(benchmark), one-sided p-value)`` for H0: the agent's Sharpe is not higher.

    Paired: both series are resampled on the same bootstrap days, so their common market moves cancel.
    The null distribution is the bootstrap distribution of the difference re-centred at zero:
    ``p = (1 + #{d_b - d >= d}) / (1 + B)``.
    """
    r, b = np.asarray(returns, dtype=float), np.asarray(benchmark, dtype=float)
    if len(r) != len(b):
        raise ValueError(f"paired test needs aligned series, got {len(r)} and {len(b)} days")
    diff = float(_sharpe(r, rf, periods) - _sharpe(b, rf, periods))
    if n_boot < 1 or not np.isfinite(diff):
        return diff, float("nan")
    idx = seeded_bootstrap(len(r), n_boot, mean_block, seed)
    boot = _sharpe(r[idx], rf, periods) - _seeded_sharpes(b.tobytes(), n_boot, mean_block, seed, rf, periods)
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return diff, float("nan")
    return diff, float((1 + np.sum(boot - diff >= diff)) / (1 + len(boot)))


def sharpe_diff_ci(returns: Sequence[float], other: Sequence[float], rf: float = 0.04, n_boot: int = 2000,
                   level: float = 0.95, mean_block: float = 5.0, seed: int = 0, paired: bool = True,
                   periods: int = PERIODS) -> tuple[float, float, float]:
    """``(Sharpe(returns) - Sharpe(other), lo, hi)``: the difference and its stationary-bootstrap percentile CI.

    ``paired``: the same days (one agent read plain and anonymized contexts), resampled together so the
    market cancels; otherwise two stretches of days (before and after a cutoff), resampled independently.
    """
    a, b = np.asarray(returns, dtype=float), np.asarray(other, dtype=float)
    if paired and len(a) != len(b):
        raise ValueError(f"a paired difference needs aligned series, got {len(a)} and {len(b)} days")
    diff = float(_sharpe(a, rf, periods) - _sharpe(b, rf, periods))
    if n_boot < 1 or not np.isfinite(diff):
        return diff, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    ia = stationary_bootstrap(len(a), n_boot, mean_block, rng)
    ib = ia if paired else stationary_bootstrap(len(b), n_boot, mean_block, rng)
    boot = _sharpe(a[ia], rf, periods) - _sharpe(b[ib], rf, periods)
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return diff, float("nan"), float("nan")
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return diff, float(lo), float(hi)


def investorbench(positions: Sequence[float], asset_returns: Sequence[float],
                  periods: int = PERIODS) -> dict[str, float]:
    """FLAG-TRADER's evaluation (InvestorBench): the daily :func:`~tr1_env.execution.trading_reward` without costs,
    rf 0.

    CR is the sum of the log rewards, AV their standard deviation times sqrt(periods) (use 365 for
    crypto), Sharpe the annualised mean reward over AV.
    """
    rewards = trading_reward(np.asarray(positions, dtype=float), np.log1p(np.asarray(asset_returns, dtype=float)))
    av = float(rewards.std(ddof=1) * np.sqrt(periods)) if len(rewards) > 1 else float("nan")
    sr = float(rewards.mean() * periods / av) if av > _ZERO_STD else float("nan")
    return {"cr": float(rewards.sum()), "sharpe": sr, "av": av}


def quantstats_stats(returns: pd.Series, benchmark: pd.Series, rf: float = 0.04) -> dict[str, float]:
    """What quantstats adds to the table: its own Sharpe (a cross-check), Sortino, Calmar, VaR, CVaR, alpha, beta.

    ``benchmark`` must be a Series: given a ticker string quantstats would download it from Yahoo.
    """
    import quantstats as qs

    if not isinstance(benchmark, pd.Series):
        raise TypeError("benchmark must be a pandas Series of returns, never a ticker (quantstats would call Yahoo)")
    greeks = lru_cache(maxsize=1)(lambda: qs.stats.greeks(returns, benchmark, periods=PERIODS))  # alpha and beta
    stats = {"qs_sharpe": lambda: qs.stats.sharpe(returns, rf=rf, periods=PERIODS),
             "qs_sortino": lambda: qs.stats.sortino(returns, rf=rf, periods=PERIODS),
             "qs_calmar": lambda: qs.stats.calmar(returns),
             "qs_var": lambda: qs.stats.value_at_risk(returns),
             "qs_cvar": lambda: qs.stats.cvar(returns),
             "qs_alpha": lambda: greeks()["alpha"], "qs_beta": lambda: greeks()["beta"]}
    out = {}
    for name, stat in stats.items():
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                value = float(stat())
            except (ArithmeticError, ValueError, TypeError):  # degenerate series: a flat agent has no drawdown
                value = float("nan")
        out[name] = value if np.isfinite(value) else float("nan")
    return out
