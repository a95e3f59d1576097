"""Each modality answers alike through both builders, reads only the tables it names, and a new one joins both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tr1_env.context.config import ContextConfig
from tr1_env.context.features import FEATURE_NAMES, feature_names
from tr1_env.context.index import ContextIndex
from tr1_env.context.modalities.base import (
    DAY_NS,
    Instant,
    Modality,
    Part,
    Section,
    ns,
    register,
    registered,
    rows,
    unregister,
)
from tr1_env.context.record import MODALITIES
from tr1_env.context.reference import build_context, build_context_reference
from tr1_env.data.schema import SCHEMA, TICKERS
from tr1_env.data.store import Store

BY_NAME = {m.name: m for m in registered()}


#: Days on which split epochs matter: before and after NVDA's 10:1 (2024-06-10), AAPL's 4:1 (2020-08-31), TSLA's 3:1
SPLIT_DAYS = [("NVDA", "2024-06-07"), ("NVDA", "2024-06-12"), ("AAPL", "2020-09-02"), ("TSLA", "2022-08-26")]


def _days(store: Store, n: int, seed: int):
    yield from ((ticker, pd.Timestamp(day)) for ticker, day in SPLIT_DAYS)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        ticker = TICKERS[rng.integers(len(TICKERS))]
        days = store.trading_days(ticker, "2016-01-04", "2025-10-31")
        yield ticker, days[rng.integers(len(days))]


def _resolved(frames: dict) -> dict:
    return {k: v() if callable(v) else v for k, v in frames.items()}


def _same_section(fast: Section, plain: Section, where) -> None:
    assert fast.text == plain.text, where
    assert fast.features.keys() == plain.features.keys(), where
    np.testing.assert_array_equal(np.array(list(fast.features.values()), float),
                                  np.array([plain.features[k] for k in fast.features], float), err_msg=str(where))
    fast_frames, plain_frames = _resolved(fast.frames), _resolved(plain.frames)
    assert fast_frames.keys() == plain_frames.keys(), where
    for name, value in fast_frames.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, plain_frames[name], obj=f"{name} {where}")
        else:
            assert value == plain_frames[name], where


def test_the_package_registers_five_modalities_and_their_features_in_the_old_order():
    assert MODALITIES == ("market", "news", "fundamentals", "sentiment", "macro")
    # the feature vector's order before modalities had modules: a model trained on it reads the same columns
    assert FEATURE_NAMES == (
        "ret_1d", "ret_5d", "ret_10d", "vol_20d", "rsi_14", "macdh_norm", "boll_pos", "sma10_gap", "sma50_gap",
        "sma200_gap", "volume_z", "news_3d", "news_10d", "news_sentiment", "eps_surprise", "days_since_earnings",
        "rev_growth_yoy", "net_margin", "insider_net", "analyst_score", "fedfunds", "dgs10", "term_spread", "cpi_yoy",
        "unrate", "vix")
    for m in registered():
        assert set(m.tables) <= set(SCHEMA), m.name


@pytest.mark.parametrize("name", MODALITIES)
def test_each_modality_index_equals_reference(store, tmp_path, name):
    """The fast part's section (text, features, frames) equals the pandas one on 4 split days and 40 random
    ticker-days, with random settings; every 8th day also through a store cut at that day (its own index and view)."""
    modality, index = BY_NAME[name], ContextIndex.of(store)
    rng = np.random.default_rng(7)
    for i, (ticker, day) in enumerate(_days(store, 40, MODALITIES.index(name))):
        cfg = ContextConfig(window=int(rng.integers(2, 30)), insider_days=int(rng.integers(10, 200)),
                            stale_days=int(rng.integers(10, 200)), market_headlines=int(rng.integers(0, 8)))
        plain = modality.reference(store.asof(ticker, day), cfg)
        _same_section(index.ticker(ticker).parts[name].section(index.instant(day), cfg), plain, (ticker, day))
        if i % 8 == 0:
            cut = ContextIndex(store.cut(day), cache_dir=tmp_path)
            _same_section(cut.ticker(ticker).parts[name].section(cut.instant(day), cfg), plain, (ticker, day, "cut"))
            _same_section(modality.reference(cut.store.asof(ticker, day), cfg), plain, (ticker, day, "cut view"))
        assert set(plain.features) <= set(modality.features), (ticker, day)


def test_parts_follow_a_split_the_store_learns(store, tmp_path):
    """Every insider row postdates the store's splits, so a 2:1 AAPL split is added on 2025-06-02: on the days around
    it the market and sentiment parts (their split epochs) still equal the pandas view, which applies it."""
    splits = store.table("splits")
    split = splits.iloc[[0]].assign(date=pd.Timestamp("2025-06-02"), ratio=2.0,
                                    available_at=pd.Timestamp("2025-06-02 13:30", tz="UTC"))
    doctored = Store(store.path, {**{n: store.table(n) for n in SCHEMA}, "splits": pd.concat([splits, split])})
    index = ContextIndex(doctored, cache_dir=tmp_path)
    for day in pd.to_datetime(["2025-05-30", "2025-06-02", "2025-06-03", "2025-07-01"]):
        for name in ("market", "sentiment"):
            plain = BY_NAME[name].reference(doctored.asof("AAPL", day), ContextConfig())
            _same_section(index.ticker("AAPL").parts[name].section(index.instant(day), ContextConfig()), plain, day)
    before = BY_NAME["sentiment"].reference(store.asof("AAPL", "2025-06-03"), ContextConfig()).text
    assert plain.text != before  # the split shows: pre-split filings' prices halved


class _Spy(Store):
    """A store that records which tables are read."""

    def __init__(self, store: Store):
        super().__init__(store.path, {n: store.table(n) for n in SCHEMA})
        self.read: set[str] = set()

    def visible(self, name, key, t):
        self.read.add(name)
        return super().visible(name, key, t)


@pytest.mark.parametrize("name", MODALITIES)
def test_each_modality_reads_only_its_tables(store, tmp_path, name):
    modality = BY_NAME[name]
    spy = _Spy(store)
    modality.reference(spy.asof("NVDA", "2024-06-10"), ContextConfig())
    assert spy.read <= set(modality.tables)
    spy.read.clear()
    part = modality.index(spy, "NVDA", modality.market(spy))
    part.section(ContextIndex(spy, cache_dir=tmp_path).instant(pd.Timestamp("2024-06-10")), ContextConfig())
    part.state()
    assert spy.read <= set(modality.tables)


class _Dividends(Modality):
    """A modality a contributor might add: cash dividends of the last year (count and latest ex-date)."""

    name, title, order = "dividends", "Dividends", 35
    tables = ("dividends",)
    features = ("dividends_1y",)

    @staticmethod
    def _section(dates: list[pd.Timestamp]) -> Section:
        if not dates:
            return Section(None)
        return Section(f"- {len(dates)} cash dividends in the last year, the latest with ex-date {dates[-1]:%Y-%m-%d}.",
                       {"dividends_1y": float(len(dates))})

    def reference(self, view, cfg):
        d = view.dividends
        return self._section(list(d.loc[d["available_at"] > view.time - pd.Timedelta(days=365), "date"]))

    def index(self, store, ticker, market):
        return _DividendPart(store, ticker, self._section)


class _DividendPart(Part):
    def __init__(self, store, ticker, render):
        frame = rows(store, "dividends", ticker)
        self.at, self.dates, self.render = ns(frame["available_at"]), list(frame["date"]), render

    def section(self, at: Instant, cfg) -> Section:
        start = int(self.at.searchsorted(at.t - 365 * DAY_NS, "right"))
        return self.render(self.dates[start:int(self.at.searchsorted(at.t, "right"))])


@pytest.fixture
def dividends():
    modality = register(_Dividends())
    yield modality
    unregister(modality.name)


def test_a_registered_modality_joins_both_builders(store, dividends):
    """One module registered: its section (in its place), its feature and its store cut, in both builders."""
    assert feature_names().index("dividends_1y") == FEATURE_NAMES.index("net_margin") + 1
    for ticker, day in [("AAPL", "2024-06-10"), ("JPM", "2023-11-01"), ("NVDA", "2024-06-12"), ("TSLA", "2024-06-10")]:
        fast, plain = build_context(store, ticker, day), build_context_reference(store, ticker, day)
        cut = build_context(store.cut(day), ticker, day)
        assert fast.modalities == plain.modalities == (*MODALITIES[:3], "dividends", *MODALITIES[3:])
        for ctx in (plain, cut):
            assert ctx.text == fast.text and ctx.missing == fast.missing
            np.testing.assert_array_equal(ctx.features, fast.features)
        assert len(fast.features) == len(FEATURE_NAMES) + 1
        if ticker == "TSLA":  # pays none: stated as missing, feature 0
            assert "No dividends data is available for TSLA" in fast.text and "dividends" in fast.missing
        else:
            assert fast.text.index("## Fundamentals") < fast.text.index("## Dividends\n- 4 cash dividends") \
                   < fast.text.index("## Insider and analyst sentiment")
            assert fast.features[feature_names().index("dividends_1y")] == 4
    unregister("dividends")
    assert len(build_context(store, "AAPL", "2024-06-10").features) == len(FEATURE_NAMES)
