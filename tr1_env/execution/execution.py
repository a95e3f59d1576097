"""The execution model: a fill and the costs of trading, as one frozen value every route takes.

The replay (:func:`tr1_env.evaluation.backtest.backtest`), the Trading env's reward, SB3 training and
FLAG-TRADER all receive an :class:`Execution` and ask it for the price of an order, what a change of weight
costs and the net return or reward of a session, so a new execution setting (a commission per share, slippage,
a borrow fee) is a field and a method here, and no caller changes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tr1_env.execution.fills import FILLS, Fill

__all__ = ["Execution", "trading_reward"]


def trading_reward(position, log_return, previous_position=0.0, cost_bps: float = 0.0, overnight=0.0):
    """FLAG-TRADER's daily reward: ``position * log_return - cost_bps / 1e4 * |position - previous_position|``.

    ``position`` is the weight held from one close to the next, ``log_return`` the asset's log return
    over that day, and the cost is paid on the change of weight at the first close. The rewards of an
    episode add up to the log growth of its equity. Elementwise on arrays; with no cost it is
    InvestorBench's ``action * ln(P_t+1 / P_t)``. Filled at the next open instead, ``log_return`` is that
    session's open-to-close part and ``overnight`` (close to next open) is still earned by ``previous_position``.
    Floats or numpy arrays (plain operators: a Trading env step pays no numpy call).
    """
    return previous_position * overnight + position * log_return - cost_bps / 1e4 * abs(position - previous_position)


#: ``--execution`` presets: the settings each one changes from the field defaults (a flag left at its default takes
#: the preset's value). ``realistic`` is FINSABER-like (docs/execution.md gives the sources): IBKR-style per-share
#: commission with a minimum per order (FINSABER's ``USStockCommission``: $0.0049 a share, at least $0.99), a cap of
#: 10% of the average daily dollar volume over 252 sessions (FINSABER's ``LiquidityConfig``), a square-root impact
#: term, 5 bps of slippage, a 50 bps a year borrow fee on shorts, on FINSABER's $100,000 book; total returns.
PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "realistic": {"cost_bps": 0.0, "capital": 100_000.0, "commission_per_share": 0.0049, "commission_min": 0.99,
                  "slippage_bps": 5.0, "impact_coef": 0.5, "participation": 0.10, "lookback": 252,
                  "borrow_bps": 50.0},
}
SESSIONS_PER_YEAR = 252


@dataclass(frozen=True)
class Trade:
    """What one order did, elementwise over any array shape (a ticker, or days x tickers): the weight it reached
    and what it paid, each a fraction of the equity before the order; ``unfilled`` is the weight left undone."""

    position: np.ndarray
    commission: np.ndarray
    slippage: np.ndarray
    impact: np.ndarray
    unfilled: np.ndarray

    @property
    def cost(self) -> np.ndarray:
        return self.commission + self.slippage + self.impact


@dataclass(frozen=True)
class Execution:
    """How decisions taken at a close are executed and what they pay; each field is also a flag of the replay."""

    fill: str = field(default="close", metadata={
        "choices": tuple(FILLS), "help": "when a decision made on a close executes (tr1_env.execution.FILLS; "
                                         "close: at that close, optimistic)"})
    cost_bps: float = field(default=10.0, metadata={
        "help": "transaction cost in bps of equity per unit of weight traded (a commission in bps)"})
    execution: str = field(default="default", metadata={
        "choices": tuple(PRESETS), "help": "preset of the settings below (docs/execution.md): default is today's "
                                           "books; realistic is FINSABER-like (per-share commission, slippage, "
                                           "impact, a volume cap, a borrow fee, total returns)"})
    capital: float = field(default=1_000_000.0, metadata={
        "help": "USD each agent x ticker book starts with: what turns weights into shares and dollars"})
    commission_per_share: float = field(default=0.0, metadata={"help": "commission in USD per share traded"})
    commission_min: float = field(default=0.0, metadata={"help": "minimum commission in USD per order"})
    slippage_bps: float = field(default=0.0, metadata={"help": "slippage in bps of the value traded"})
    impact_coef: float = field(default=0.0, metadata={
        "help": "square-root market impact: a fraction coef x daily volatility x sqrt(value traded / average "
                "dollar volume) of the value traded (0: none)"})
    participation: float = field(default=0.0, metadata={
        "help": "most of the average daily dollar volume one order may trade; the rest is not filled and is "
                "reported (0: no cap)"})
    lookback: int = field(default=20, metadata={
        "help": "sessions, up to the decision's, of the volatility and average dollar volume of impact and cap"})
    borrow_bps: float = field(default=0.0, metadata={
        "help": "short-borrow fee in bps a year of the short exposure, charged per session"})
    cash_rate: float = field(default=0.0, metadata={
        "help": "annual interest on the equity no position uses, per session (e.g. 0.04; 0: off)"})
    charge_llm_cost: bool = field(default=False, metadata={
        "help": "subtract each LLM decision's token cost (tr1_env/data/model_prices.csv) from its book"})

    def __post_init__(self):
        if self.execution not in PRESETS:
            raise ValueError(f"execution must be one of {tuple(PRESETS)}, got {self.execution!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in PRESETS[self.execution].items():
            if getattr(self, name) == defaults[name]:
                object.__setattr__(self, name, value)
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {tuple(FILLS)}, got {self.fill!r}")
        for name in ("cost_bps", "commission_per_share", "commission_min", "slippage_bps", "impact_coef",
                     "borrow_bps", "cash_rate"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name):g}")
        if not self.capital > 0:
            raise ValueError(f"--capital must be > 0, got {self.capital:g}")
        if not 0 <= self.participation <= 1:
            raise ValueError(f"--participation must be in [0, 1] (0: no cap), got {self.participation:g}")
        if self.lookback < 2:
            raise ValueError(f"--lookback must be >= 2 sessions, got {self.lookback}")

    @classmethod
    def from_settings(cls, settings: dict) -> Execution:
        """The execution a saved config names: nested under ``execution``, or flat (``cost_bps`` and, from before
        fills were a setting, maybe no ``fill``: the close) as older FLAG-TRADER checkpoints keep it."""
        if isinstance(settings.get("execution"), dict):
            return cls(**settings["execution"])
        return cls(**{f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings})

    @property
    def model(self) -> Fill:
        """The fill named by :attr:`fill`."""
        return FILLS[self.fill]()

    @property
    def total_return(self) -> bool:
        """Whether the preset books dividends (``--total-return`` turns them on under any preset)."""
        return self.execution == "realistic"

    @property
    def needs_liquidity(self) -> bool:
        """Whether the costs read volatility and dollar volume (:meth:`liquidity`)."""
        return self.impact_coef > 0 or self.participation > 0

    def describe(self) -> str:
        """The execution in words, the one description reports, the Trading env's prompt and the docs use."""
        parts = [f"costs {self.cost_bps:g} bps of equity per unit of weight traded"]
        if self.commission_per_share or self.commission_min:
            parts.append(f"a commission of ${self.commission_per_share:g} a share, at least ${self.commission_min:g} "
                         "an order")
        if self.slippage_bps:
            parts.append(f"{self.slippage_bps:g} bps of slippage")
        if self.impact_coef:
            parts.append(f"square-root impact {self.impact_coef:g} x volatility x sqrt(share of the {self.lookback}"
                         "-session average dollar volume)")
        if self.participation:
            parts.append(f"orders capped at {self.participation:.0%} of that volume (the rest unfilled)")
        if self.borrow_bps:
            parts.append(f"a borrow fee of {self.borrow_bps:g} bps a year on shorts")
        if self.cash_rate:
            parts.append(f"{self.cash_rate:.2%} a year on idle cash")
        if self.charge_llm_cost:
            parts.append("LLM token costs charged to the book")
        book = f" on a ${self.capital:,.0f} book" if len(parts) > 1 else ""
        return f"{self.model.description}; {', '.join(parts)}{book}"

    def tag(self) -> str:
        """A short file-name-safe key of every setting (``10bps``, ``5bps_next-open``), for caches of what was
        trained under it; the defaults of the fields after ``cost_bps`` add nothing, so older keys stay valid."""
        parts = [f"{self.cost_bps:g}bps", *([self.fill] if self.fill != Fill.name else [])]
        parts += [f"{f.name}{getattr(self, f.name)}" for f in dataclasses.fields(self)[2:]
                  if getattr(self, f.name) != f.default]
        return "_".join(parts)

    def unmodelled_by_weights(self) -> list[str]:
        """The settings a book of weights alone cannot honour (they need shares, volumes, shorts or tokens): the
        flags of those set, so a caller that books weights only (:meth:`cost`) can refuse them by name."""
        return [f"--{name.replace('_', '-')}" for name in ("commission_per_share", "commission_min", "impact_coef",
                                                            "participation", "borrow_bps", "cash_rate",
                                                            "charge_llm_cost") if getattr(self, name)]

    def cost(self, previous, target):
        """The fraction of equity a change of weight from ``previous`` to ``target`` pays in bps costs (elementwise):
        the Trading env's; the book adds the costs that need prices and volumes (:meth:`trade`)."""
        traded = abs(target - previous)
        return self.cost_bps / 1e4 * traded + self.slippage_bps / 1e4 * traded

    def liquidity(self, closes: pd.Series | pd.DataFrame, volumes: pd.Series | pd.DataFrame
                  ) -> tuple[pd.Series | pd.DataFrame, pd.Series | pd.DataFrame]:
        """Daily volatility (std of close-to-close returns) and average dollar volume over the :attr:`lookback`
        sessions ending at each date, so a decision at a close reads nothing after it (per column of a frame)."""
        sigma = closes.pct_change().rolling(self.lookback, min_periods=2).std()
        dollar = (closes * volumes).rolling(self.lookback, min_periods=1).mean()
        return sigma, dollar

    def trade(self, held, target, equity, price, dollar_volume=None, sigma=None) -> Trade:
        """One order from weight ``held`` to ``target`` at ``price``, ``equity`` the book's value (1 at the start)
        before it; elementwise over arrays of any shape (days x tickers for a portfolio). ``dollar_volume`` and
        ``sigma`` (:meth:`liquidity` at the decision) are read by the cap and the impact only.

        The order trades at most :attr:`participation` of the dollar volume; commission is ``cost_bps`` of the
        weight filled plus ``max(per share x shares, minimum)`` for a non-empty order; slippage ``slippage_bps`` and
        impact ``impact_coef x sigma x sqrt(value / dollar volume)`` of the value filled."""
        held, target = np.asarray(held, dtype=float), np.asarray(target, dtype=float)
        delta = target - held
        usd = np.asarray(equity, dtype=float) * self.capital
        if self.participation:
            room = self.participation * np.asarray(dollar_volume, dtype=float) / usd
            delta = np.clip(delta, -room, room)
        traded = abs(delta)
        commission = self.cost_bps / 1e4 * traded
        if self.commission_per_share or self.commission_min:
            fee = np.maximum(self.commission_per_share * traded * usd / np.asarray(price, dtype=float),
                             self.commission_min)
            commission = commission + np.where(traded > 0, fee / usd, 0.0)
        impact = np.zeros_like(traded)
        if self.impact_coef:
            impact = self.impact_coef * np.nan_to_num(np.asarray(sigma, dtype=float)) * np.sqrt(
                traded * usd / np.asarray(dollar_volume, dtype=float)) * traded
        reached = np.where(traded < abs(target - held), held + delta, target)  # target itself when filled in full
        return Trade(reached, commission, self.slippage_bps / 1e4 * traded, impact, abs(target - held) - traded)

    def carry(self, position) -> tuple[np.ndarray, np.ndarray]:
        """A session's borrow fee on the short part of ``position`` and interest on the equity no position uses
        (``1 - |w|``, at least 0), each a fraction of equity; elementwise."""
        position = np.asarray(position, dtype=float)
        borrow = self.borrow_bps / 1e4 / SESSIONS_PER_YEAR * np.maximum(-position, 0.0)
        interest = self.cash_rate / SESSIONS_PER_YEAR * np.maximum(1 - abs(position), 0.0)
        return borrow, interest

    def book(self, w: np.ndarray, asset: np.ndarray, closes: pd.Series, cash: np.ndarray, opens: pd.Series | None,
             liquidity: tuple[np.ndarray, np.ndarray] | None = None, llm_usd: np.ndarray | None = None,
             held: float = 0.0, equity: float = 1.0) -> tuple[np.ndarray, pd.DataFrame]:
        """Net daily returns and what each session paid for the weights ``w_i`` decided at the closes of
        ``d_1..d_{n-1}``, starting from the weight ``held`` into ``d_1`` (flat by default; a continuous walk-forward
        passes the previous window's last weight and its ``equity``, 1 at the first window's start): ``asset`` is each
        realised session's return ``d_2..d_n``; ``closes`` and ex-date ``cash`` are over ``d_1..d_n``, ``opens`` over
        them or None; ``liquidity`` is (volatility, dollar volume) at each decision close (:meth:`liquidity`; needed
        by the cap and the impact) and ``llm_usd`` each decision's LLM cost in USD (charged with
        :attr:`charge_llm_cost`).

        The trade pays its cost at the fill; the old weight earns the session up to the fill, the new one the rest,
        and the position held pays its borrow and earns its interest:
        ``r = (1 + a_{i-1} G) (1 - c) (1 + a_i I) (1 + interest - borrow) - llm - 1`` with ``(1 + G)(1 + I)``
        the asset's return and ``a_i`` the weight the order reached (``w_i`` unless capped). The frame holds
        ``position`` (``a_i``) and ``cost`` (``c``), then ``commission``, ``slippage``, ``impact``, ``borrow``,
        ``interest``, ``llm`` and ``unfilled`` (the weight not filled), each in USD.
        """
        overnight, intraday = self.model.legs(asset, closes, cash, opens)
        price = self.prices(closes, opens)
        if self.needs_liquidity and liquidity is None:
            raise ValueError("--impact-coef and --participation need each session's volume")
        sigma, dollar = liquidity if liquidity is not None else (np.full(len(w), np.nan), np.full(len(w), np.nan))
        llm = llm_usd if llm_usd is not None and self.charge_llm_cost else np.zeros(len(w))
        columns = ["position", "cost", "commission", "slippage", "impact", "borrow", "interest", "llm", "unfilled"]
        if not (self.needs_liquidity or self.commission_per_share or self.commission_min or llm.any()):
            # nothing depends on the equity or on an unfilled rest: every session at once, in USD of a book at 1
            before = np.concatenate([[held], w[:-1]])
            ret, parts = self._settle(before, w, 1.0, overnight, intraday, price, dollar, sigma, llm)
            scale = equity * np.concatenate([[1.0], np.cumprod(1 + ret)[:-1]])  # each session's equity before it
            parts = [p * scale if name not in ("position", "cost", "llm") else p for name, p in zip(columns, parts)]
            return ret, pd.DataFrame(dict(zip(columns, parts)))
        ret, rows = np.empty(len(w)), np.zeros((len(w), len(columns)))
        for i in range(len(w)):
            r, parts = self._settle(held, w[i], equity, overnight[i], intraday[i], price[i], dollar[i], sigma[i],
                                    llm[i])
            ret[i], rows[i] = r, [float(p) for p in parts]
            held, equity = rows[i, 0], equity * (1 + r)
        return ret, pd.DataFrame(rows, columns=columns)

    def _settle(self, held, target, equity, overnight, intraday, price, dollar, sigma, llm):
        """Sessions' net returns and what they paid (USD at ``equity``): :meth:`book`'s formula, elementwise."""
        t = self.trade(held, target, equity, price, dollar, sigma)
        borrow, interest = self.carry(t.position)
        grown = (1 + held * overnight) * (1 - t.cost) * (1 + t.position * intraday)
        usd = equity * self.capital
        ret = grown * (1 + interest - borrow) - llm / usd - 1
        return ret, [t.position, t.cost, t.commission * usd, t.slippage * usd, t.impact * usd, borrow * grown * usd,
                     interest * grown * usd, llm, t.unfilled * usd]

    def prices(self, closes: pd.Series, opens: pd.Series | None) -> np.ndarray:
        """The execution price of a decision at each close of ``closes`` but the last (``opens`` on the same days)."""
        return self.model.prices(closes, opens)

    def reward(self, target: float, previous: float, close: float, filled: float, next_close: float) -> float:
        """The Trading env's log reward of moving from ``previous`` to ``target`` at a decision ``close``, the order
        executed at ``filled`` (:meth:`prices`) and the session ending at ``next_close``."""
        return float(trading_reward(target, math.log(next_close / filled), previous,
                                    self.cost_bps + self.slippage_bps, overnight=math.log(filled / close)))
