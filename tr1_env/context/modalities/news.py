"""News: the ticker's headlines in age buckets (newest first), the market's headlines of the last three days, and
headline counts and vendor sentiment as features."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.base import DAY_NS, Instant, Modality, Part, Section, ns, register, rows
from tr1_env.data.clock import NY
from tr1_env.data.importers import MARKET
from tr1_env.data.store import PointInTime, Store

NEWS_FEATURES: tuple[str, ...] = ("news_3d", "news_10d", "news_sentiment")
SENTIMENT_SCORES = {"Positive": 1.0, "Negative": -1.0, "Neutral": 0.0}
HEADLINE_DAYS = 3  # market headlines shown: those of the last three days


def news_features(age_days: np.ndarray, sentiment: np.ndarray) -> dict[str, float]:
    """Headline counts (log1p) of the last 3 and 10 days and mean vendor sentiment (+1/0/-1, NaN if unrated)."""
    if not len(age_days):
        return {}
    rated = sentiment[~np.isnan(sentiment)]
    return {"news_3d": math.log1p(int((age_days <= 3).sum())), "news_10d": math.log1p(int((age_days <= 10).sum())),
            "news_sentiment": float(rated.mean()) if len(rated) else np.nan}


def news_lines(news: pd.DataFrame) -> list[str]:
    """One line per company headline: its New-York day, title, summary (when it says more) and source."""
    stamps = news["published_at"].dt.tz_convert(NY).dt.strftime("%Y-%m-%d").tolist()
    return [f"- [{stamp}] {title}.{f' {summary}' if summary and summary != title else ''} ({source or vendor})"
            for stamp, title, summary, source, vendor in zip(stamps, *(news[c].tolist() for c in (
                "title", "summary", "source", "vendor")))]


def headline_lines(market_news: pd.DataFrame) -> list[str]:
    stamps = market_news["published_at"].dt.strftime("%Y-%m-%d").tolist()
    return [f"- [{stamp}] {title}" for stamp, title in zip(stamps, market_news["title"].tolist())]


def news_text(buckets: list[tuple[str, list[str]]], headlines: list[str]) -> str | None:
    """Bucketed company news (newest first) then market headlines; None if there is neither."""
    lines = []
    for title, items in buckets:
        if items:
            lines += [f"#### {title} ({len(items)})", *items]
    if headlines:
        lines += [f"#### Market headlines ({len(headlines)})", *headlines]
    return "\n".join(lines) if lines else None


def bucket_title(lo: int, hi: int) -> str:
    return f"Last {hi} days" if lo == 0 else f"{lo}-{hi} days ago"


def bucketed(view: PointInTime, cfg: ContextConfig) -> list[tuple[str, pd.DataFrame]]:
    """The ticker's headlines per bucket of ``cfg.news_buckets``, newest first (none: no bucket)."""
    news = view.news
    if news.empty:
        return []
    today = view.time.tz_convert(NY).normalize()
    # only the rows a bucket can hold (``news`` is sorted by availability): a day's margin for DST, exact below
    oldest = today - pd.Timedelta(days=max(hi for _, hi, _ in cfg.news_buckets) + 1)
    news = news.iloc[int(news["available_at"].searchsorted(oldest.tz_convert("UTC"))):]
    age = (today - news["available_at"].dt.tz_convert(NY).dt.normalize()).dt.days
    return [(bucket_title(lo, hi), news[(age >= lo) & (age <= hi)].iloc[::-1].head(cap))
            for lo, hi, cap in cfg.news_buckets]


def shown(view: PointInTime, buckets: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The headlines of :func:`bucketed`'s ``buckets`` in the order a context shows them (``Context.news``)."""
    frames = [b for _, b in buckets if len(b)]
    return pd.concat(frames, ignore_index=True) if frames else view.news.iloc[0:0]


class Headlines(Part):
    """The market's headlines, shared by every ticker's news part."""

    def __init__(self, store: Store):
        headlines = rows(store, "news", MARKET)
        self.at = ns(headlines["available_at"])
        self.rendered = headline_lines(headlines)

    def latest(self, t: int, cap: int) -> list[str]:
        """The newest ``cap`` of the last three days' headlines at ``t``, newest first."""
        end = int(self.at.searchsorted(t, "right"))
        start = int(self.at.searchsorted(t - HEADLINE_DAYS * DAY_NS, "left"))
        return [self.rendered[i] for i in range(end - 1, max(start, end - cap) - 1, -1)]

    def lines(self) -> list[tuple[str, None]]:
        return [(line, None) for line in self.rendered]


class NewsPart(Part):
    """A ticker's headlines: rendered lines, their New-York day and vendor sentiment."""

    def __init__(self, store: Store, ticker: str, headlines: Headlines):
        self.news, self.headlines = rows(store, "news", ticker), headlines
        self.at = ns(self.news["available_at"])
        self.day = ns(self.news["available_at"].dt.tz_convert(NY).dt.normalize())
        self.rendered = news_lines(self.news)
        self.sentiment = self.news["sentiment"].map(SENTIMENT_SCORES).to_numpy(float)

    def section(self, at: Instant, cfg: ContextConfig) -> Section:
        # rows visible at t whose New-York day is lo..hi days before today's, newest first
        n = int(self.at.searchsorted(at.t, "right"))
        buckets, picked = [], []
        if n:
            for lo, hi, cap in cfg.news_buckets:
                start = int(self.day[:n].searchsorted(at.today - (hi + 1) * DAY_NS, "right"))
                end = int(self.day[:n].searchsorted(at.today - lo * DAY_NS, "right"))
                chosen = range(end - 1, max(start, end - cap) - 1, -1)
                buckets.append((bucket_title(lo, hi), [self.rendered[i] for i in chosen]))
                picked += chosen
        picked = np.asarray(picked, dtype=np.int64)
        text = news_text(buckets, self.headlines.latest(at.t, cfg.market_headlines))
        frame = ((lambda: self.news.iloc[picked].reset_index(drop=True)) if len(picked) else
                 (lambda: self.news.iloc[0:0]))
        return Section(text, news_features((at.t - self.at[picked]) // DAY_NS, self.sentiment[picked]),
                       {"news": frame})

    def lines(self) -> list[tuple[str, None]]:
        return [(line, None) for line in self.rendered]


class News(Modality):
    name, title, order = "news", "News", 20
    tables = ("news",)
    features = NEWS_FEATURES

    def reference(self, view: PointInTime, cfg: ContextConfig) -> Section:
        buckets = bucketed(view, cfg)
        news = shown(view, buckets)
        market = view.market_news
        recent = market[market["available_at"] >= view.time - pd.Timedelta(days=HEADLINE_DAYS)].iloc[::-1]
        text = news_text([(title, news_lines(b)) for title, b in buckets], headline_lines(
            recent.head(cfg.market_headlines)))
        return Section(text, news_features((view.time - news["available_at"]).dt.days.to_numpy(),
                                           news["sentiment"].map(SENTIMENT_SCORES).to_numpy(float)), {"news": news})

    def market(self, store: Store) -> Headlines:
        return Headlines(store)

    def index(self, store: Store, ticker: str, market: Part | None) -> Part:
        return NewsPart(store, ticker, market)


register(News())
