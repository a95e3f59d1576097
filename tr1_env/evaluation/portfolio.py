"""One book over many tickers plus cash: target weights -> net daily returns, costs and turnover.

The single-ticker books (:mod:`tr1_env.evaluation.backtest`) hold a constant weight between decisions; a portfolio
book lets the weights drift with prices, so that 1/N bought and held differs from 1/N rebalanced and turnover is
what a fund would trade. Both are :meth:`tr1_env.execution.Execution.book`, the house's one booking (its formula,
every cost of ``--execution`` and the volume cap, in its docstring); this module supplies a universe's per-session
legs and prices (:class:`Legs`) and lays a book out as a frame (:func:`portfolio_book`). The Portfolio env books
each step with the same method, so the env and the replay give the same equity for the same weights (tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tr1_env.evaluation.backtest import gross_returns, sessions
from tr1_env.execution import Execution

__all__ = ["Legs", "portfolio_book"]


class Legs:
    """Per-session market data of every ticker over a calendar ``d_1..d_n``, arrays ``(n - 1, N)`` for the sessions
    ``d_2..d_n``: ``overnight`` (return from the decision close to the fill) and ``intraday`` (fill to close), 0 where
    a ticker has no price (it is then never held: see :func:`tr1_env.data.universe.membership`), ``price`` (the fill
    price; NaN there) and, given ``liquidity`` (:meth:`Execution.liquidity` of the whole history's closes and volumes,
    frames), ``sigma`` and ``dollar`` at each decision close. With ``dividends`` (ticker -> cash per share by
    ex-date) the legs are total returns, credited as the single-ticker books credit them."""

    def __init__(self, closes: pd.DataFrame, opens: pd.DataFrame, execution: Execution,
                 dividends: dict[str, pd.Series] | None = None,
                 liquidity: tuple[pd.DataFrame, pd.DataFrame] | None = None):
        days = closes.index
        over = np.zeros((len(days) - 1, closes.shape[1]))
        intra, price = np.zeros_like(over), np.full_like(over, np.nan)
        for j, t in enumerate(closes.columns):
            ok = closes[t].notna().to_numpy()
            first, last = (np.flatnonzero(ok)[[0, -1]] if ok.any() else (0, -1))
            if last - first < 1:
                continue
            c = closes[t].iloc[first:last + 1].ffill()
            o = opens[t].iloc[first:last + 1].ffill().fillna(c)
            _, cash = sessions(c, c.index, (dividends or {}).get(t))
            over[first:last, j], intra[first:last, j] = execution.model.legs(gross_returns(c, cash), c, cash, o)
            price[first:last, j] = execution.prices(c, o)
        self.days, self.tickers = days, tuple(closes.columns)
        self.overnight, self.intraday, self.price = over, intra, price
        self.sigma, self.dollar = (None, None) if liquidity is None else (
            x.reindex(index=days[:-1], columns=closes.columns).to_numpy(dtype=float) for x in liquidity)

    def book(self, weights: np.ndarray, execution: Execution, rows: slice = slice(None), held: np.ndarray | None = None,
             equity: float = 1.0, llm_usd: np.ndarray | None = None):
        """:meth:`Execution.book` of ``weights`` decided at the closes of the sessions ``rows`` (drifting weights)."""
        liquidity = None if self.sigma is None else (self.sigma[rows], self.dollar[rows])
        return execution.book(weights, self.overnight[rows], self.intraday[rows], self.price[rows], liquidity, llm_usd,
                              held, equity)


def portfolio_book(weights: np.ndarray, legs: Legs, execution: Execution, previous: pd.DataFrame | None = None,
                   llm_usd: np.ndarray | None = None) -> pd.DataFrame:
    """The book of target ``weights`` (``(n - 1, N)``, decided at the closes ``d_1..d_{n-1}``; a NaN row: no order),
    starting in cash at equity 1, or continuing ``previous`` (the book of the window before, ending on ``d_1``: its
    weights at that close are held into ``d_2`` at its equity; ``legs`` then start on that day). Columns ``return,
    cost, turnover, equity``, what each session paid in USD (:data:`~tr1_env.execution.execution.USD_COLUMNS`) and
    ``p_<ticker>``, the weights each order reached (the session's position, what the signal tests read), and
    ``w_<ticker>``, the weights held at each close (after the order and the session's drift), indexed ``d_2..d_n``."""
    columns = [f"w_{t}" for t in legs.tickers]
    held = None if previous is None else previous[columns].iloc[-1].to_numpy(dtype=float)
    start = 1.0 if previous is None else float(previous["equity"].iloc[-1])
    booked = legs.book(np.asarray(weights, float), execution, held=held, equity=start, llm_usd=llm_usd)
    frame = pd.DataFrame({"return": booked.ret, "cost": booked.cost, "turnover": booked.turnover,
                          "equity": start * np.cumprod(1 + booked.ret)}, index=legs.days[1:])
    frame = frame.join(pd.DataFrame(booked.paid, index=frame.index))
    frame = frame.join(pd.DataFrame(booked.position, index=frame.index, columns=[f"p_{t}" for t in legs.tickers]))
    return frame.join(pd.DataFrame(booked.carried, index=frame.index, columns=columns))
