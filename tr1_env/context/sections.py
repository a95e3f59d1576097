"""What a ticker-day context shows, shared by its two builders: settings, the Context record, renderers.

The renderers turn selected rows into section text; :func:`tr1_env.context.reference.build_context_reference`
selects the rows with pandas from the point-in-time view, :class:`tr1_env.context.index.ContextIndex`
from arrays indexed once per store. The fundamentals pieces read a view directly: the index
evaluates them once per instant those tables change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tr1_env.core.agents import Observation
from tr1_env.data.clock import NY
from tr1_env.data.store import PointInTime
from tr1_env.context.features import FEATURE_NAMES, feature_vector, statement_features
from tr1_env.context.prompt import render_prompt

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


class _Frame:
    """A field (a DataFrame, mostly) that may also be given as a zero-argument function, called on its first read.

    The indexed builder hands over ``history``, ``news`` and ``macro_relative`` this way: most consumers read
    only the text, and building two frames would cost more than the rest of a context.
    """

    def __set_name__(self, owner, name: str):
        self.key = f"_{name}"

    def __get__(self, obj, owner=None) -> pd.DataFrame:
        if obj is None:
            raise AttributeError(self.key)  # tells dataclasses the field has no default
        value = obj.__dict__[self.key]
        if callable(value):
            value = obj.__dict__[self.key] = value()
        return value

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.key] = value


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
    history: pd.DataFrame = _Frame()  # daily bars with indicators up to ``date``
    news: pd.DataFrame = _Frame()  # the headlines shown, in the order shown
    #: The macro section as strict anonymization shows it (:func:`_macro_relative_text`).
    macro_relative: str | None = _Frame()

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


MARKET_COLUMNS = ("date", "open", "high", "low", "close", "volume", "rsi_14", "macd", "macdh", "boll_ub", "boll_lb",
                  "atr_14", "close_10_sma", "close_50_sma", "vwma_14")

# Renderers: text from selected rows. Both builders (``tr1_env.context.reference`` and ``tr1_env.context.index``)
# select the same rows their own way and render them with these, so they agree.


def _market_rows(hist: pd.DataFrame) -> list[str]:
    """One markdown table row per session of an indicator frame."""
    rows = []
    for r in hist[list(MARKET_COLUMNS)].itertuples(index=False):
        cells = [pd.Timestamp(r.date).strftime("%Y-%m-%d"), *map(_fmt, r[1:5]), f"{r.volume:,.0f}", *map(_fmt, r[6:])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _market_text(rows: list[str], closes: np.ndarray, sma200: float) -> str | None:
    """The last ``rows`` of the table under a summary of the closes known so far."""
    if len(closes) < 2:
        return None
    head = ["| " + " | ".join(MARKET_COLUMNS) + " |", "|" + "---|" * len(MARKET_COLUMNS)]
    return "\n".join([f"Last close {_fmt(closes[-1])}; 5-day change {_pct(closes, 5)}; 15-day change "
                      f"{_pct(closes, 15)}; 200-day SMA {_fmt(sma200)}.", *head, *rows])


def _pct(c: np.ndarray, n: int) -> str:
    return f"{(c[-1] / c[-1 - n] - 1) * 100:+.2f}%" if len(c) > n else "n/a"


def _news_lines(news: pd.DataFrame) -> list[str]:
    stamps = news["published_at"].dt.tz_convert(NY).dt.strftime("%Y-%m-%d").tolist()
    return [f"- [{stamp}] {title}.{f' {summary}' if summary and summary != title else ''} ({source or vendor})"
            for stamp, title, summary, source, vendor in zip(stamps, *(news[c].tolist() for c in (
                "title", "summary", "source", "vendor")))]


def _headline_lines(market_news: pd.DataFrame) -> list[str]:
    stamps = market_news["published_at"].dt.strftime("%Y-%m-%d").tolist()
    return [f"- [{stamp}] {title}" for stamp, title in zip(stamps, market_news["title"].tolist())]


def _news_text(buckets: list[tuple[str, list[str]]], headlines: list[str]) -> str | None:
    """Bucketed company news (newest first) then market headlines; None if there is neither."""
    lines = []
    for title, items in buckets:
        if items:
            lines += [f"#### {title} ({len(items)})", *items]
    if headlines:
        lines += [f"#### Market headlines ({len(headlines)})", *headlines]
    return "\n".join(lines) if lines else None


def _bucket_title(lo: int, hi: int) -> str:
    return f"Last {hi} days" if lo == 0 else f"{lo}-{hi} days ago"


def _insider_lines(insider: pd.DataFrame) -> list[str]:
    return [f"  - {filing:%Y-%m-%d} {who} ({title}): code {code}, {_fmt(shares, 0)} shares at {_fmt(price)}"
            for filing, who, title, code, shares, price in zip(*(insider[c].tolist() for c in (
                "filing_date", "insider", "title", "code", "shares", "price")))]


def _insider_totals(codes: np.ndarray, values: np.ndarray) -> tuple[int, float, int, float]:
    """Open-market purchases and sales: (count, USD) each."""
    if not len(codes):
        return 0, 0.0, 0, 0.0
    buys, sells = codes == "P", codes == "S"
    return int(buys.sum()), float(np.nansum(values[buys])), int(sells.sum()), float(np.nansum(values[sells]))


def _recommendation_lines(rec: pd.DataFrame) -> list[str]:
    return [f"- Analyst recommendations ({r.period:%Y-%m}): strong buy {r.strong_buy}, buy {r.buy}, hold {r.hold}, "
            f"sell {r.sell}, strong sell {r.strong_sell}." for r in rec.itertuples(index=False)]


def _sentiment_text(n_filings: int, totals: tuple[int, float, int, float], latest: list[str],
                    recommendation: str | None, cfg: ContextConfig) -> str | None:
    """Insider activity of the look-back (``latest``: up to 5 filings, newest first) and the analyst trend."""
    lines = []
    if n_filings:
        buys, bought, sells, sold = totals
        lines.append(f"- Insider transactions, last {cfg.insider_days} days: {buys} open-market purchases "
                     f"({_fmt(bought)} USD), {sells} sales ({_fmt(sold)} USD), {n_filings} filings in all.")
        lines += latest
    if recommendation is not None:
        lines.append(recommendation)
    return "\n".join(lines) if lines else None


def _macro_lines(macro: pd.DataFrame) -> list[str]:
    return [f"- {MACRO_LABELS[s]}: {_fmt(v)} (as of {d:%Y-%m-%d})"
            for s, d, v in zip(*(macro[c].tolist() for c in ("series", "date", "value")))]


def _fomc_lines(fomc: pd.DataFrame) -> list[str]:
    out = []
    for meeting, body in zip(fomc["meeting_date"].tolist(), fomc["body"].tolist()):
        body = " ".join(body.split())
        out.append(f"- Latest FOMC statement ({meeting:%Y-%m-%d}): {body[:700]}{'...' if len(body) > 700 else ''}")
    return out


def _macro_text(latest: list[str], cpi_yoy: float | None, statement: str | None) -> str | None:
    if not latest:
        return None
    lines = list(latest)
    if cpi_yoy is not None:
        lines.append(f"- CPI inflation, year over year: {cpi_yoy:.2f}%")
    if statement is not None:
        lines.append(statement)
    return "\n".join(lines)


_STANCE = {"raise": "raised", "increase": "raised", "lower": "lowered", "reduce": "lowered", "maintain": "held"}


def fomc_stance(body: str) -> str:
    """What an FOMC statement did to the federal funds target range, in one word (not its wording)."""
    m = re.search(r"decided to (raise|increase|lower|reduce|maintain)\b", body)
    return _STANCE[m.group(1)] if m else "did not state a change to"


def _macro_relative_text(statement: str | None) -> str:
    """The macro section strict anonymization shows: the latest FOMC statement's stance, no series.

    Macro regimes persist for months, so any rendering of the series dates a context: matched against every
    session of 2024-02..2025-10, each series' 3-month direction and 5-year tercile put the day within a month on
    100 % of sessions, the direction alone of four series (fed funds, 10-year, CPI inflation, unemployment) on
    48 %, the stance alone on 17 % (a random session: 10 %)."""
    stance = ("no FOMC statement is available" if statement is None else
              f"the Committee {fomc_stance(statement)} the federal funds target range at its latest meeting")
    return (f"- Latest FOMC statement: {stance} (the statement's wording and date are withheld).\n"
            "- Macro series are withheld at the strict level: their levels and their recent paths date the context.")


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


def _statement_features(view: PointInTime) -> dict[str, float]:
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


def insider_cutoff(time: pd.Timestamp, cfg: ContextConfig) -> pd.Timestamp:
    """Filings on or after this (naive New-York) date-time are in the insider look-back at ``time``."""
    return time.tz_convert(NY).tz_localize(None) - pd.Timedelta(days=cfg.insider_days)


def _fit_budget(sections: dict[str, str], max_chars: int) -> dict[str, str]:
    """Trim the longest sections line by line (from their end: news is newest first), cutting characters off
    one that is down to two lines, until the bodies fit ``max_chars`` or each is no more than its cut marker."""
    sections, marker = dict(sections), " [truncated]"
    while (excess := sum(len(v) for v in sections.values()) - max_chars) > 0:
        name = max(sections, key=lambda k: len(sections[k]))
        body = sections[name]
        if len(body) <= len(marker):
            break  # nothing left to cut anywhere
        lines = body.split("\n")
        if len(lines) > 2:
            sections[name] = "\n".join(lines[:-1])
        else:
            sections[name] = body[: max(0, len(body) - excess - 20)] + marker
    return sections


TITLES = {"market": "Market data", "news": "News", "fundamentals": "Fundamentals",
          "sentiment": "Insider and analyst sentiment", "macro": "Macro"}


def _modalities(modalities: tuple[str, ...] | None, seed: int | None, cfg: ContextConfig) -> tuple[str, ...]:
    if modalities is None:
        return sample_modalities(np.random.default_rng(seed), cfg.modality_prob) if seed is not None else MODALITIES
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
    return tuple(modalities)


def _assemble(ticker: str, day: pd.Timestamp, modalities: tuple[str, ...], bodies: dict[str, str | None],
              features: dict[str, float], history, news, cfg: ContextConfig, macro_relative=None) -> Context:
    """Missing sections stated, the budget applied, the prompt rendered: the builders' common tail."""
    sections, missing = {}, []
    for m in MODALITIES:
        if m not in modalities:
            continue
        body = bodies[m]
        if body is None:
            missing.append(m)
            body = f"No {TITLES[m].lower()} data is available for {ticker} as of {day:%Y-%m-%d}."
        sections[m] = body
    sections = _fit_budget(sections, cfg.max_chars)
    text = "\n\n".join(f"## {TITLES[m]}\n{body}" for m, body in sections.items())
    return Context(ticker, day, modalities, sections, tuple(missing), text,
                   render_prompt(ticker, f"{day:%Y-%m-%d}", text), feature_vector(features), history, news,
                   macro_relative if "macro" in modalities else None)  # a function of no argument, or the text
