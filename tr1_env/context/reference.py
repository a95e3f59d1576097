"""Ticker-day contexts: five modality sections, a random modality subset, a budget, features.

Everything is read through ``store.asof(ticker, decision_time)``, so a context built from the whole
store equals one built from a store cut at that day (tested as a property). A modality with no
data is stated as missing, never filled in. Indicators are computed over the ticker's whole
point-in-time history (from its first session in the store), never a trailing cut of it, so a
day's values do not depend on how much history a builder looks at.

Two builders share the renderers of ``tr1_env.context.sections``: :func:`build_context` (an index built
once per store, ``tr1_env.context.index``) and :func:`build_context_reference` (plain pandas over
the point-in-time view), tested equal on random ticker-days.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tr1_env.context import sections as S
from tr1_env.core.agents import Observation
from tr1_env.context.index import ContextIndex
from tr1_env.data.clock import NY
from tr1_env.data.store import PointInTime, Store
from tr1_env.context.features import (SENTIMENT_SCORES, analyst_score, earnings_features, indicators, insider_net,
                              macro_features, market_features, news_features)
from tr1_env.context.features import FEATURE_NAMES  # noqa: F401 - part of this module's API, as are the names below
from tr1_env.context.sections import MODALITIES, Context, ContextConfig, _fmt, sample_modalities  # noqa: F401

# The plain builder: select with pandas from the point-in-time view.


def _news_items(view: PointInTime, cfg: ContextConfig) -> list[tuple[str, pd.DataFrame]]:
    news = view.news
    if news.empty:
        return []
    today = view.time.tz_convert(NY).normalize()
    age = (today - news["available_at"].dt.tz_convert(NY).dt.normalize()).dt.days
    return [(S._bucket_title(lo, hi), news[(age >= lo) & (age <= hi)].iloc[::-1].head(cap))
            for lo, hi, cap in cfg.news_buckets]


def _news(view: PointInTime, cfg: ContextConfig) -> tuple[str | None, pd.DataFrame]:
    buckets = _news_items(view, cfg)
    shown = [b for _, b in buckets if len(b)]
    market = view.market_news
    recent = market[market["available_at"] >= view.time - pd.Timedelta(days=3)].iloc[::-1].head(cfg.market_headlines)
    text = S._news_text([(title, S._news_lines(b)) for title, b in buckets], S._headline_lines(recent))
    return text, pd.concat(shown, ignore_index=True) if shown else view.news.iloc[0:0]


def _sentiment(view: PointInTime, cfg: ContextConfig) -> tuple[str | None, dict[str, float]]:
    ins = view.insider
    recent = ins[ins["filing_date"] >= S.insider_cutoff(view.time, cfg)]
    totals = S._insider_totals(recent["code"].to_numpy(), recent["value"].to_numpy(float))
    features = {"insider_net": insider_net(totals[1], totals[3])}
    rec = view.recommendations
    line = None
    if len(rec) and (view.time - rec["available_at"].iloc[-1]).days <= cfg.stale_days:
        line = S._recommendation_lines(rec.iloc[[-1]])[0]
        r = rec.iloc[-1]
        features["analyst_score"] = analyst_score(r.strong_buy, r.buy, r.hold, r.sell, r.strong_sell)
    text = S._sentiment_text(len(recent), totals, S._insider_lines(recent.iloc[::-1].head(5)), line, cfg)
    return text, features


def _macro(view: PointInTime) -> tuple[str | None, dict[str, float], Callable[[], str]]:
    """The macro section, its features and a function giving the strict section (``macro_relative``)."""
    macro = view.macro
    last = macro.groupby("series").tail(1)  # each series' latest value, in order of arrival
    cpi = macro[macro["series"] == "CPI"]["value"]
    yoy = float(cpi.iloc[-1] / cpi.iloc[-13] - 1) * 100 if len(cpi) >= 13 else None
    statements = view.fomc[view.fomc["kind"] == "statement"]
    text = S._macro_text(S._macro_lines(last), yoy, S._fomc_lines(statements.iloc[-1:])[0] if len(statements) else None)

    def relative() -> str:
        return S._macro_relative_text(statements["body"].iloc[-1] if len(statements) else None)

    return text, macro_features(dict(zip(last["series"], last["value"])), yoy), relative


def _features(hist: pd.DataFrame, news: pd.DataFrame, view: PointInTime) -> dict[str, float]:
    """Market, news, earnings and statement features (the sentiment and macro ones come with their text)."""
    f = dict(market_features(hist).iloc[-1])
    f.update(news_features((view.time - news["available_at"]).dt.days.to_numpy(),
                           news["sentiment"].map(SENTIMENT_SCORES).to_numpy(float)))
    if len(view.earnings):
        e = view.earnings.iloc[-1]
        f.update(earnings_features(e.surprise_pct, (view.time - e.release_at).days))
    f.update(S._statement_features(view))
    return f


def build_context(store: Store, ticker: str, date, modalities: tuple[str, ...] | None = None,
                  seed: int | None = None, cfg: ContextConfig = ContextConfig()) -> Context:
    """The ticker-day context at the close of ``date``.

    ``modalities=None`` with a ``seed`` draws a random subset; with neither, all five are used.
    Served from the store's :class:`~tr1_env.context.index.ContextIndex` (built on first use);
    :func:`build_context_reference` is the plain builder it is tested against.
    """
    return ContextIndex.of(store).build(ticker, date, modalities, seed, cfg)


def build_context_reference(store: Store, ticker: str, date, modalities: tuple[str, ...] | None = None,
                            seed: int | None = None, cfg: ContextConfig = ContextConfig()) -> Context:
    """:func:`build_context` computed directly from ``store.asof(ticker, date)`` with pandas (~40 ms a call)."""
    day = pd.Timestamp(date).normalize()
    modalities = S._modalities(modalities, seed, cfg)
    view = store.asof(ticker, day)
    if view.prices.empty or view.prices["date"].iloc[-1] != day:
        raise ValueError(f"{ticker} has no session on {day:%Y-%m-%d} in store {store.path}")
    hist = indicators(view.prices)
    news_text, news = _news(view, cfg)
    sentiment, sentiment_features = _sentiment(view, cfg)
    macro, macro_features_, macro_relative = _macro(view)
    bodies = {"market": S._market_text(S._market_rows(hist.tail(cfg.window)), hist["close"].to_numpy(),
                                       hist["close_200_sma"].iloc[-1]),
              "news": news_text, "fundamentals": S._fundamentals(view), "sentiment": sentiment, "macro": macro}
    features = {**_features(hist, news, view), **sentiment_features, **macro_features_}
    return S._assemble(view.ticker, day, modalities, bodies, features, hist, news, cfg, macro_relative)


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
