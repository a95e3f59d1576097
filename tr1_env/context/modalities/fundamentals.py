"""Fundamentals: the company profile, the latest statements' key line items and the last earnings release, with
earnings surprise, revenue growth and net margin as features.

The section is a function of those tables' visible rows only, so the index evaluates it (with the plain builder's
own function) once per instant those tables change, or a split changes the basis of per-share figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.base import DAY_NS, Instant, Modality, Part, Section, fmt, ns, register, rows
from tr1_env.data.clock import NY
from tr1_env.data.store import PointInTime, Store

FUNDAMENTALS_FEATURES: tuple[str, ...] = ("eps_surprise", "days_since_earnings", "rev_growth_yoy", "net_margin")
KEY_ITEMS = {  # line items shown per statement, first match wins (vendors name them differently)
    "income": {"Revenue": ["Total Revenue", "Revenue"], "Gross profit": ["Gross Profit"],
               "Operating income": ["Operating Income", "Operating Income (Loss)"],
               "Net income": ["Net Income", "Net Income Common Stockholders"], "Diluted EPS": ["Diluted EPS"]},
    "balance": {"Total assets": ["Total Assets"], "Total debt": ["Total Debt"],
                "Cash and equivalents": ["Cash And Cash Equivalents"],
                "Stockholders' equity": ["Stockholders Equity", "Common Stock Equity"]},
    "cashflow": {"Operating cash flow": ["Operating Cash Flow"], "Capital expenditure": ["Capital Expenditure"],
                 "Free cash flow": ["Free Cash Flow"], "Share buybacks": ["Repurchase Of Capital Stock"]},
}


def earnings_features(surprise_pct: float, days_since: int) -> dict[str, float]:
    """The last release's EPS surprise (fraction) and its age in quarters (90 days)."""
    return {"eps_surprise": surprise_pct / 100, "days_since_earnings": days_since / 90}


def statement_features(revenue: float | None, net_income: float | None,
                       revenue_year_ago: float | None) -> dict[str, float]:
    """Net margin and year-over-year revenue growth of the latest quarterly income statement."""
    out = {}
    if revenue and net_income is not None:
        out["net_margin"] = net_income / revenue
    if revenue and revenue_year_ago is not None:
        out["rev_growth_yoy"] = revenue / revenue_year_ago - 1
    return out


def _statement(fund: pd.DataFrame, statement: str, freq: str) -> tuple[pd.Timestamp, dict[str, float]] | None:
    found = fund[(fund["statement"] == statement) & (fund["freq"] == freq)]
    if found.empty:
        return None
    period = found["period_end"].max()
    latest = found[found["period_end"] == period]
    return period, dict(zip(latest["item"], latest["value"]))


def _pick(items: dict[str, float], names: list[str]) -> float | None:
    return next((items[n] for n in names if n in items), None)


def fundamentals_text(view: PointInTime) -> str | None:
    """Statements, profile and the last earnings release: a function of those tables' visible rows only."""
    fund = view.fundamentals
    lines = []
    profile = view.profile
    if profile.get("sector"):
        lines.append(f"{profile['name']} ({view.ticker}): {profile['sector']} / {profile['industry']}.")
    for statement, freq, title in [("income", "quarterly", "Latest quarterly income statement"),
                                   ("income", "annual", "Latest annual income statement"),
                                   ("balance", "annual", "Latest annual balance sheet"),
                                   ("cashflow", "annual", "Latest annual cash flow")]:
        got = _statement(fund, statement, freq)
        if got is None:
            continue
        period, items = got
        shown = [f"{label} {fmt(v)}" for label, names in KEY_ITEMS[statement].items()
                 if (v := _pick(items, names)) is not None]
        if shown:
            lines.append(f"- {title} (period ending {period:%Y-%m-%d}): " + "; ".join(shown) + ".")
    earn = view.earnings
    if len(earn):
        e = earn.iloc[-1]
        lines.append(f"- Last earnings release {e.release_at.tz_convert(NY):%Y-%m-%d}: EPS {fmt(e.reported_eps)} vs "
                     f"estimate {fmt(e.eps_estimate)} (surprise {fmt(e.surprise_pct)}%).")
    return "\n".join(lines) if len(lines) > (1 if profile.get("sector") else 0) else None


