"""The execution model: a fill and the costs of trading, as one frozen value every route takes.

The single-ticker replay (:func:`tr1_env.evaluation.backtest.backtest`), the portfolio replay and env
(:mod:`tr1_env.evaluation.portfolio`), the Trading env's reward, SB3 training and FLAG-TRADER all receive an
:class:`Execution` and book through its one method, :meth:`Execution.book` (target weights over days x tickers, cash
the rest: a single ticker is N = 1), so a new execution setting (a commission per share, slippage, a borrow fee) is
a field and a term of :meth:`Execution.trade` or :meth:`Execution.carry` here, and no caller changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tr1_env.execution.fills import FILLS, Fill

__all__ = ["Booked", "Execution", "Trade", "trading_reward"]


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
#: What a book pays per session, in USD (:attr:`Booked.paid`'s columns).
USD_COLUMNS = ("commission", "slippage", "impact", "borrow", "interest", "llm", "unfilled")
#: An order smaller than this share of equity is none (rounding between a policy's drifted weights and the book's).
TINY = 1e-9


@dataclass(frozen=True)
class Trade:
    """What one order did, elementwise over any array shape (a ticker, or days x tickers): the weight it reached
    and what it paid, each a fraction of the equity at the order; ``unfilled`` is the weight left undone."""

    position: np.ndarray
    commission: np.ndarray
    slippage: np.ndarray
    impact: np.ndarray
    unfilled: np.ndarray

    @property
    def cost(self) -> np.ndarray:
        return self.commission + self.slippage + self.impact


@dataclass(frozen=True)
class Booked:
    """What :meth:`Execution.book` booked, one row per session: the net ``ret``, the weights each order reached
    (``position``, days x tickers), its ``cost`` (commission, slippage and impact, a fraction of equity at the
    fill), ``carry`` (interest less borrow, a fraction of equity), ``turnover`` (``sum |a - h'|``, the weight
    filled), ``paid`` (USD by :data:`USD_COLUMNS`; ``unfilled`` is the value of the orders the cap left undone) and
    ``carried``, the weights held at each close (days x tickers; the last row is what the next session holds)."""

    ret: np.ndarray
    position: np.ndarray
    cost: np.ndarray
    carry: np.ndarray
    turnover: np.ndarray
    paid: dict[str, np.ndarray]
    carried: np.ndarray


def _into(held: np.ndarray, overnight: np.ndarray, drift: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each session's growth up to the fill, ``1 + h.G``, and the weights ``h`` have drifted to there (or ``h``)."""
    gap = 1 + (held * overnight).sum(axis=1)
    return gap, _grown(held, overnight, gap) if drift else held


def _drifted(position: np.ndarray, intraday: np.ndarray) -> np.ndarray:
    """The weights ``position`` taken at the fills have drifted to by the closes: ``a (1 + I) / (1 + a.I)``."""
    return _grown(position, intraday, 1 + (position * intraday).sum(axis=1))


def _grown(weights: np.ndarray, returns: np.ndarray, growth: np.ndarray) -> np.ndarray:
    """``w (1 + R) / growth`` per row, 0 where the book is wiped out (``growth <= 0``)."""
    alive = growth > 0
    if alive.all():
        return weights * (1 + returns) / growth[:, None]
    return np.where(alive[:, None], weights * (1 + returns) / np.where(alive, growth, 1.0)[:, None], 0.0)


