"""Performance metrics of a daily return series: pure functions of arrays, no accounting, no I/O.

Conventions (Trading-R1's tables): returns are simple daily returns; Sharpe is annualised with sqrt(252) on
excess returns over a risk-free rate given per year (4% as in Trading-R1) and compounded down to a
day; standard deviations use ddof=1 (as empyrical and quantstats); MDD is reported as a positive
fraction, as the paper's tables print it. The InvestorBench variant used by FLAG-TRADER
is a separate function because its CR and Sharpe are defined on log rewards with no risk-free rate.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from tr1_env.backtest import trading_reward

__all__ = ["PERIODS", "annual_volatility", "cumulative_return", "daily_rf", "hit_rate", "investorbench", "max_drawdown",
           "quantstats_stats", "sharpe", "sharpe_ci", "sharpe_diff_ci", "sharpe_diff_test", "stationary_bootstrap"]

PERIODS = 252
_ZERO_STD = 1e-12  # below this a return series is constant and its Sharpe undefined


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
    """Politis-Romano stationary bootstrap indices, shape ``(n_boot, n)``.

    Blocks of geometric length (mean ``mean_block``) start at uniform positions and wrap around,
    which keeps the short-range dependence of daily returns that an i.i.d. bootstrap would destroy.
    """
    starts = rng.integers(0, n, size=(n_boot, n))
    new_block = rng.random((n_boot, n)) < 1 / max(mean_block, 1.0)
    new_block[:, 0] = True
    t = np.arange(n)
    block_start = np.maximum.accumulate(np.where(new_block, t, 0), axis=1)
    first = np.take_along_axis(starts, block_start, axis=1)
    return (first + t - block_start) % n


def sharpe_ci(returns: Sequence[float], rf: float = 0.04, n_boot: int = 2000, level: float = 0.95,
              mean_block: float = 5.0, seed: int = 0, periods: int = PERIODS) -> tuple[float, float]:
    """Percentile confidence interval of the Sharpe ratio under the stationary bootstrap."""
    r = np.asarray(returns, dtype=float)
    if n_boot < 1 or len(r) < 2:
        return float("nan"), float("nan")
    samples = _sharpe(r[stationary_bootstrap(len(r), n_boot, mean_block, np.random.default_rng(seed))], rf, periods)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


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
    idx = stationary_bootstrap(len(r), n_boot, mean_block, np.random.default_rng(seed))
    boot = _sharpe(r[idx], rf, periods) - _sharpe(b[idx], rf, periods)
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
    """FLAG-TRADER's evaluation (InvestorBench): the daily :func:`~tr1_env.backtest.trading_reward` without costs, rf 0.

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
    stats = {"qs_sharpe": lambda: qs.stats.sharpe(returns, rf=rf, periods=PERIODS),
             "qs_sortino": lambda: qs.stats.sortino(returns, rf=rf, periods=PERIODS),
             "qs_calmar": lambda: qs.stats.calmar(returns),
             "qs_var": lambda: qs.stats.value_at_risk(returns),
             "qs_cvar": lambda: qs.stats.cvar(returns),
             "qs_alpha": lambda: qs.stats.greeks(returns, benchmark, periods=PERIODS)["alpha"],
             "qs_beta": lambda: qs.stats.greeks(returns, benchmark, periods=PERIODS)["beta"]}
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
