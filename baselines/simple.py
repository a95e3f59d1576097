"""Reference points every table needs: buy-and-hold (the benchmark), staying flat, and chance."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from tr1_env.core.actions import ACTIONS, Action
from tr1_env.core.agents import Agent, Decision, Observation


class BuyAndHold(Agent):
    """Always STRONG_BUY: weight 1 under the default mapping, so it trades once, at the first close."""

    name = "buy_and_hold"

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        return [Decision(Action.STRONG_BUY) for _ in observations]


class AlwaysHold(Agent):
    """Always HOLD: flat, earns nothing, pays nothing; its Sharpe against a positive risk-free rate is undefined."""

    name = "always_hold"

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        return [Decision(Action.HOLD) for _ in observations]


class RandomAgent(Agent):
    """Uniform over the five actions; reseeded per ticker, so a ticker's draws do not depend on replay order."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rngs: dict[str, np.random.Generator] = {}

    def reset(self, ticker: str) -> None:
        self._rngs[ticker] = np.random.default_rng([self.seed, zlib.crc32(ticker.encode())])

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        out = []
        for obs in observations:
            if obs.ticker not in self._rngs:
                self.reset(obs.ticker)
            out.append(Decision(ACTIONS[int(self._rngs[obs.ticker].integers(len(ACTIONS)))]))
        return out
