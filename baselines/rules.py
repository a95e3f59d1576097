"""Technical rules over the stockstats columns already in ``Observation.history`` (the context's indicators)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision, Observation


def _last(obs: Observation, column: str) -> float:
    """The indicator at the decision day's close; NaN while its window is still filling."""
    history = obs.history
    return float(history.iat[-1, history.columns.get_loc(column)]) if len(history) else float("nan")


class MACrossover(Agent):
    """Trend following: fully long while the fast SMA is above the slow one, fully short below it."""

    name = "ma_crossover"

    def __init__(self, fast: str = "close_10_sma", slow: str = "close_50_sma"):
        self.fast, self.slow = fast, slow

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        out = []
        for obs in observations:
            fast, slow = _last(obs, self.fast), _last(obs, self.slow)
            if not np.isfinite(fast - slow) or fast == slow:
                action = Action.HOLD
            else:
                action = Action.STRONG_BUY if fast > slow else Action.STRONG_SELL
            out.append(Decision(action, meta={self.fast: fast, self.slow: slow}))
        return out


class RSIMeanReversion(Agent):
    """Buy oversold, sell overbought, graded: RSI < 30 strong buy, < 40 buy, > 70 strong sell, > 60 sell, else hold."""

    name = "rsi_reversion"

    def __init__(self, column: str = "rsi_14", levels: tuple[float, float, float, float] = (30, 40, 60, 70)):
        self.column, self.levels = column, levels

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        strong_low, low, high, strong_high = self.levels
        out = []
        for obs in observations:
            rsi = _last(obs, self.column)
            if not np.isfinite(rsi):
                action = Action.HOLD
            elif rsi < strong_low:
                action = Action.STRONG_BUY
            elif rsi < low:
                action = Action.BUY
            elif rsi > strong_high:
                action = Action.STRONG_SELL
            elif rsi > high:
                action = Action.SELL
            else:
                action = Action.HOLD
            out.append(Decision(action, meta={self.column: rsi}))
        return out