def view_statement_features(view: PointInTime) -> dict[str, float]:
    """Net margin and revenue growth of the latest quarterly income statement (fundamentals rows only)."""
    fund = view.fundamentals
    q = _statement(fund, "income", "quarterly")
    if q is None:
        return {}
    period, items = q
    revenue_names = KEY_ITEMS["income"]["Revenue"]
    prev = fund[(fund["statement"] == "income") & (fund["freq"] == "quarterly") & fund["item"].isin(revenue_names)
                & (fund["period_end"] <= period - pd.Timedelta(days=350))
                & (fund["period_end"] >= period - pd.Timedelta(days=380))]
    return statement_features(_pick(items, revenue_names), _pick(items, KEY_ITEMS["income"]["Net income"]),
                              prev["value"].iloc[-1] if len(prev) else None)


class FundamentalsPart(Part):
    """A ticker's fundamentals section and statement features at each instant they can change (computed on first
    need, by the plain builder's functions), and its earnings surprises."""

    def __init__(self, store: Store, ticker: str):
        self.store, self.ticker = store, ticker
        earnings = rows(store, "earnings", ticker)
        self.earnings_at = ns(earnings["available_at"])
        self.release_at = ns(earnings["release_at"])
        self.surprise = earnings["surprise_pct"].to_numpy(float)
        fundamentals, profiles = rows(store, "fundamentals", ticker), rows(store, "profiles", ticker)
        restated = pd.DataFrame({"available_at": pd.to_datetime(list(store.basis_changes(ticker)), utc=True)})
        self.sources = (fundamentals, profiles, earnings, restated)
        #: Instants at which the section can change (new rows, or a split that changes the basis of per-share
        #: figures); state ``i`` holds after the ``i``-th.
        self.state_at = np.unique(ns(pd.concat([frame["available_at"] for frame in self.sources])))
        self.states: list[tuple[str | None, dict[str, float]] | None] = [None] * (len(self.state_at) + 1)

    def at_state(self, i: int) -> tuple[str | None, dict[str, float]]:
        """The section and statement features after the ``i``-th change."""
        if self.states[i] is None:
            t = self.state_at[i - 1] if i else (self.state_at[0] - 1 if len(self.state_at) else 0)
            view = self.store.asof(self.ticker, pd.Timestamp(int(t), tz="UTC"))
            self.states[i] = fundamentals_text(view), view_statement_features(view)
        return self.states[i]

    def section(self, at: Instant, cfg: ContextConfig) -> Section:
        text, features = self.at_state(int(self.state_at.searchsorted(at.t, "right")))
        k = int(self.earnings_at.searchsorted(at.t, "right"))
        if k:
            features = {**earnings_features(self.surprise[k - 1], int((at.t - self.release_at[k - 1]) // DAY_NS)),
                        **features}
        return Section(text, features)

    def state(self) -> list[tuple[str | None, dict[str, float]]]:
        return [self.at_state(i) for i in range(len(self.states))]

    def restore(self, state: list[tuple[str | None, dict[str, float]]]) -> None:
        self.states = state


class Fundamentals(Modality):
    name, title, order = "fundamentals", "Fundamentals", 30
    tables = ("fundamentals", "profiles", "earnings")
    features = FUNDAMENTALS_FEATURES

    def reference(self, view: PointInTime, cfg: ContextConfig) -> Section:
        features = {}
        if len(view.earnings):
            e = view.earnings.iloc[-1]
            features = earnings_features(e.surprise_pct, (view.time - e.release_at).days)
        return Section(fundamentals_text(view), {**features, **view_statement_features(view)})

    def index(self, store: Store, ticker: str, market: Part | None) -> Part:
        return FundamentalsPart(store, ticker)


register(Fundamentals())
