"""One book over many tickers plus cash: target weights -> net daily returns, costs and turnover.

The single-ticker books (:mod:`tr1_env.evaluation.backtest`) hold a constant weight between decisions; a portfolio
book lets the weights drift with prices, so that 1/N bought and held differs from 1/N rebalanced and turnover is
what a fund would trade. Per session, with ``h`` the weights held into it (drifted), ``w`` the targets decided at the
previous close, ``G`` each asset's return from that close to the fill and ``I`` from the fill to the close
(:class:`~tr1_env.execution.Execution`'s fill; at the close ``G = 0``), cash earning nothing:

    growth = (1 + h.G) (1 - sum_i cost(h'_i, w_i)) (1 + w.I),   h' = h (1 + G) / (1 + h.G)

and the weights carried into the next session are ``w (1 + I) / (1 + w.I)``. The Portfolio env steps
:func:`rebalance` one session at a time and the replay books a whole path with :func:`portfolio_book`, so the two
give the same equity for the same weights (tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tr1_env.evaluation.backtest import gross_returns, sessions
from tr1_env.execution import Execution

__all__ = ["Legs", "portfolio_book", "rebalance"]


class Legs:
    """Per-session returns of every ticker over a calendar ``d_1..d_n``: ``overnight`` (close to fill) and
    ``intraday`` (fill to close), arrays ``(n - 1, N)`` for the sessions ``d_2..d_n``; 0 where a ticker has no
    price (it is then never held: see :func:`tr1_env.data.universe.membership`). With ``dividends`` (ticker -> cash
    per share by ex-date) they are total returns, credited as the single-ticker books credit them."""

    def __init__(self, closes: pd.DataFrame, opens: pd.DataFrame, execution: Execution,
                 dividends: dict[str, pd.Series] | None = None):
        days = closes.index
        over = np.zeros((len(days) - 1, closes.shape[1]))
        intra = np.zeros_like(over)
        for j, t in enumerate(closes.columns):
            ok = closes[t].notna().to_numpy()
            first, last = (np.flatnonzero(ok)[[0, -1]] if ok.any() else (0, -1))
            if last - first < 1:
                continue
            c, o = closes[t].iloc[first:last + 1].ffill(), opens[t].iloc[first:last + 1]
            _, cash = sessions(c, c.index, (dividends or {}).get(t))
            over[first:last, j], intra[first:last, j] = execution.model.legs(gross_returns(c, cash), c, cash,
                                                                             o.ffill().fillna(c))
        self.days, self.tickers, self.overnight, self.intraday = days, tuple(closes.columns), over, intra


def rebalance(held: np.ndarray, target: np.ndarray, overnight: np.ndarray, intraday: np.ndarray,
              execution: Execution) -> tuple[float, float, float, np.ndarray]:
    """One session: ``(net return, cost, turnover, weights carried to the next session)`` of moving the drifted
    weights ``held`` to ``target`` at the fill (module docstring); ``turnover`` is ``sum |w - h'|``."""
    gap = 1 + float(held @ overnight)
    drifted = held * (1 + overnight) / gap if gap > 0 else np.zeros_like(held)
    cost = float(np.sum(execution.cost(drifted, target)))
    day = 1 + float(target @ intraday)
    carried = target * (1 + intraday) / day if day > 0 else np.zeros_like(target)
    return gap * (1 - cost) * day - 1, cost, float(np.abs(target - drifted).sum()), carried


def portfolio_book(weights: np.ndarray, legs: Legs, execution: Execution) -> pd.DataFrame:
    """The book of target ``weights`` (``(n - 1, N)``, decided at the closes ``d_1..d_{n-1}``), starting in cash:
    columns ``return, cost, turnover, equity`` indexed by ``d_2..d_n``, plus ``w_<ticker>``, the targets."""
    held = np.zeros(len(legs.tickers))
    rows = []
    for w, g, i in zip(np.asarray(weights, float), legs.overnight, legs.intraday, strict=True):
        r, cost, turnover, held = rebalance(held, w, g, i, execution)
        rows.append((r, cost, turnover))
    frame = pd.DataFrame(rows, columns=["return", "cost", "turnover"], index=legs.days[1:])
    frame["equity"] = (1 + frame["return"]).cumprod()
    return frame.join(pd.DataFrame(weights, index=legs.days[1:], columns=[f"w_{t}" for t in legs.tickers]))
