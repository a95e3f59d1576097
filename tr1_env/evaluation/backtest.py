"""Decisions -> positions -> daily returns net of costs: the replay's accounting, with no agents in it.

Timing convention (one trading calendar ``d_1 < ... < d_n`` per ticker, the replay window):

- a decision is taken at the close of ``d_i`` (the agent sees nothing later) and sets the target
  weight held from that close to the close of ``d_{i+1}``;
- its return is realised at ``d_{i+1}``, so the return series is indexed ``d_2 .. d_n`` and has
  ``n - 1`` entries; no decision is taken at ``d_n`` because nothing after the window is realised;
- a trade at the close of ``d_i`` pays ``cost_bps * |w_i - w_{i-1}|`` out of equity before the
  position earns, with ``w_0 = 0`` (the replay starts flat) and no exit trade at the end:
  ``r_{i+1} = (1 - c |Δw_i|) (1 + w_i R_{i+1}) - 1``;
- weights are fractions of current equity, held constant between decisions (rebalanced daily at
  no cost, the usual target-weight convention); with decisions every ``k`` days the last weight is
  held in between.

So buy-and-hold (weight 1 from ``d_1``) compounds to ``(1 - c) * P(d_n) / P(d_1) - 1`` exactly.

Walk-forward books are continuous (``previous``): a window takes no decision at its last close, so the weight
``w_{n-1}`` it holds there is held into the next window's first session ``e_1``, earns it (no trade at the
boundary) and is what the refitted agent's first decision at ``e_1``'s close trades from. Chained, the windows
are one book: buy-and-hold over consecutive windows compounds exactly as over their union.
``R`` is the price return by default; with dividends it is the total return, an ex-date's cash
counted against the previous close: ``R_{i+1} = (P_{i+1} + D_{i+1}) / P_i - 1``.

The execution (:class:`tr1_env.execution.Execution`: the fill and the costs) is a value the replay receives, and
the book is its :meth:`~tr1_env.execution.Execution.book` with one ticker and weights that do not drift (the
portfolio books' kernel, N = 1).
The formulas above are its default fill, at the decision's close. Filled at the next session's open instead, the
old weight earns the overnight gap ``G = (O_{i+1} + D_{i+1}) / P_i - 1``, the trade pays its cost at the open and
the new weight earns the day ``(1 + R) / (1 + G) - 1``; buy-and-hold then compounds to
``(1 - c) * P(d_n) / O(d_2) - 1``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from tr1_env.core.actions import DEFAULT_WEIGHTS, Action
from tr1_env.execution import Execution

__all__ = ["asset_returns", "backtest", "buy_and_hold", "continues", "decision_days", "gross_returns",
           "holding_returns", "sessions"]


def decision_days(days: pd.DatetimeIndex, every: int = 1) -> pd.DatetimeIndex:
    """The sessions on which an agent decides: ``d_1, d_{1+k}, ...``, never the window's last day."""
    if every < 1:
        raise ValueError(f"decision interval must be >= 1 day, got {every}")
    return pd.DatetimeIndex(days[:-1][::every])


def asset_returns(closes: pd.Series, days: pd.DatetimeIndex, dividends: pd.Series | None = None) -> pd.Series:
    """Close-to-close returns realised on ``days[1:]``; ``dividends`` (cash per share by ex-date) make them total.

    A dividend whose ex-date falls on a non-session is credited on the next session of ``days``.
    """
    px, cash = sessions(closes, days, dividends)
    return pd.Series(gross_returns(px, cash), index=days[1:], name="asset_return")


def gross_returns(px: pd.Series, cash: np.ndarray) -> np.ndarray:
    return (px.to_numpy()[1:] + cash[1:]) / px.to_numpy()[:-1] - 1


def sessions(closes: pd.Series, days: pd.DatetimeIndex, dividends: pd.Series | None
              ) -> tuple[pd.Series, np.ndarray]:
    """The closes on ``days`` (every one present) and the dividend cash credited on each of them."""
    px = closes.reindex(days)
    if px.isna().any():
        raise ValueError(f"missing closes on {list(px.index[px.isna()].strftime('%Y-%m-%d'))}")
    cash = np.zeros(len(days))
    if dividends is not None and len(dividends):
        slot = days.searchsorted(pd.DatetimeIndex(dividends.index), side="left")
        inside = (slot > 0) & (slot < len(days))  # an ex-date at d_1 or before belongs to no replay period
        np.add.at(cash, slot[inside], dividends.to_numpy(dtype=float)[inside])
    return px, cash


