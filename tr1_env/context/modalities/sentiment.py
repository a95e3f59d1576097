"""Insider and analyst sentiment: open-market insider trades of the look-back (on the split basis of the day) and
the latest analyst recommendation trend, with net insider buying and the analysts' consensus as features."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.base import DAY_NS, Instant, Modality, Part, Section, fmt, ns, register, rows
from tr1_env.data.clock import NY
from tr1_env.data.store import PointInTime, Store, split_adjust_insider

SENTIMENT_FEATURES: tuple[str, ...] = ("insider_net", "analyst_score")
LATEST_FILINGS = 5  # insider filings listed, newest first


def insider_net(purchases: float, sales: float) -> float:
    """Net open-market insider buying in USD, as a signed log1p."""
    net = purchases - sales
    return float(np.sign(net) * math.log1p(abs(net)))


def analyst_score(strong_buy: int, buy: int, hold: int, sell: int, strong_sell: int) -> float:
    """Consensus in [-2, 2]: strong buy 2, buy 1, hold 0, sell -1, strong sell -2, averaged over analysts."""
    n = strong_buy + buy + hold + sell + strong_sell
    return (2 * strong_buy + buy - sell - 2 * strong_sell) / max(n, 1)


def insider_cutoff(time: pd.Timestamp, cfg: ContextConfig) -> pd.Timestamp:
    """Filings on or after this (naive New-York) date-time are in the insider look-back at ``time``."""
    return time.tz_convert(NY).tz_localize(None) - pd.Timedelta(days=cfg.insider_days)


def insider_lines(insider: pd.DataFrame) -> list[str]:
    return [f"  - {filing:%Y-%m-%d} {who} ({title}): code {code}, {fmt(shares, 0)} shares at {fmt(price)}"
            for filing, who, title, code, shares, price in zip(*(insider[c].tolist() for c in (
                "filing_date", "insider", "title", "code", "shares", "price")))]


def insider_totals(codes: np.ndarray, values: np.ndarray) -> tuple[int, float, int, float]:
    """Open-market purchases and sales: (count, USD) each."""
    if not len(codes):
        return 0, 0.0, 0, 0.0
    buys, sells = codes == "P", codes == "S"
    return int(buys.sum()), float(np.nansum(values[buys])), int(sells.sum()), float(np.nansum(values[sells]))


def recommendation_lines(rec: pd.DataFrame) -> list[str]:
    return [f"- Analyst recommendations ({r.period:%Y-%m}): strong buy {r.strong_buy}, buy {r.buy}, hold {r.hold}, "
            f"sell {r.sell}, strong sell {r.strong_sell}." for r in rec.itertuples(index=False)]


def sentiment_text(n_filings: int, totals: tuple[int, float, int, float], latest: list[str],
                   recommendation: str | None, cfg: ContextConfig) -> str | None:
    """Insider activity of the look-back (``latest``: up to 5 filings, newest first) and the analyst trend."""
    lines = []
    if n_filings:
        buys, bought, sells, sold = totals
        lines.append(f"- Insider transactions, last {cfg.insider_days} days: {buys} open-market purchases "
                     f"({fmt(bought)} USD), {sells} sales ({fmt(sold)} USD), {n_filings} filings in all.")
        lines += latest
    if recommendation is not None:
        lines.append(recommendation)
    return "\n".join(lines) if lines else None


def _section(n_filings: int, totals: tuple[int, float, int, float], latest: list[str],
             recommendation: tuple[str, float] | None, cfg: ContextConfig) -> Section:
    """Both builders' tail: the text and the features of what they selected."""
    features = {"insider_net": insider_net(totals[1], totals[3])}
    if recommendation is not None:
        features["analyst_score"] = recommendation[1]
    return Section(sentiment_text(n_filings, totals, latest, recommendation and recommendation[0], cfg), features)


class SentimentPart(Part):
    """A ticker's insider filings (their lines per split epoch) and recommendation trends."""

    def __init__(self, store: Store, ticker: str):
        self.splits = rows(store, "splits", ticker)
        self.split_at = ns(self.splits["available_at"])
        self.insider = rows(store, "insider", ticker)
        self.insider_at = ns(self.insider["available_at"])
        self.filing = ns(self.insider["filing_date"])
        self.codes = self.insider["code"].to_numpy(object)
        self.values = self.insider["value"].to_numpy(float)
        self.epochs: dict[int, list[str]] = {}
        self.cutoffs: dict[tuple[int, int], int] = {}
        rec = rows(store, "recommendations", ticker)
        self.rec_at = ns(rec["available_at"])
        self.recommendations = list(zip(recommendation_lines(rec), (
            analyst_score(r.strong_buy, r.buy, r.hold, r.sell, r.strong_sell) for r in rec.itertuples(index=False))))

    def lines_of(self, e: int) -> list[str]:
        """Insider lines on the split basis of epoch ``e`` (the first ``e`` splits known)."""
        if e not in self.epochs:
            self.epochs[e] = insider_lines(split_adjust_insider(self.insider, self.splits.iloc[:e]))
        return self.epochs[e]

    def section(self, at: Instant, cfg: ContextConfig) -> Section:
        key = at.t, cfg.insider_days
        if key not in self.cutoffs:
            self.cutoffs[key] = insider_cutoff(at.time, cfg).value
        n = int(self.insider_at.searchsorted(at.t, "right"))
        recent = np.flatnonzero(self.filing[:n] >= self.cutoffs[key])
        lines = self.lines_of(int(self.split_at.searchsorted(at.t, "right")))
        r = int(self.rec_at.searchsorted(at.t, "right"))
        fresh = r and (at.t - self.rec_at[r - 1]) // DAY_NS <= cfg.stale_days
        latest = [lines[i] for i in recent[::-1][:LATEST_FILINGS]]
        return _section(len(recent), insider_totals(self.codes[recent], self.values[recent]), latest,
                        self.recommendations[r - 1] if fresh else None, cfg)


class Sentiment(Modality):
    name, title, order = "sentiment", "Insider and analyst sentiment", 40
    tables = ("insider", "recommendations", "splits")
    features = SENTIMENT_FEATURES

    def reference(self, view: PointInTime, cfg: ContextConfig) -> Section:
        ins = view.insider
        recent = ins[ins["filing_date"] >= insider_cutoff(view.time, cfg)]
        rec = view.recommendations
        recommendation = None
        if len(rec) and (view.time - rec["available_at"].iloc[-1]).days <= cfg.stale_days:
            r = rec.iloc[-1]
            recommendation = (recommendation_lines(rec.iloc[[-1]])[0],
                              analyst_score(r.strong_buy, r.buy, r.hold, r.sell, r.strong_sell))
        return _section(len(recent), insider_totals(recent["code"].to_numpy(), recent["value"].to_numpy(float)),
                        insider_lines(recent.iloc[::-1].head(LATEST_FILINGS)), recommendation, cfg)

    def index(self, store: Store, ticker: str, market: Part | None) -> Part:
        return SentimentPart(store, ticker)


register(Sentiment())
