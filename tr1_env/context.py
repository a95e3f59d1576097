"""Ticker-day contexts: five modality sections, a random modality subset, a budget, features.

Everything is read through ``store.asof(ticker, decision_time)``, so a context built from the whole
store equals one built from a store cut at that day (tested as a property). A modality with no
data is stated as missing, never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tr1_env.agents import Observation
from tr1_env.data.clock import NY
from tr1_env.data.store import PointInTime, Store
from tr1_env.features import (FEATURE_NAMES, SENTIMENT_SCORES, analyst_score, earnings_features, feature_vector,
                              indicators, insider_net, macro_features, market_features, news_features,
                              statement_features)
from tr1_env.prompt import render_prompt

MODALITIES: tuple[str, ...] = ("market", "news", "fundamentals", "sentiment", "macro")

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
MACRO_LABELS = {"FEDFUNDS": "Fed funds rate (monthly avg, %)", "DFF": "Effective fed funds rate (%)",
                "DGS3MO": "3-month Treasury yield (%)", "DGS2": "2-year Treasury yield (%)",
                "DGS10": "10-year Treasury yield (%)", "T10YIE": "10-year breakeven inflation (%)",
                "CPI": "CPI index", "CORE_CPI": "Core CPI index", "UNRATE": "Unemployment rate (%)",
                "PAYEMS": "Nonfarm payrolls (thousands)", "VIX": "VIX", "HY_OAS": "High-yield OAS (%)",
                "UMCSENT": "UMich consumer sentiment"}

@dataclass(frozen=True)
class ContextConfig:
    window: int = field(default=15, metadata={"help": "trading days of OHLCV + indicators shown"})
    news_buckets: tuple[tuple[int, int, int], ...] = field(default=((0, 3, 10), (4, 10, 20), (11, 30, 20)), metadata={
        "help": "news buckets as (min age days, max age days, max articles)"})
    market_headlines: int = field(default=5, metadata={"help": "market-wide headlines of the last 3 days shown"})
    insider_days: int = field(default=90, metadata={"help": "look-back of insider transactions"})
    stale_days: int = field(default=120, metadata={"help": "analyst trends older than this count as missing"})
    max_chars: int = field(default=24_000, metadata={"help": "character budget of the context (~4 chars/token)"})
    modality_prob: float = field(default=0.7, metadata={"help": "chance each modality is kept in a random subset"})


@dataclass(frozen=True)
class Context:
    ticker: str
    date: pd.Timestamp
    modalities: tuple[str, ...]
    sections: dict[str, str]
    missing: tuple[str, ...]
    text: str
    prompt: str
    features: np.ndarray
    history: pd.DataFrame
    news: pd.DataFrame

    def observation(self, position: float = 0.0) -> Observation:
        return Observation(self.ticker, self.date, self.prompt, self.text, self.features, FEATURE_NAMES,
                           self.history, self.news, position)


def sample_modalities(rng: np.random.Generator, p: float = 0.7) -> tuple[str, ...]:
    """A random non-empty subset, in canonical order (Trading-R1 draws ~20 input variants per day)."""
    keep = rng.random(len(MODALITIES)) < p
    if not keep.any():
        keep[rng.integers(len(MODALITIES))] = True
    return tuple(m for m, k in zip(MODALITIES, keep) if k)


def _fmt(x: float, digits: int = 2) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    ax = abs(x)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if ax >= div:
            return f"{x / div:,.{digits}f}{unit}"
    return f"{x:,.{digits}f}"


def _market(hist: pd.DataFrame, cfg: ContextConfig) -> str | None:
    if len(hist) < 2:
        return None
    last = hist.tail(cfg.window)
    cols = ["date", "open", "high", "low", "close", "volume", "rsi_14", "macd", "macdh", "boll_ub", "boll_lb",
            "atr_14", "close_10_sma", "close_50_sma", "vwma_14"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in last.itertuples(index=False):
        cells = [pd.Timestamp(r.date).strftime("%Y-%m-%d")]
        cells += [f"{getattr(r, c):,.0f}" if c == "volume" else _fmt(getattr(r, c)) for c in cols[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    c = hist["close"].to_numpy()
    lines = [f"Last close {_fmt(c[-1])}; 5-day change {_pct(c, 5)}; 15-day change {_pct(c, 15)}; "
             f"200-day SMA {_fmt(hist['close_200_sma'].iloc[-1])}.", *rows]
    return "\n".join(lines)


def _pct(c: np.ndarray, n: int) -> str:
    return f"{(c[-1] / c[-1 - n] - 1) * 100:+.2f}%" if len(c) > n else "n/a"


def _news_items(view: PointInTime, cfg: ContextConfig) -> list[tuple[str, pd.DataFrame]]:
    news = view.news
    if news.empty:
        return []
    today = view.time.tz_convert(NY).normalize()
    age = (today - news["available_at"].dt.tz_convert(NY).dt.normalize()).dt.days
    out = []
    for lo, hi, cap in cfg.news_buckets:
        bucket = news[(age >= lo) & (age <= hi)]
        out.append((f"Last {hi} days" if lo == 0 else f"{lo}-{hi} days ago", bucket.iloc[::-1].head(cap)))
    return out


def _news(view: PointInTime, cfg: ContextConfig) -> tuple[str | None, pd.DataFrame]:
    buckets = _news_items(view, cfg)
    shown = [b for _, b in buckets if len(b)]
    lines = []
    for title, b in buckets:
        if b.empty:
            continue
        lines.append(f"#### {title} ({len(b)})")
        for r in b.itertuples(index=False):
            stamp = r.published_at.tz_convert(NY).strftime("%Y-%m-%d")
            summary = f" {r.summary}" if r.summary and r.summary != r.title else ""
            lines.append(f"- [{stamp}] {r.title}.{summary} ({r.source or r.vendor})")
    market = view.market_news
    if len(market):
        recent = market[market["available_at"] >= view.time - pd.Timedelta(days=3)].iloc[::-1].head(
            cfg.market_headlines)
        if len(recent):
            lines.append(f"#### Market headlines ({len(recent)})")
            lines += [f"- [{r.published_at.strftime('%Y-%m-%d')}] {r.title}" for r in recent.itertuples(index=False)]
    frame = pd.concat(shown, ignore_index=True) if shown else view.news.iloc[0:0]
    return ("\n".join(lines) if lines else None), frame


def _statement(fund: pd.DataFrame, statement: str, freq: str) -> tuple[pd.Timestamp, dict[str, float]] | None:
    rows = fund[(fund["statement"] == statement) & (fund["freq"] == freq)]
    if rows.empty:
        return None
    period = rows["period_end"].max()
    latest = rows[rows["period_end"] == period]
    return period, dict(zip(latest["item"], latest["value"]))


def _pick(items: dict[str, float], names: list[str]) -> float | None:
    return next((items[n] for n in names if n in items), None)


def _fundamentals(view: PointInTime) -> str | None:
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
        shown = [f"{label} {_fmt(v)}" for label, names in KEY_ITEMS[statement].items()
                 if (v := _pick(items, names)) is not None]
        if shown:
            lines.append(f"- {title} (period ending {period:%Y-%m-%d}): " + "; ".join(shown) + ".")
    earn = view.earnings
    if len(earn):
        e = earn.iloc[-1]
        lines.append(f"- Last earnings release {e.release_at.tz_convert(NY):%Y-%m-%d}: EPS {_fmt(e.reported_eps)} vs "
                     f"estimate {_fmt(e.eps_estimate)} (surprise {_fmt(e.surprise_pct)}%).")
    return "\n".join(lines) if len(lines) > (1 if profile.get("sector") else 0) else None


def _recent_insider(view: PointInTime, cfg: ContextConfig) -> pd.DataFrame:
    ins = view.insider
    return ins[ins["filing_date"] >= (view.time.tz_convert(NY).tz_localize(None) - pd.Timedelta(days=cfg.insider_days))]


def _sentiment(view: PointInTime, cfg: ContextConfig) -> str | None:
    lines = []
    recent = _recent_insider(view, cfg)
    if len(recent):
        buys = recent[recent["code"] == "P"]
        sells = recent[recent["code"] == "S"]
        lines.append(f"- Insider transactions, last {cfg.insider_days} days: {len(buys)} open-market purchases "
                     f"({_fmt(buys['value'].sum())} USD), {len(sells)} sales ({_fmt(sells['value'].sum())} USD), "
                     f"{len(recent)} filings in all.")
        for r in recent.iloc[::-1].head(5).itertuples(index=False):
            lines.append(f"  - {r.filing_date:%Y-%m-%d} {r.insider} ({r.title}): code {r.code}, "
                         f"{_fmt(r.shares, 0)} shares at {_fmt(r.price)}")
    rec = view.recommendations
    if len(rec):
        r = rec.iloc[-1]
        if (view.time - r.available_at).days <= cfg.stale_days:
            lines.append(f"- Analyst recommendations ({r.period:%Y-%m}): strong buy {r.strong_buy}, buy {r.buy}, "
                         f"hold {r.hold}, sell {r.sell}, strong sell {r.strong_sell}.")
    return "\n".join(lines) if lines else None


def _macro_values(view: PointInTime) -> dict[str, tuple[pd.Timestamp, float]]:
    macro = view.macro
    if macro.empty:
        return {}
    last = macro.groupby("series").tail(1)
    return {r.series: (r.date, r.value) for r in last.itertuples(index=False)}


def _cpi_yoy(view: PointInTime) -> float | None:
    cpi = view.macro[view.macro["series"] == "CPI"]
    if len(cpi) < 13:
        return None
    return float(cpi["value"].iloc[-1] / cpi["value"].iloc[-13] - 1) * 100


def _macro(view: PointInTime) -> str | None:
    values = _macro_values(view)
    if not values:
        return None
    lines = [f"- {MACRO_LABELS[s]}: {_fmt(v)} (as of {d:%Y-%m-%d})" for s, (d, v) in values.items()]
    if (yoy := _cpi_yoy(view)) is not None:
        lines.append(f"- CPI inflation, year over year: {yoy:.2f}%")
    fomc = view.fomc
    statements = fomc[fomc["kind"] == "statement"]
    if len(statements):
        s = statements.iloc[-1]
        body = " ".join(s.body.split())
        lines.append(f"- Latest FOMC statement ({s.meeting_date:%Y-%m-%d}): {body[:700]}{'...' if len(body) > 700 else ''}")
    return "\n".join(lines)


def _features(hist: pd.DataFrame, news: pd.DataFrame, view: PointInTime, cfg: ContextConfig) -> np.ndarray:
    f = dict(market_features(hist).iloc[-1]) if len(hist) else {}
    f.update(news_features((view.time - news["available_at"]).dt.days.to_numpy(),
                           news["sentiment"].map(SENTIMENT_SCORES).to_numpy(float)))
    if len(view.earnings):
        e = view.earnings.iloc[-1]
        f.update(earnings_features(e.surprise_pct, (view.time - e.release_at).days))
    fund = view.fundamentals
    q = _statement(fund, "income", "quarterly")
    if q is not None:
        period, items = q
        revenue_names = KEY_ITEMS["income"]["Revenue"]
        prev = fund[(fund["statement"] == "income") & (fund["freq"] == "quarterly") & fund["item"].isin(revenue_names)
                    & (fund["period_end"] <= period - pd.Timedelta(days=350))
                    & (fund["period_end"] >= period - pd.Timedelta(days=380))]
        f.update(statement_features(_pick(items, revenue_names), _pick(items, KEY_ITEMS["income"]["Net income"]),
                                    prev["value"].iloc[-1] if len(prev) else None))
    recent = _recent_insider(view, cfg)
    f["insider_net"] = insider_net(recent["value"][recent["code"] == "P"].sum(),
                                   recent["value"][recent["code"] == "S"].sum())
    rec = view.recommendations
    if len(rec) and (view.time - rec.iloc[-1].available_at).days <= cfg.stale_days:
        r = rec.iloc[-1]
        f["analyst_score"] = analyst_score(r.strong_buy, r.buy, r.hold, r.sell, r.strong_sell)
    f.update(macro_features({s: v for s, (_, v) in _macro_values(view).items()}, _cpi_yoy(view)))
    return feature_vector(f)


def _fit_budget(sections: dict[str, str], max_chars: int) -> dict[str, str]:
    """Trim the longest sections line by line (from their end: news is newest first) until under budget."""
    sections = dict(sections)
    while sum(len(v) for v in sections.values()) > max_chars:
        name = max(sections, key=lambda k: len(sections[k]))
        lines = sections[name].split("\n")
        if len(lines) <= 2:
            excess = sum(len(v) for v in sections.values()) - max_chars
            sections[name] = sections[name][: max(0, len(sections[name]) - excess - 20)] + " [truncated]"
            break
        sections[name] = "\n".join(lines[:-1])
    return sections


def build_context(store: Store, ticker: str, date, modalities: tuple[str, ...] | None = None,
                  seed: int | None = None, cfg: ContextConfig = ContextConfig()) -> Context:
    """The ticker-day context at the close of ``date``.

    ``modalities=None`` with a ``seed`` draws a random subset; with neither, all five are used.
    """
    day = pd.Timestamp(date).normalize()
    if modalities is None:
        modalities = sample_modalities(np.random.default_rng(seed), cfg.modality_prob) if seed is not None else MODALITIES
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
    view = store.asof(ticker, day)
    if view.prices.empty or view.prices["date"].iloc[-1] != day:
        raise ValueError(f"{ticker} has no session on {day:%Y-%m-%d} in store {store.path}")
    hist = indicators(view.prices)
    news_text, news = _news(view, cfg)
    builders = {"market": lambda: _market(hist, cfg), "news": lambda: news_text,
                "fundamentals": lambda: _fundamentals(view), "sentiment": lambda: _sentiment(view, cfg),
                "macro": lambda: _macro(view)}
    titles = {"market": "Market data", "news": "News", "fundamentals": "Fundamentals",
              "sentiment": "Insider and analyst sentiment", "macro": "Macro"}
    sections, missing = {}, []
    for m in MODALITIES:
        if m not in modalities:
            continue
        body = builders[m]()
        if body is None:
            missing.append(m)
            body = f"No {titles[m].lower()} data is available for {view.ticker} as of {day:%Y-%m-%d}."
        sections[m] = body
    sections = _fit_budget(sections, cfg.max_chars)
    text = "\n\n".join(f"## {titles[m]}\n{body}" for m, body in sections.items())
    return Context(view.ticker, day, tuple(modalities), sections, tuple(missing), text,
                   render_prompt(view.ticker, f"{day:%Y-%m-%d}", text), _features(hist, news, view, cfg), hist, news)


def build_observation(store: Store, ticker: str, date, position: float = 0.0, **kw) -> Observation:
    """The agent-facing view of :func:`build_context`."""
    return build_context(store, ticker, date, **kw).observation(position)


def numeric_observation(view: PointInTime, history: pd.DataFrame, cfg: ContextConfig = ContextConfig()) -> Observation:
    """What rule-based agents read (bars with indicators, the context's headlines) without the text or features.

    ``history`` is this ticker's :func:`indicators` frame over its whole history on ``view``'s splits; rows after
    the day are dropped here. Walk-forward replays build it once per ticker instead of once per day: indicators
    run from the first session either way, so its rows equal the per-day context's (tested).
    """
    day = view.time.tz_convert(NY).tz_localize(None).normalize()
    n = int(pd.DatetimeIndex(history["date"]).searchsorted(day, side="right"))
    hist = history.iloc[:n]
    shown = [b for _, b in _news_items(view, cfg) if len(b)]
    news = pd.concat(shown, ignore_index=True) if shown else view.news.iloc[0:0]
    return Observation(view.ticker, day, "", "", np.zeros(0, np.float32), (), hist, news)
