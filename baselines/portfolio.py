"""Portfolio baselines: target weights over a universe from the price history up to the decision day.

Each is a pure function ``(closes, held, start) -> weights``: ``closes`` is a days x tickers frame of closes whose
last row is the decision day (the caller cuts it there; nothing later exists for the function), ``held`` marks the
tickers it may hold that day (:func:`tr1_env.data.universe.membership`), ``start`` is the book's first session;
the weights (tickers; cash is the rest) are long-only and sum to at most 1, or all NaN: no order (the book's
weights drift on). Lookbacks use only the rows given, so a
ticker with too short a history is left out until it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

__all__ = ["INDEX_ETF", "PORTFOLIO_BASELINES", "PortfolioPolicy", "buy_and_hold_1n", "equal_weight", "hrp",
           "index_etf", "inverse_volatility", "momentum_top_k"]

#: ``(closes up to the decision day, tickers that may be held, the book's first session) -> weights``.
PortfolioPolicy = Callable[[pd.DataFrame, np.ndarray, pd.Timestamp], np.ndarray]
INDEX_ETF = "SPY"


def _normalised(x: np.ndarray) -> np.ndarray:
    total = x.sum()
    return x / total if total > 0 else np.zeros_like(x, dtype=float)


def _returns(closes: pd.DataFrame, held: np.ndarray, lookback: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Daily simple returns of the last ``lookback`` sessions and the held tickers with all of them."""
    window = closes.iloc[-(lookback + 1):]
    ok = held & (len(window) == lookback + 1) & window.notna().all().to_numpy()
    return window.pct_change().iloc[1:], ok


def equal_weight(closes: pd.DataFrame, held: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """1/n of every ticker that may be held, rebalanced every decision."""
    return _normalised(held.astype(float))


def buy_and_hold_1n(closes: pd.DataFrame, held: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """1/N of the tickers with a close on ``start``, never traded again: no order (NaN) after ``start``, so the book's
    weights drift with prices (and dividends, under total returns) and no order pays a commission; a ticker leaving
    the universe at this close is sold into cash, at the value weights ``P_d / P_start`` over the book's."""
    entry = closes.iloc[closes.index.searchsorted(start)]
    leaving = ~held & entry.notna().to_numpy() & closes.iloc[-1].notna().to_numpy()
    if closes.index[-1] > start and not leaving.any():
        return np.full(len(held), np.nan)
    value = np.nan_to_num((closes.ffill().iloc[-1] / entry).to_numpy(float))
    return np.where(held, value, 0.0) / value.sum() if value.sum() > 0 else np.zeros(len(held))


def index_etf(closes: pd.DataFrame, held: np.ndarray, start: pd.Timestamp, ticker: str = INDEX_ETF) -> np.ndarray:
    """Everything in the index ETF (a column of ``closes`` whether or not it is a universe member)."""
    if ticker not in closes.columns:
        raise ValueError(f"the index ETF {ticker} is not among the book's tickers {list(closes.columns)}")
    return (closes.columns == ticker).astype(float)


def momentum_top_k(closes: pd.DataFrame, held: np.ndarray, start: pd.Timestamp, k: int = 3, lookback: int = 252,
                   skip: int = 21) -> np.ndarray:
    """Cross-sectional momentum (Jegadeesh-Titman 12-1): equal weight in the ``k`` held tickers with the highest
    return from ``lookback`` to ``skip`` sessions ago."""
    if len(closes) <= lookback:
        return np.zeros(len(held))
    past = closes.iloc[-(lookback + 1)].to_numpy(float)
    recent = closes.iloc[-(skip + 1)].to_numpy(float)
    score = np.where(held & np.isfinite(past) & np.isfinite(recent), recent / past - 1, -np.inf)
    ranked = [j for j in np.argsort(-score, kind="stable")[:k] if np.isfinite(score[j])]
    out = np.zeros(len(held))
    out[ranked] = 1 / len(ranked) if ranked else 0.0
    return out


def inverse_volatility(closes: pd.DataFrame, held: np.ndarray, start: pd.Timestamp, lookback: int = 63
                       ) -> np.ndarray:
    """Weights proportional to 1 / the standard deviation of the last ``lookback`` daily returns (a naive risk
    parity that ignores correlations)."""
    returns, ok = _returns(closes, held, lookback)
    sd = returns.std().to_numpy(float)
    return _normalised(np.where(ok & (sd > 0), 1 / np.where(sd > 0, sd, 1.0), 0.0))


def hrp(closes: pd.DataFrame, held: np.ndarray, start: pd.Timestamp, lookback: int = 252) -> np.ndarray:
    """Hierarchical risk parity (Lopez de Prado 2016) from PyPortfolioOpt's ``HRPOpt`` on the last ``lookback``
    daily returns: risk parity that accounts for correlations without inverting the covariance matrix."""
    from pypfopt import HRPOpt

    returns, ok = _returns(closes, held, lookback)
    out = np.zeros(len(held))
    if ok.sum() == 1:
        out[ok] = 1.0
    elif ok.sum() > 1:
        weights = HRPOpt(returns.loc[:, ok]).optimize()
        out[ok] = [weights[t] for t in returns.columns[ok]]
    return out


#: Every portfolio baseline by name (``--agents`` of ``benchmarks/run.py --portfolio``).
PORTFOLIO_BASELINES: dict[str, PortfolioPolicy] = {
    "buy_and_hold": buy_and_hold_1n,  # 1/N of the universe, never traded: the benchmark
    "equal_weight": equal_weight,
    "index_etf": index_etf,
    "momentum_top3": partial(momentum_top_k, k=3),
    "inverse_vol": inverse_volatility,
    "hrp": hrp,
}
