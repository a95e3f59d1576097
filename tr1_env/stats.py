"""Which agents beat the benchmark, and with what confidence: inference on paired daily return series.

Input is one table, a column of daily net returns per agent over the same days (the benchmark one of
them); output is one table, a row per agent. Resampling, Hansen's SPA test, Romano-Wolf StepM and the
model confidence set come from ``arch`` (StepM's step-down loop is spelled out over its SPA); only the closed forms (deflated Sharpe ratio, minimum
detectable Sharpe) are written here.

The tests compare *mean daily returns* (loss = -return), so the quantity tested for agent ``i`` is the
mean of ``d_i = r_i - r_benchmark``. Its power is set by the Sharpe ratio of ``d_i`` (an information
ratio), which is why :func:`min_detectable_sharpe` is stated in those units.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from arch.bootstrap import MCS, SPA, StationaryBootstrap
from scipy.stats import kurtosis, norm, skew

from tr1_env.metrics import PERIODS, daily_rf, sharpe

__all__ = ["VERDICTS", "compare", "deflated_sharpe", "expected_max_sharpe", "min_detectable_sharpe",
           "sharpe_interval"]

#: Verdict of an agent against the benchmark, after multiple-testing control.
VERDICTS = ("beats", "indistinguishable from", "worse than")
_EULER = 0.5772156649015329


def sharpe_interval(returns, rf: float = 0.04, reps: int = 1000, level: float = 0.95, block: float = 5.0,
                    seed: int = 0, periods: int = PERIODS) -> tuple[float, float]:
    """Percentile interval of the annualised Sharpe ratio under ``arch``'s stationary bootstrap."""
    r = np.asarray(returns, dtype=float)
    if reps < 1 or len(r) < 3 or not np.isfinite(sharpe(r, rf, periods)):
        return float("nan"), float("nan")
    boot = StationaryBootstrap(max(block, 1.0), r, seed=seed)
    lo, hi = boot.conf_int(lambda x: np.array([sharpe(x, rf, periods)]), reps=reps, method="percentile",
                           size=level)[:, 0]
    return float(lo), float(hi)


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
    :func:`expected_max_sharpe` this is the deflated Sharpe ratio; with 0 the probabilistic one."""
    denom = 1 - skewness * sr + (kurt - 1) / 4 * sr ** 2
    if n_days < 2 or not np.isfinite(sr) or not denom > 0:
        return float("nan")
    return float(norm.cdf((sr - sr_benchmark) * math.sqrt(n_days - 1) / math.sqrt(denom)))


def min_detectable_sharpe(n_days: int, alpha: float = 0.05, power: float = 0.8, n_tests: int = 1,
                          periods: int = PERIODS) -> float:
    """Smallest annualised Sharpe of a return difference that a one-sided test at ``alpha`` (Bonferroni over
    ``n_tests``) detects with probability ``power`` after ``n_days`` days: (z_{1-alpha/m} + z_power) sqrt(P/T)."""
    if n_days < 2:
        return float("nan")
    return float((norm.ppf(1 - alpha / max(n_tests, 1)) + norm.ppf(power)) * math.sqrt(periods / n_days))


def _pvalue_spa(benchmark_loss: pd.Series, model_loss: pd.DataFrame, reps: int, block: float, seed: int) -> float:
    """Hansen's consistent SPA p-value.

    Hansen's statistic is floored at zero, so when no model beats the benchmark in sample it is 0 and every
    bootstrap statistic reaches it: p = 1. arch counts only bootstrap values strictly above the raw maximum
    mean difference, which gives a clearly inferior agent p ~ 0.5 instead.
    """
    if (benchmark_loss.mean() - model_loss.mean()).max() <= 0:
        return 1.0
    spa = SPA(benchmark_loss, model_loss, block_size=max(round(block), 1), reps=reps, seed=seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


def _stepm(benchmark_loss: pd.Series, model_loss: pd.DataFrame, alpha: float, reps: int, block: float,
           seed: int) -> set[str]:
    """Models whose loss is below the benchmark's, family-wise error held at ``alpha`` (Romano-Wolf StepM).

    The step-down loop of ``arch.bootstrap.StepM`` over its SPA; written out because arch 8.0's loop runs one SPA
    on zero models (and fails) when the last models left are all superior.
    """
    remaining, superior = list(model_loss.columns), set()
    while remaining:
        spa = SPA(benchmark_loss, model_loss[remaining], block_size=max(round(block), 1), reps=reps, seed=seed)
        spa.compute()
        better = {remaining[int(i)] for i in spa.better_models(alpha)}  # positions in ``remaining``
        if not better:
            break
        superior |= better
        remaining = [m for m in remaining if m not in better]
    return superior


def _confidence_set(loss: pd.DataFrame, alpha: float, reps: int, block: float, seed: int) -> pd.Series:
    """Membership of arch's model confidence set; identical series enter or leave together (arch cannot rank
    two series whose loss difference is always zero)."""
    first = {}
    for name in loss.columns:
        first.setdefault(loss[name].to_numpy().tobytes(), name)
    representative = {name: first[loss[name].to_numpy().tobytes()] for name in loss.columns}
    unique = list(dict.fromkeys(representative.values()))
    if len(unique) < 2:
        return pd.Series(True, index=loss.columns)
    mcs = MCS(loss[unique], size=alpha, reps=reps, block_size=max(round(block), 1), seed=seed)
    mcs.compute()
    kept = set(mcs.included)
    return pd.Series({name: representative[name] in kept for name in loss.columns})


def compare(returns: pd.DataFrame, benchmark: str = "buy_and_hold", alpha: float = 0.05, reps: int = 1000,
            block: float = 5.0, seed: int = 0, rf: float = 0.04, periods: int = PERIODS) -> pd.DataFrame:
    """One row per column of ``returns`` (paired daily net returns, no gaps), ranked by Sharpe.

    Columns: ``n_days``, ``cr``, ``sharpe`` with its (1 - alpha) bootstrap interval ``sharpe_lo/hi``,
    ``excess_sharpe`` (minus the benchmark's), ``spa_p`` (Hansen's SPA p-value of "this agent's mean return
    is not above the benchmark's", per agent), ``in_mcs`` (in the model confidence set of the best agents at
    ``alpha``, benchmark included), ``deflated_sharpe`` (probability the Sharpe is real given the number of
    agents tried) and ``verdict`` from StepM run both ways (beats / worse than at family-wise ``alpha``).

    ``attrs`` carry the whole-family numbers: ``spa_p_all`` (SPA over all agents at once), ``min_detectable_sharpe``
    (80% power, Bonferroni over the agents) and ``n_trials``.
    """
    if benchmark not in returns.columns:
        raise ValueError(f"benchmark {benchmark!r} is not a column of the returns table ({list(returns.columns)})")
    if returns.isna().any().any():
        bad = returns.columns[returns.isna().any()].tolist()
        raise ValueError(f"returns of {bad} have gaps; the tests need paired series on the same days")
    agents = [c for c in returns.columns if c != benchmark]
    loss = -returns
    excess = returns.to_numpy() - daily_rf(rf, periods)
    per_period = pd.Series([sharpe(returns[c], rf, periods) / math.sqrt(periods) for c in returns.columns],
                           index=returns.columns)
    tried = per_period[agents].dropna()
    sr0 = expected_max_sharpe(len(tried), float(tried.var(ddof=1)) if len(tried) > 1 else float("nan"))
    rows = []
    for j, name in enumerate(returns.columns):
        lo, hi = sharpe_interval(returns[name], rf, reps, 1 - alpha, block, seed, periods)
        x = excess[:, j]
        rows.append({
            "agent": name, "n_days": len(x), "cr": float(np.prod(1 + returns[name].to_numpy()) - 1),
            "sharpe": sharpe(returns[name], rf, periods), "sharpe_lo": lo, "sharpe_hi": hi,
            "deflated_sharpe": deflated_sharpe(per_period[name], len(x), float(skew(x)),
                                               float(kurtosis(x, fisher=False)), sr0) if x.std() > 0 else float("nan"),
        })
    table = pd.DataFrame(rows).set_index("agent")
    table["excess_sharpe"] = table["sharpe"] - table.loc[benchmark, "sharpe"]
    table["spa_p"] = np.nan
    table["verdict"] = "benchmark"
    differ = [a for a in agents if not returns[a].equals(returns[benchmark])]  # a copy of the benchmark: p = 1
    table.loc[[a for a in agents if a not in differ], "spa_p"] = 1.0
    if differ:
        for name in differ:
            table.loc[name, "spa_p"] = _pvalue_spa(loss[benchmark], loss[[name]], reps, block, seed)
        better = _stepm(loss[benchmark], loss[differ], alpha, reps, block, seed)
        worse = _stepm(returns[benchmark], returns[differ], alpha, reps, block, seed)  # roles swapped: loss = +return
        for name in agents:
            table.loc[name, "verdict"] = VERDICTS[0] if name in better else VERDICTS[2] if name in worse else VERDICTS[1]
    table["in_mcs"] = _confidence_set(loss, alpha, reps, block, seed).reindex(table.index)
    columns = ["n_days", "cr", "sharpe", "sharpe_lo", "sharpe_hi", "excess_sharpe", "spa_p", "in_mcs",
               "deflated_sharpe", "verdict"]
    table = table[columns].sort_values("sharpe", ascending=False, na_position="last")
    table.attrs = {"spa_p_all": _pvalue_spa(loss[benchmark], loss[differ], reps, block, seed) if differ else np.nan,
                   "min_detectable_sharpe": min_detectable_sharpe(len(returns), alpha, 0.8, max(len(agents), 1),
                                                                  periods),
                   "n_trials": len(tried), "alpha": alpha}
    return table
