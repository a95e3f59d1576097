"""A portfolio MDP: one step per trading day over a universe of tickers plus cash; reward = the net log return.

The observation is a flat Box: per ticker its :data:`~tr1_env.context.modalities.market.MARKET_FEATURES` (the
Trading env's, computed the same causal way from the prices known at ``end``) and whether it may be held that day,
then the current (drifted) weights of the tickers and of cash, then the share of the episode left; with
``obs_mode="text"`` it is the allocation prompt an LLM reads (:mod:`tr1_env.context.allocation_prompt`), whose JSON
answer :meth:`PortfolioEnv.parse_action` turns into an action. The action is
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

from tr1_env.context.allocation_prompt import allocation_prompt
from tr1_env.context.anonymize import Pseudonyms, Rebase, anonymize_text, level_of
from tr1_env.context.modalities.market import MARKET_FEATURES, indicators, market_features
from tr1_env.core.allocation import parse_allocation
from tr1_env.data.clock import NY
from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store
from tr1_env.data.universe import load_universe, membership, universe
from tr1_env.envs.spaces import UnicodeText
from tr1_env.envs.trading_env import OBS_BOUND
from tr1_env.evaluation.portfolio import Legs
from tr1_env.execution import Execution

__all__ = ["MODES", "OBS_MODES", "PortfolioEnv", "weights_from_action"]

#: Action modes: long-only weights on the simplex (tickers and cash), or long-short with a gross-exposure cap.
MODES = ("long_only", "long_short")
#: Observation modes: a flat Box (stable-baselines3) or the allocation prompt (LLMs).
OBS_MODES = ("numeric", "text")


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

    ``obs_mode="text"`` observes the allocation prompt (``news_items`` headlines per ticker, at most ``max_length``
    characters); ``anonymize`` (a level of :mod:`tr1_env.context.anonymize`) shows the tickers as pseudonyms drawn
    per episode (``info["pseudonyms"]``) and takes names and dates out of the text, as the Trading env's does.
    """

    metadata = {"render_modes": []}

    def __init__(self, store: Store | None = None, tickers: tuple[str, ...] | None = ("AAPL", "MSFT", "NVDA"),
                 start="2023-01-01", end="2023-12-29", mode: str = "long_only", gross: float = 1.0,
                 execution: Execution = Execution(), universe_file: str | None = None, initial_equity: float = 1.0,
                 obs_mode: str = "numeric", news_items: int = 2, max_length: int = 40_000,
                 anonymize: bool | str | None = None, total_return: bool | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if not gross > 0:
            raise ValueError(f"gross must be > 0, got {gross!r}")
        self.store = store if store is not None else Store()
        spans = universe(self.store, tickers, load_universe(universe_file) if universe_file else None)
        spans = spans[(spans["from"] <= pd.Timestamp(end)) & (spans["to"] >= pd.Timestamp(start))]
        self.tickers = tuple(dict.fromkeys(canonical_ticker(t) for t in spans["ticker"]))
        if not self.tickers:
            raise ValueError(f"no universe ticker trades in {start}..{end}")
        self.mode, self.gross, self.execution, self.initial_equity = mode, gross, execution, initial_equity
        self.obs_mode, self.news_items, self.anonymize = obs_mode, news_items, level_of(anonymize)
        self.pseudonyms: Pseudonyms | None = None
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
        #: Each ticker's features by session (the text mode prints them unclipped).
        self.features = {t: market_features(indicators(frames[t].reset_index()))[list(MARKET_FEATURES)]
                         .reindex(self.days) for t in self.tickers}
        for j, t in enumerate(self.tickers):
            features[:, j] = np.clip(self.features[t].fillna(0.0).to_numpy(), -OBS_BOUND, OBS_BOUND)
        features *= self.held[:, :, None]  # nothing is observed of a ticker outside its membership
        self._rows = np.concatenate([features.reshape(len(self.days), -1), self.held.astype(np.float32)], axis=1)
        self.observation_space = (spaces.Box(-OBS_BOUND, OBS_BOUND, (self._rows.shape[1] + n + 2,), np.float32)
                                  if obs_mode == "numeric" else UnicodeText(max_length, min_length=1))
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
        if self.anonymize:
            self.pseudonyms = Pseudonyms.for_episode("", self.np_random)
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

    def observation_at(self, date, weights: np.ndarray) -> np.ndarray | str:
        """What the env observes at the close of ``date`` holding ``weights`` (tickers; cash is the rest); the
        episode does not move. For a harness that books the weights itself yet must show what the env shows."""
        return self._observe(self._session(date), np.asarray(weights, float))

    def _session(self, date) -> int:
        t = int(self.days.get_indexer([pd.Timestamp(date).normalize()])[0])
        if t < 0:
            raise ValueError(f"no session on {pd.Timestamp(date):%Y-%m-%d} in the env's period "
                             f"{self.days[0]:%Y-%m-%d}..{self.days[-1]:%Y-%m-%d}")
        return t

    def parse_action(self, text: str, date=None) -> np.ndarray:
        """The action of an LLM's answer to the text observation of ``date`` (default: the current session): its
        JSON allocation over the tickers shown that day, read strictly by
        :func:`~tr1_env.core.allocation.parse_allocation` (an :class:`~tr1_env.core.allocation.AllocationError`
        when it is none: a failed decision), as the action that :meth:`weights_from_action` maps back to it."""
        members = self.held[self._t if date is None else self._session(date)]
        shown = [self._name(t) for t, ok in zip(self.tickers, members) if ok]
        w = np.zeros(len(self.tickers))
        w[members] = parse_allocation(text, shown, self.mode == "long_only")
        return np.append(w, 1 - w.sum()) if self.mode == "long_only" else w / self.gross

    def _name(self, ticker: str) -> str:
        return self.pseudonyms.ticker(ticker) if self.pseudonyms is not None else ticker

    def _observation(self) -> np.ndarray | str:
        return self._observe(self._t, self.weights)

    def _observe(self, t: int, weights: np.ndarray) -> np.ndarray | str:
        if self.obs_mode == "text":
            return self._prompt(t, weights)
        cash = 1 - weights.sum()
        return np.concatenate([self._rows[t], np.clip([*weights, cash], -OBS_BOUND, OBS_BOUND),
                               [(self.n_steps - t) / self.n_steps]]).astype(np.float32)

    def _prompt(self, t: int, weights: np.ndarray) -> str:
        """The allocation prompt of session ``t``: the tickers that may be held then, their news as known then."""
        day = self.days[t]
        members = [j for j in range(len(self.tickers)) if self.held[t, j]]
        if self.anonymize and self.pseudonyms is None:
            self.pseudonyms = Pseudonyms.for_episode("")
        lines = []
        for j in members:
            news = self.store.asof(self.tickers[j], day).news.iloc[::-1].head(self.news_items)
            lines += [f"  - {self._name(self.tickers[j])} [{r.published_at.tz_convert(NY):%Y-%m-%d}] {r.title}"
                      for r in news.itertuples(index=False)]
        text = allocation_prompt(day, [self.tickers[j] for j in members], weights[members],
                                 {self.tickers[j]: self.features[self.tickers[j]].iloc[t] for j in members}, lines,
                                 self.execution.describe(), self.mode == "long_only", self.gross,
                                 {t_: self._name(t_) for t_ in self.tickers})
        if not self.anonymize:
            return text
        return anonymize_text(text, self.pseudonyms, Rebase(day, 1.0, 1.0, 1.0, 1.0), self.anonymize)

    def _info(self, cost: float, turnover: float) -> dict[str, Any]:
        info = {"date": self.days[self._t], "weights": np.append(self.weights, 1 - self.weights.sum()),
                "equity": self.equity, "cost": cost, "turnover": turnover}
        if self.pseudonyms is not None:
            info["pseudonyms"] = {t: self.pseudonyms.ticker(t) for t in self.tickers}
        return info