def backtest(actions: pd.Series, closes: pd.Series, days: pd.DatetimeIndex, execution: Execution = Execution(),
             weights: Mapping[Action, float] = DEFAULT_WEIGHTS, dividends: pd.Series | None = None,
             opens: pd.Series | None = None, volumes: pd.Series | None = None,
             llm_usd: pd.Series | None = None, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Account for ``actions`` (an :class:`Action` per decision date) over the sessions ``days``.

    Returns one row per realised session ``d_2..d_n``: ``return`` (net of costs), ``position`` (the weight held into
    that close), ``action`` and ``decision_date`` (the decision that set it), ``asset_return``, ``cost`` (the fraction
    of equity paid at the previous close), ``equity`` (starting at 1, or where ``previous`` ended), then what the
    session paid in USD (:meth:`Execution.book`). ``opens`` are read only by a fill that executes at an open,
    ``volumes`` (over the whole history: the volatility and volume look back) only by a volume cap or an impact,
    ``llm_usd`` (USD by decision date) only when LLM costs are charged.

    ``previous`` (the book of the window before, ending on the session before ``d_1``) makes the book
    continuous: its last position is held into ``d_1`` and earns that session (a row more, ``d_1..d_n``, no trade
    at the boundary), and the first decision trades from it instead of from flat.
    """
    if len(days) < 2:
        raise ValueError("a replay needs at least two sessions")
    actions = actions.sort_index()
    if len(actions) == 0 or actions.index[0] != days[0]:
        raise ValueError(f"the first decision must be on the first session {days[0]:%Y-%m-%d}")
    off = ~actions.index.isin(days[:-1])
    if off.any():
        raise ValueError(f"decisions off the replay's decision sessions: {sorted(set(actions.index[off]))[:3]}")
    if actions.index.has_duplicates:
        raise ValueError(f"two decisions on {actions.index[actions.index.duplicated()][0]:%Y-%m-%d}")
    codes, when, decided = actions.astype(int).to_numpy(), actions.index, actions.index
    if previous is not None:  # the carried decision, set at the boundary's close by the window before
        boundary = _boundary(previous, closes, days)
        codes = np.concatenate([[int(Action[previous["action"].iloc[-1]])], codes])
        decided = pd.concat([pd.Series([previous["decision_date"].iloc[-1]]), pd.Series(decided)], ignore_index=True)
        when, days = when.insert(0, boundary), days.insert(0, boundary)
    opened = days[:-1]
    slot = when.searchsorted(opened, side="right") - 1  # the decision in force on each opened session
    kinds, which = np.unique(codes[slot], return_inverse=True)
    w = np.array([weights[Action(int(c))] for c in kinds], dtype=float)[which]
    names = np.array([Action(int(c)).name for c in kinds], dtype=object)[which]
    px, cash = sessions(closes, days, dividends)
    asset = gross_returns(px, cash)
    liquidity = None
    if execution.needs_liquidity and volumes is not None:
        liquidity = tuple(x.reindex(opened).to_numpy(dtype=float) for x in execution.liquidity(closes, volumes))
    llm = None if llm_usd is None else llm_usd.reindex(opened).fillna(0.0).to_numpy(dtype=float)
    start = 1.0 if previous is None else float(previous["equity"].iloc[-1])  # a continuous book's equity goes on
    opens = None if opens is None else opens.reindex(days)
    overnight, intraday = execution.model.legs(asset, px, cash, opens)
    booked = execution.book(_column(w), _column(overnight), _column(intraday), _column(execution.prices(px, opens)),
                            None if liquidity is None else (_column(liquidity[0]), _column(liquidity[1])), llm,
                            held=np.array([0.0 if previous is None else w[0]]), equity=start, drift=False)
    return pd.DataFrame({
        "return": booked.ret, "position": booked.position[:, 0], "action": names,
        "decision_date": np.asarray(decided)[slot], "asset_return": asset, "cost": booked.cost,
        "equity": start * np.cumprod(1 + booked.ret), **booked.paid,
    }, index=pd.DatetimeIndex(days[1:], name="date"))


def _column(x: np.ndarray) -> np.ndarray:
    """One ticker's per-session values as the days x tickers column :meth:`Execution.book` takes (N = 1)."""
    return np.asarray(x, dtype=float)[:, None]


def continues(previous: pd.DataFrame | None, closes: pd.Series, days: pd.DatetimeIndex) -> bool:
    """Whether the book ``previous`` ends on the session of ``closes`` right before ``days[0]``, so a book over
    ``days`` can continue it (a gap between windows cannot be bridged: that book starts flat)."""
    before = closes.index[closes.index < days[0]]
    return previous is not None and len(previous) > 0 and len(before) > 0 and previous.index[-1] == before[-1]


def _boundary(previous: pd.DataFrame, closes: pd.Series, days: pd.DatetimeIndex) -> pd.Timestamp:
    if not continues(previous, closes, days):
        end = f"{previous.index[-1]:%Y-%m-%d}" if len(previous) else "nothing"
        raise ValueError(f"a continuous book needs the previous book to end on the session before "
                         f"{days[0]:%Y-%m-%d}; it ends on {end}")
    return previous.index[-1]


def buy_and_hold(closes: pd.Series, days: pd.DatetimeIndex, execution: Execution = Execution(),
                 dividends: pd.Series | None = None, opens: pd.Series | None = None,
                 volumes: pd.Series | None = None, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """The benchmark: weight 1 from the first fill on, whatever weights the agents' actions map to."""
    first = pd.Series([Action.STRONG_BUY], index=days[:1])
    return backtest(first, closes, days, execution, {Action.STRONG_BUY: 1.0}, dividends, opens, volumes,
                    previous=previous)


def holding_returns(frame: pd.DataFrame) -> pd.DataFrame:
    """Per decision: the action taken and the asset's compounded return over the period it was held (hit rate)."""
    grouped = frame.groupby("decision_date", sort=True)
    growth = (1 + frame["asset_return"]).groupby(frame["decision_date"], sort=True).prod(skipna=False)
    return pd.DataFrame({"action": grouped["action"].first(), "forward_return": growth - 1})
