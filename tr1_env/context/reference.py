"""Ticker-day contexts: one section per modality, a random modality subset, a budget, features.

Everything is read through ``store.asof(ticker, decision_time)``, so a context built from the whole
store equals one built from a store cut at that day (tested as a property). A modality with no
data is stated as missing, never filled in. Indicators are computed over the ticker's whole
point-in-time history (from its first session in the store), never a trailing cut of it, so a
day's values do not depend on how much history a builder looks at.

Two builders ask the same modalities (:mod:`tr1_env.context.modalities`): :func:`build_context` (an index built
once per store, ``tr1_env.context.index``) and :func:`build_context_reference` (plain pandas over the point-in-time
view), tested equal on random ticker-days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.index import ContextIndex
from tr1_env.context.modalities import news
from tr1_env.context.modalities.base import registered
from tr1_env.context.record import Context, assemble, choose_modalities
from tr1_env.core.agents import Observation
from tr1_env.data.clock import NY
from tr1_env.data.store import PointInTime, Store


def build_context(store: Store, ticker: str, date, modalities: tuple[str, ...] | None = None,
                  seed: int | None = None, cfg: ContextConfig = ContextConfig()) -> Context:
    """The ticker-day context at the close of ``date``.

    ``modalities=None`` with a ``seed`` draws a random subset; with neither, all are used.
    Served from the store's :class:`~tr1_env.context.index.ContextIndex` (built on first use);
    :func:`build_context_reference` is the plain builder it is tested against.
    """
    return ContextIndex.of(store).build(ticker, date, modalities, seed, cfg)


def build_context_reference(store: Store, ticker: str, date, modalities: tuple[str, ...] | None = None,
                            seed: int | None = None, cfg: ContextConfig = ContextConfig()) -> Context:
    """:func:`build_context` computed directly from ``store.asof(ticker, date)`` with pandas (~40 ms a call)."""
    day = pd.Timestamp(date).normalize()
    modalities = choose_modalities(modalities, seed, cfg)
    view = store.asof(ticker, day)
    if view.prices.empty or view.prices["date"].iloc[-1] != day:
        raise ValueError(f"{ticker} has no session on {day:%Y-%m-%d} in store {store.path}")
    return assemble(view.ticker, day, modalities, {m.name: m.reference(view, cfg) for m in registered()}, cfg)


def build_observation(store: Store, ticker: str, date, position: float = 0.0, **kw) -> Observation:
    """The agent-facing view of :func:`build_context`."""
    return build_context(store, ticker, date, **kw).observation(position)


def numeric_observation(view: PointInTime, history: pd.DataFrame, cfg: ContextConfig = ContextConfig(),
                        headlines: bool = True, dates: np.ndarray | None = None,
                        day: pd.Timestamp | None = None) -> Observation:
    """What rule-based agents read (bars with indicators, the context's headlines) without the text or features.

    ``history`` is this ticker's :func:`~tr1_env.context.modalities.market.indicators` frame over its whole history
    on ``view``'s splits; rows after the day are dropped here. Walk-forward replays build it once per ticker instead
    of once per day: indicators run from the first session either way, so its rows equal the per-day context's
    (tested). ``headlines=False``: no headlines (an empty frame), for agents that read prices alone. ``dates``:
    ``history["date"]`` as a datetime64 array, when the caller keeps one (converting it is most of a call's cost);
    ``day``: the session ``view`` is at (its close's date), when the caller has it (a third of what is left).
    """
    day = view.time.tz_convert(NY).tz_localize(None).normalize() if day is None else day
    dates = history["date"].to_numpy() if dates is None else dates
    n = int(dates.searchsorted(day.to_datetime64(), side="right"))
    return Observation(view.ticker, day, "", "", np.zeros(0, np.float32), (), history.iloc[:n],
                       news.shown(view, news.bucketed(view, cfg)) if headlines else view.store.empty("news"))
