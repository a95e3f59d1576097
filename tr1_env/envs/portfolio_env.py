"""A portfolio MDP: one step per trading day over a universe of tickers plus cash; reward = the net log return.

The observation is a flat Box: per ticker its :data:`~tr1_env.context.modalities.market.MARKET_FEATURES` (the
Trading env's, computed the same causal way from the prices known at ``end``) and whether it may be held that day,
then the current (drifted) weights of the tickers and of cash, then the share of the episode left. The action is
mapped to valid target weights by :func:`weights_from_action` (a pure function), and the session is booked by
:meth:`tr1_env.execution.Execution.book` under the env's :class:`~tr1_env.execution.Execution` (every cost of
``--execution``, the volume cap, dividends under total returns), the replay's own accounting. A ticker is never
held outside its membership (:mod:`tr1_env.data.universe`).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from tr1_env.context.modalities.market import MARKET_FEATURES, indicators, market_features
from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store
from tr1_env.data.universe import load_universe, membership, universe
from tr1_env.envs.trading_env import OBS_BOUND
from tr1_env.evaluation.portfolio import Legs
from tr1_env.execution import Execution

__all__ = ["MODES", "PortfolioEnv", "weights_from_action"]

#: Action modes: long-only weights on the simplex (tickers and cash), or long-short with a gross-exposure cap.
MODES = ("long_only", "long_short")


def weights_from_action(action: np.ndarray, held: np.ndarray, mode: str = "long_only", gross: float = 1.0
                        ) -> np.ndarray:
    """Target weights of the tickers (cash is the rest) from an action in ``[-1, 1]``; ``held`` marks the tickers
    that may be held (the others get 0).

    ``long_only``: the action has one entry per ticker and a last one for cash; negative entries count as 0, the
    rest are normalised to sum 1 (all zero: all cash). A point of the simplex maps to itself.
    ``long_short``: one entry per ticker, scaled by ``gross``; if the gross exposure ``sum |w|`` then exceeds
    ``gross`` the weights are scaled down to it. Weights within the cap map to themselves (as ``w / gross``).
    """
    a = np.clip(np.nan_to_num(np.asarray(action, float)), -1.0, 1.0)
    if mode == "long_only":
        x = np.maximum(a, 0.0) * np.append(held, True)
        total = x.sum()
        return x[:-1] / total if total > 0 else np.zeros(len(held))
    if mode == "long_short":
        w = gross * a * held
        exposure = np.abs(w).sum()
        return w * (gross / exposure) if exposure > gross else w
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class PortfolioEnv(gym.Env):
    """``tickers`` (or a universe file's) plus cash over ``[start, end]``; truncated on the period's last session.

    The calendar is every session on which some ticker trades; a decision is taken at each close but the last.
    ``equity`` compounds the net returns, so ln(final / initial equity) is the sum of rewards. ``info`` holds the
    date, the weights (``weights``: tickers then cash), equity, cost and turnover of the step.
    """

    metadata = {"render_modes": []}

    def __init__(self, store: Store | None = None, tickers: tuple[str, ...] | None = ("AAPL", "MSFT", "NVDA"),
                 start="2023-01-01", end="2023-12-29", mode: str = "long_only", gross: float = 1.0,
                 execution: Execution = Execution(), universe_file: str | None = None, initial_equity: float = 1.0,
                 total_return: bool | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not gross > 0:
            raise ValueError(f"gross must be > 0, got {gross!r}")
        self.store = store if store is not None else Store()
        spans = universe(self.store, tickers, load_universe(universe_file) if universe_file else None)
        spans = spans[(spans["from"] <= pd.Timestamp(end)) & (spans["to"] >= pd.Timestamp(start))]
        self.tickers = tuple(dict.fromkeys(canonical_ticker(t) for t in spans["ticker"]))
        if not self.tickers:
            raise ValueError(f"no universe ticker trades in {start}..{end}")
        self.mode, self.gross, self.execution, self.initial_equity = mode, gross, execution, initial_equity
        frames = {t: self.store.asof(t, end).prices.set_index("date") for t in self.tickers}
        self.days = pd.DatetimeIndex(sorted(set().union(*(f.index for f in frames.values()))))
        self.days = self.days[(self.days >= pd.Timestamp(start)) & (self.days <= pd.Timestamp(end))]
        if len(self.days) < 2:
            raise ValueError(f"{len(self.days)} session(s) in {start}..{end}; an episode needs 2")
        self.n_steps = len(self.days) - 1
        self.held = membership(spans, self.tickers, self.days)
        closes = pd.DataFrame({t: f["close"] for t, f in frames.items()}).reindex(self.days)
        opens = pd.DataFrame({t: f["open"] for t, f in frames.items()}).reindex(self.days)
        total = execution.total_return if total_return is None else total_return  # dividends: the replay's
        dividends = {t: self.store.asof(t, end).dividends.set_index("date")["amount"] for t in self.tickers} \
            if total else None
        history = [pd.DataFrame({t: f[c] for t, f in frames.items()}) for c in ("close", "volume")]
        self.legs = Legs(closes.where(self._members(spans)), opens, execution, dividends,
                         execution.liquidity(*history) if execution.needs_liquidity else None)
        n, k = len(self.tickers), len(MARKET_FEATURES)
        features = np.zeros((len(self.days), n, k), np.float32)
        for j, t in enumerate(self.tickers):
            f = market_features(indicators(frames[t].reset_index()))[list(MARKET_FEATURES)].reindex(self.days)
            features[:, j] = np.clip(f.fillna(0.0).to_numpy(), -OBS_BOUND, OBS_BOUND)
        features *= self.held[:, :, None]  # nothing is observed of a ticker outside its membership
        self._rows = np.concatenate([features.reshape(len(self.days), -1), self.held.astype(np.float32)], axis=1)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (self._rows.shape[1] + n + 2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (n + 1 if mode == "long_only" else n,), np.float32)
        self._t, self.weights, self.equity = 0, np.zeros(n), initial_equity

    def _members(self, spans: pd.DataFrame) -> pd.DataFrame:
        """Days x tickers: inside a membership span (prices outside are not the book's)."""
        inside = pd.DataFrame(False, index=self.days, columns=list(self.tickers))
        for r in spans.itertuples(index=False):
            inside.loc[(self.days >= r[1]) & (self.days <= r[2]), r.ticker] = True
        return inside

    def weights_from_action(self, action) -> np.ndarray:
        """:func:`weights_from_action` on the current session's membership."""
        return weights_from_action(action, self.held[self._t], self.mode, self.gross)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t, self.weights, self.equity = 0, np.zeros(len(self.tickers)), self.initial_equity
        return self._observation(), self._info(0.0, 0.0)

    def step(self, action):
        if self._t >= self.n_steps:
            raise RuntimeError("the episode was truncated at the period end: call reset()")
        target = self.weights_from_action(action)
        booked = self.legs.book(target[None], self.execution, slice(self._t, self._t + 1), self.weights,
                                self.equity / self.initial_equity)
        cost, turnover, self.weights = float(booked.cost[0]), float(booked.turnover[0]), booked.carried[0]
        growth = max(1 + float(booked.ret[0]), 1e-12)  # a long-short book can lose everything: the episode then ends
        self.equity *= growth
        self._t += 1
        return (self._observation(), float(math.log(growth)), growth <= 1e-12, self._t == self.n_steps,
                self._info(cost, turnover))

    def _observation(self) -> np.ndarray:
        cash = 1 - self.weights.sum()
        return np.concatenate([self._rows[self._t], np.clip([*self.weights, cash], -OBS_BOUND, OBS_BOUND),
                               [(self.n_steps - self._t) / self.n_steps]]).astype(np.float32)

    def _info(self, cost: float, turnover: float) -> dict[str, Any]:
        return {"date": self.days[self._t], "weights": np.append(self.weights, 1 - self.weights.sum()),
                "equity": self.equity, "cost": cost, "turnover": turnover}
