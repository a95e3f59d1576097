"""FLAG-TRADER's trading MDP: one step per trading day, reward = position x next-day log return - costs.

The action sets the target position; each step is booked by the env's :class:`~tr1_env.execution.Execution`
(:meth:`~tr1_env.execution.Execution.book`, the replay's own booking: the fill, every cost of ``--execution``, the
volume cap, borrow, cash interest, dividends under total returns), so the policy is paid as it is booked and the
env's equity is the replay's. Market features are
computed once, from the prices available at the close of ``end`` and from the start of the
store's history, with causal indicators only: row ``t`` depends on prices up to ``t`` and not on
where the series is cut, so the observation of day ``t`` equals the one built from
``store.cut(t)`` (tested). Observations are numeric (for stable-baselines3) or a prompt (for LLMs).
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from tr1_env.context.anonymize import Pseudonyms, Rebase, anonymize_text, level_of
from tr1_env.context.modalities.market import MARKET_FEATURES, indicators, market_features
from tr1_env.core.actions import DEFAULT_WEIGHTS, Action
from tr1_env.data.clock import NY
from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store
from tr1_env.envs.spaces import UnicodeText
from tr1_env.evaluation.backtest import gross_returns, sessions
from tr1_env.execution import Execution, trading_reward

OBS_NAMES: tuple[str, ...] = (*MARKET_FEATURES, "position", "time_left")
#: Features are clipped to [-OBS_BOUND, OBS_BOUND] (only degenerate data gets there): a bounded Box for SB3.
OBS_BOUND = 10.0

#: Action names (in action-index order) and the target position of each.
ACTION_MODES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "sell_hold_buy": (("sell", "hold", "buy"), (-1.0, 0.0, 1.0)),
    "five": (tuple(a.name for a in Action), tuple(DEFAULT_WEIGHTS[a] for a in Action)),
}

_NAME = r"(strong[\s_-]*(?:sell|buy)|sell|hold|buy)"
_ACTION = re.compile(rf"\baction[^\w\n]{{1,10}}{_NAME}\b|\[\[\[\s*{_NAME}\s*\]\]\]", re.IGNORECASE)

TASK = """You are a trading agent managing a single position in {ticker}, one decision per trading day.
Your action sets the position you hold: {mapping}. Execution: {execution}.
Your reward is the old position x ln(fill / today's close) + the new position x ln(next close / fill), fill being \
the order's price, minus the costs. Maximise the cumulative reward.

Allowed actions: {names}

State at the close of {date:%Y-%m-%d} (session {session} of {n_sessions}):
- Equity {equity:.4f}, cash {cash:.4f}, position {position:+.2f}
- Last {window} sessions (returns and volatility in %, RSI 0-100, Bollinger position 0 = lower band, 1 = upper):
{table}
- Latest {ticker} headlines:
{news}

Think briefly, then end with one line in exactly this format: Action: <one of {names}>
"""


def action_index(text: str, action_mode: str = "sell_hold_buy") -> int | None:
    """The action index of the last ``Action: <name>`` (or Trading-R1 ``[[[NAME]]]``) in ``text``; None if absent.

    Names are matched case-insensitively; in ``sell_hold_buy`` mode a strong call counts as its direction.
    """
    matches = _ACTION.findall(text)
    if not matches:
        return None
    action = Action.parse(re.sub(r"[\s_-]+", "_", "".join(matches[-1])))
    return int(action) if action_mode == "five" else action.direction + 1


class TradingEnv(gym.Env):
    """One ticker over ``[start, end]``; the episode is truncated on the last session of the period.

    Actions are target positions, not trades: ``hold`` means flat (0), as in InvestorBench. A
    decision is taken at each session's close except the last (its return would need a price after
    ``end``). The reward is FLAG-TRADER's, ``old position x ln(fill / close) + new position x ln(next close / fill)``
    (dividends added to the leg that holds over the ex-date), less the session's costs as a fraction of equity
    (commission, slippage, impact, borrow; plus cash interest) from the book; ``position`` is the weight the order
    reached (the target, unless a volume cap stopped it) and ``equity`` the book's, the replay's for the same
    actions: ln(final / initial equity) is the sum of rewards when long or flat without costs (InvestorBench's
    cumulative return), and close to it otherwise. ``total_return`` (default: the execution's preset) books
    dividends. ``anonymize=True`` (strict) or a level (text observations) passes each
    prompt through :func:`tr1_env.context.anonymize.anonymize_text`: pseudonyms fixed per episode
    (``info["pseudonyms"]``), dates relative to the session, closes rebased so the first row shown is 100.
    """

    metadata = {"render_modes": []}

    def __init__(self, store: Store | None = None, ticker: str = "MSFT", start="2020-10-01", end="2021-05-28",
                 obs_mode: str = "numeric", action_mode: str = "sell_hold_buy", execution: Execution = Execution(),
                 window: int = 10, news_items: int = 5, initial_equity: float = 1.0, max_length: int = 20_000,
                 anonymize: bool | str | None = False, total_return: bool | None = None):
        if obs_mode not in ("numeric", "text"):
            raise ValueError(f"obs_mode must be 'numeric' or 'text', got {obs_mode!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {list(ACTION_MODES)}, got {action_mode!r}")
        self.store = store if store is not None else Store()
        self.ticker = canonical_ticker(ticker)
        self.obs_mode, self.action_mode = obs_mode, action_mode
        self.execution, self.window, self.news_items = execution, window, news_items
        self.initial_equity = initial_equity
        self.anonymize = level_of(anonymize)
        self.pseudonyms: Pseudonyms | None = None
        #: Features of every session up to ``end``, from the prices knowable at ``end``'s close.
        prices = self.store.asof(ticker, end).prices
        self.features = market_features(indicators(prices))
        self._first = int(self.features.index.searchsorted(pd.Timestamp(start)))
        self.days = self.features.index[self._first:]
        if len(self.days) < 2:
            raise ValueError(f"{ticker} has {len(self.days)} session(s) in {start}..{end}; an episode needs 2")
        #: Decisions per episode: every session of the period but the last.
        self.n_steps = len(self.days) - 1
        # Observation rows with the time-left column filled in and the position column left to fill.
        self._rows = np.zeros((len(self.days), len(OBS_NAMES)), np.float32)
        features = self.features.loc[self.days, list(MARKET_FEATURES)].to_numpy()
        self._rows[:, :len(MARKET_FEATURES)] = np.clip(features, -OBS_BOUND, OBS_BOUND)
        self._rows[:, -1] = np.arange(self.n_steps, -1, -1) / self.n_steps
        closes = self.features["close"].iloc[self._first:]
        self._closes = closes.to_numpy(float)
        # The price each session's order executes at (the import checks prices > 0).
        opens = prices.set_index("date")["open"].reindex(self.days)
        self._fills = execution.prices(closes, opens)
        # The replay's legs of each session (dividends, on the split basis of ``end``, under total returns), and the
        # volatility and dollar volume a cap or an impact reads at each decision close.
        total = execution.total_return if total_return is None else total_return
        dividends = self.store.asof(ticker, end).dividends.set_index("date")["amount"] if total else None
        _, cash = sessions(closes, self.days, dividends)
        legs = execution.model.legs(gross_returns(closes, cash), closes, cash, opens)
        self._cash = cash.tolist()  # floats: a step does plain arithmetic
        self._legs = tuple(x[:, None] for x in (*legs, self._fills))
        self._overnight = execution.model.overnight  # whether the old position holds over the ex-date's open
        self._liquidity = None
        if execution.needs_liquidity:
            bars = prices.set_index("date")
            self._liquidity = tuple(x.reindex(self.days[:-1]).to_numpy(float)[:, None]
                                    for x in execution.liquidity(bars["close"], bars["volume"]))
        # With costs that read no dollars, every (previous, target) change of position is booked for every session
        # at once, so that a step looks its session up instead of booking it (an SB3 step pays no numpy call).
        self._table: dict[tuple[float, float], tuple[list[float], ...]] = {}
        if not execution.equity_dependent:
            positions = sorted({0.0, *ACTION_MODES[action_mode][1]})
            for before, target in itertools.product(positions, positions):
                booked = self._book(np.full((self.n_steps, 1), target), slice(None),
                                    np.full((self.n_steps, 1), before), 1.0)
                self._table[before, target] = tuple(x.tolist() for x in (booked.ret, booked.position[:, 0],
                                                                        booked.cost, booked.carry))
        self._dates = list(self.days)
        self.action_names, self.targets = ACTION_MODES[action_mode]
        self.action_space = spaces.Discrete(len(self.action_names))
        self.observation_space = (spaces.Box(-OBS_BOUND, OBS_BOUND, (len(OBS_NAMES),), np.float32)
                                  if obs_mode == "numeric" else UnicodeText(max_length, min_length=1))
        self._t = 0
        self.position = 0.0
        self.equity = initial_equity

    def action_index(self, text: str) -> int | None:
        """:func:`action_index` for this env's action mode."""
        return action_index(text, self.action_mode)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start flat on the first session, or where ``options={"date": ..., "position": ...}`` says."""
        super().reset(seed=seed)
        options = options or {}
        t = self._session(options["date"]) if "date" in options else 0
        if t >= self.n_steps:
            raise ValueError(f"an episode cannot start on the period's last session {self._dates[t]:%Y-%m-%d}")
        self._t = t
        self.position = float(options.get("position", 0.0))
        self.equity = self.initial_equity
        if self.anonymize:
            self.pseudonyms = Pseudonyms.for_episode(self.ticker, self.np_random)
        return self._observation(), self._info(log_return=0.0, cost=0.0)

    def observation_at(self, date, position: float = 0.0) -> np.ndarray | str:
        """What the env observes on session ``date`` holding ``position``; the episode does not move.

        For callers that decide on their own schedule (a replay harness) yet must see exactly what
        the policy saw in training. The text prompt's equity and cash are the running episode's.
        """
        return self._observe(self._session(date), float(position))

    def step(self, action):
        if self._t >= self.n_steps:
            raise RuntimeError("the episode was truncated at the period end: call reset()")
        index = int(action)
        if not 0 <= index < len(self.targets):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        t, target = self._t, self.targets[index]
        close, after, filled, cash = self._closes[t], self._closes[t + 1], self._fills[t], self._cash[t + 1]
        booked = self._table.get((self.position, target))
        if booked is None:  # a start position off the table, or costs that read the book's dollars
            one = self._book(np.array([[target]]), slice(t, t + 1), np.array([self.position]),
                             self.equity / self.initial_equity)
            ret, position, cost, carry = (float(x.ravel()[0]) for x in (one.ret, one.position, one.cost, one.carry))
        else:
            ret, position, cost, carry = booked[0][t], booked[1][t], booked[2][t], booked[3][t]
        night = (filled + cash) / close if self._overnight else filled / close
        day = after / filled if self._overnight else (after + cash) / filled
        reward = trading_reward(position, math.log(day), self.position, overnight=math.log(night)) - cost + carry
        log_return = math.log((after + cash) / close)
        self.position = position
        self.equity *= 1 + ret
        self._t += 1
        truncated = self._t == self.n_steps
        return self._observation(), reward, False, truncated, self._info(log_return, cost)

    def _book(self, w: np.ndarray, rows: slice, held: np.ndarray, equity: float):
        """:meth:`Execution.book` of the target ``w`` over the sessions ``rows`` from ``held``, at ``equity``."""
        return self.execution.book(w, *(x[rows] for x in self._legs),
                                   None if self._liquidity is None else tuple(x[rows] for x in self._liquidity),
                                   held=held, equity=equity, drift=False)

    def _info(self, log_return: float, cost: float) -> dict[str, Any]:
        info = {"date": self._dates[self._t], "position": self.position, "equity": self.equity,
                "cash": self.equity * (1 - self.position), "log_return": log_return, "cost": cost}
        if self.pseudonyms is not None:
            info["pseudonyms"] = dict(self.pseudonyms.mapping)
        return info

    def _session(self, date) -> int:
        day = pd.Timestamp(date).normalize()
        t = int(self.days.get_indexer([day])[0])
        if t < 0:
            raise ValueError(f"{self.ticker} has no session on {day:%Y-%m-%d} in the env's period "
                             f"{self.days[0]:%Y-%m-%d}..{self.days[-1]:%Y-%m-%d}")
        return t

    def _observation(self) -> np.ndarray | str:
        return self._observe(self._t, self.position)

    def _observe(self, t: int, position: float) -> np.ndarray | str:
        if self.obs_mode == "text":
            return self._prompt(t, position)
        obs = self._rows[t].copy()
        obs[-2] = position
        return obs

    def _prompt(self, t: int, position: float) -> str:
        """The FLAG-TRADER state prompt (what ``obs_mode="text"`` observes)."""
        day = self._dates[t]
        recent = self.features.iloc[max(0, self._first + t - self.window + 1): self._first + t + 1]
        view = self.store.asof(self.ticker, day)
        # Price levels as known that day (a split after ``day`` must not show); the features are scale-free.
        recent = recent.assign(close=view.prices.set_index("date")["close"].reindex(recent.index))
        rows = ["| date | close | ret 1d | ret 5d | vol 20d | RSI 14 | MACD hist % | Bollinger pos | vs SMA50 |",
                "|---|---|---|---|---|---|---|---|---|"]
        rows += [f"| {r.Index:%Y-%m-%d} | {r.close:.2f} | {100 * r.ret_1d:+.2f} | {100 * r.ret_5d:+.2f} | "
                 f"{100 * r.vol_20d:.1f} | {100 * (r.rsi_14 + 0.5):.1f} | {r.macdh_norm:+.3f} | "
                 f"{r.boll_pos + 0.5:.2f} | {100 * r.sma50_gap:+.2f}% |" for r in recent.itertuples()]
        news = view.news.iloc[::-1].head(self.news_items)
        lines = [f"  - [{r.published_at.tz_convert(NY):%Y-%m-%d}] {r.title}" for r in news.itertuples(index=False)]
        names = ", ".join(self.action_names)
        mapping = ", ".join(f"{n} = {w:g}" for n, w in zip(self.action_names, self.targets, strict=True))
        text = TASK.format(ticker=self.ticker, mapping=mapping, execution=self.execution.describe(), names=names,
                           date=day, session=t + 1, n_sessions=len(self.days), equity=self.equity,
                           cash=self.equity * (1 - position), position=position, window=len(recent),
                           table="\n".join(rows), news="\n".join(lines) or "  (none available)")
        if not self.anonymize:
            return text
        if self.pseudonyms is None:
            self.pseudonyms = Pseudonyms.for_episode(self.ticker)
        bars = pd.DataFrame({"date": recent.index, "close": recent["close"].to_numpy()})
        return anonymize_text(text, self.pseudonyms, Rebase.from_history(bars, day, recent.index[0]), self.anonymize)