def _snap(target: np.ndarray, drifted: np.ndarray) -> np.ndarray:
    """The targets, with no order (NaN) and orders under :data:`TINY` replaced by the drifted weights."""
    return np.where(np.isnan(target) | (abs(target - drifted) < TINY), drifted, target)


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

    def liquidity(self, closes: pd.Series | pd.DataFrame, volumes: pd.Series | pd.DataFrame
                  ) -> tuple[pd.Series | pd.DataFrame, pd.Series | pd.DataFrame]:
        """Daily volatility (std of close-to-close returns) and average dollar volume over the :attr:`lookback`
        sessions ending at each date, so a decision at a close reads nothing after it (per column of a frame)."""
        sigma = closes.pct_change(fill_method=None).rolling(self.lookback, min_periods=2).std()
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
            room = np.fmax(self.participation * np.asarray(dollar_volume, dtype=float) / usd, 0.0)  # no volume: none
            delta = np.clip(delta, -room, room)
        traded = abs(delta)
        commission = self.cost_bps / 1e4 * traded
        if self.commission_per_share or self.commission_min:  # prices and volumes: ones a ticker trading nothing lacks
            with np.errstate(divide="ignore", invalid="ignore"):
                fee = np.maximum(self.commission_per_share * traded * usd / np.asarray(price, dtype=float),
                                 self.commission_min)
            commission = commission + np.where(traded > 0, fee / usd, 0.0)
        impact = np.zeros_like(traded)
        if self.impact_coef:
            sigma = np.fmax(np.asarray(sigma, dtype=float), 0.0)  # none yet (one return): no impact
            with np.errstate(divide="ignore", invalid="ignore"):
                impact = np.where(traded > 0, self.impact_coef * sigma * np.sqrt(
                    traded * usd / np.asarray(dollar_volume, dtype=float)) * traded, 0.0)
        reached = np.where(traded < abs(target - held), held + delta, target)  # target itself when filled in full
        return Trade(reached, commission, self.slippage_bps / 1e4 * traded, impact, abs(target - held) - traded)

    def carry(self, position) -> tuple[np.ndarray, np.ndarray]:
        """A session's borrow fee on the short part of ``position`` and interest on the equity no position uses
        (``1 - sum |w|``, at least 0), each a fraction of equity; ``position`` is one book's weights over its last
        axis (tickers: shape ``(N,)``, or days x tickers), the result one number per book."""
        position = np.asarray(position, dtype=float)
        borrow = self.borrow_bps / 1e4 / SESSIONS_PER_YEAR * np.maximum(-position, 0.0).sum(axis=-1)
        interest = self.cash_rate / SESSIONS_PER_YEAR * np.maximum(1 - abs(position).sum(axis=-1), 0.0)
        return borrow, interest

    @property
    def equity_dependent(self) -> bool:
        """Whether a session's costs depend on the book's dollars or on an unfilled rest (per-share commission and
        its minimum, impact, the cap), so that a book is settled day by day rather than all at once."""
        return self.needs_liquidity or bool(self.commission_per_share or self.commission_min)

    def book(self, w: np.ndarray, overnight: np.ndarray, intraday: np.ndarray, price: np.ndarray,
             liquidity: tuple[np.ndarray, np.ndarray] | None = None, llm_usd: np.ndarray | None = None,
             held: np.ndarray | None = None, equity: float = 1.0, drift: bool = True) -> Booked:
        """The one booking of the house: target weights ``w`` (days x tickers, decided at the closes ``d_1..d_n``;
        NaN: no order, hold what drifted in) over the sessions after them, cash the rest.

        ``overnight`` and ``intraday`` (days x tickers) are each session's return up to the fill and after it
        (:meth:`Fill.legs`), ``price`` the fill price, ``liquidity`` (volatility, dollar volume; days x tickers, at the
        decision: :meth:`liquidity`) what the cap and the impact read, ``llm_usd`` each decision's LLM cost (charged
        with :attr:`charge_llm_cost`); the book holds ``held`` (flat by default) into the first session at ``equity``
        (1: the capital), or ``held`` days x tickers: the weights held into each session, each booked on its own (a
        table of every change of position, as the Trading env keeps). Per session, ``h`` the weights held into it,
        ``a`` those the order reaches:

            r = (1 + h.G) (1 - c) (1 + a.I) (1 + interest - borrow) - llm / equity - 1

        where the order trades from the drifted ``h' = h (1 + G) / (1 + h.G)`` toward ``w`` (:meth:`trade`: at most
        the cap; ``c`` its commission, slippage and impact as a fraction of the equity at the fill) and the next
        session holds ``a (1 + I) / (1 + a.I)``. ``drift=False`` holds each weight constant instead (the single-ticker
        books' convention: a weight is a fraction of current equity, kept at no cost). Orders under 1e-9 of equity
        are none (a policy's drifted weights are the book's up to rounding; no minimum commission is due on them).
        With no setting that reads the book's dollars (:attr:`equity_dependent`) and every order known, all sessions
        are settled at once; otherwise day by day.
        """
        w = np.asarray(w, dtype=float)
        n, k = w.shape
        held = np.zeros(k) if held is None else np.asarray(held, dtype=float)
        llm = np.zeros(n) if llm_usd is None or not self.charge_llm_cost else np.asarray(llm_usd, dtype=float)
        if self.needs_liquidity and liquidity is None:
            raise ValueError("--impact-coef and --participation need each session's volume")
        sigma, dollar = liquidity if liquidity is not None else (None, None)
        chained = held.ndim == 1
        if self.equity_dependent or llm.any() or chained and np.isnan(w[1:]).any():
            return self._daily(w, overnight, intraday, price, sigma, dollar, llm, held, equity, drift)
        into = held[None] if chained else held
        if chained and n > 1:
            carried = _drifted(w, intraday) if drift else w  # each session's weights after its close, with no cap
            if np.isnan(w[0]).any():  # the first session's order is known once what drifted into it is
                _, before = _into(held[None], overnight[:1], drift)
                first = np.where(np.isnan(w[0]), before[0], w[0])[None]
                carried = np.concatenate([_drifted(first, intraday[:1]) if drift else first, carried[1:]])
            into = np.concatenate([held[None], carried[:-1]])
        gap, drifted = _into(into, overnight, drift)
        t = self.trade(drifted, _snap(w, drifted), 1.0, price, dollar, sigma)
        ret, parts = self._settle(t, drifted, gap, intraday, 1.0, llm)
        scale = equity * np.concatenate([[1.0], np.cumprod(1 + ret)[:-1]])  # each session's equity before it
        return Booked(ret, t.position, parts[0], parts[1], parts[2],
                      {name: p * scale if name != "llm" else p for name, p in parts[3].items()},
                      _drifted(t.position, intraday) if drift else t.position)

    def _daily(self, w, overnight, intraday, price, sigma, dollar, llm, held, equity, drift) -> Booked:
        """:meth:`book` one session at a time, each trading at the equity it has reached."""
        n = len(w)
        ret, position, carried = np.empty(n), np.empty_like(w), np.empty_like(w)
        cost, carry, turnover = np.empty(n), np.empty(n), np.empty(n)
        paid = {name: np.empty(n) for name in USD_COLUMNS}
        given = held if held.ndim == 2 else None
        for i in range(n):
            one = slice(i, i + 1)
            gap, drifted = _into(held[None] if given is None else given[one], overnight[one], drift)
            t = self.trade(drifted, _snap(w[one], drifted), equity * gap, price[one],
                           None if dollar is None else dollar[one], None if sigma is None else sigma[one])
            r, parts = self._settle(t, drifted, gap, intraday[one], equity, llm[one])
            ret[i], position[i], cost[i], carry[i], turnover[i] = r[0], t.position[0], parts[0][0], parts[1][0], \
                parts[2][0]
            for name, p in parts[3].items():
                paid[name][i] = p[0]
            held = carried[i] = _drifted(t.position, intraday[one])[0] if drift else t.position[0]
            equity *= 1 + r[0]
        return Booked(ret, position, cost, carry, turnover, paid, carried)

    def _settle(self, t: Trade, drifted, gap, intraday, equity, llm):
        """Sessions' net returns (:meth:`book`'s formula) and (cost, carry, turnover, USD paid at ``equity``)."""
        borrow, interest = self.carry(t.position)
        cost = t.cost.sum(axis=1)
        grown = gap * (1 - cost) * (1 + (t.position * intraday).sum(axis=1))
        usd = equity * self.capital
        ret = grown * (1 + interest - borrow) - llm / usd - 1
        fill = usd * gap  # the equity at the fill, which the order's costs are fractions of
        paid = {"commission": t.commission.sum(axis=1) * fill, "slippage": t.slippage.sum(axis=1) * fill,
                "impact": t.impact.sum(axis=1) * fill, "borrow": borrow * grown * usd,
                "interest": interest * grown * usd, "llm": llm, "unfilled": t.unfilled.sum(axis=1) * fill}
        return ret, (cost, interest - borrow, abs(t.position - drifted).sum(axis=1), paid)

    def prices(self, closes: pd.Series, opens: pd.Series | None) -> np.ndarray:
        """The execution price of a decision at each close of ``closes`` but the last (``opens`` on the same days)."""
        return self.model.prices(closes, opens)
