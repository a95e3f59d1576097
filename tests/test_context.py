"""Ticker-day contexts: sections, missing data, budget, features, and no look-ahead (as properties)."""

import numpy as np
import pandas as pd
import pytest
from conftest import random_days

from tr1_env.cli import main as tr1
from tr1_env.context.config import ContextConfig
from tr1_env.context.features import FEATURE_NAMES
from tr1_env.context.record import MODALITIES, sample_modalities
from tr1_env.context.reference import build_context, build_context_reference
from tr1_env.data.schema import TICKERS
from tr1_env.data.store import Store


def _same(a, b):
    assert a.text == b.text
    assert a.prompt == b.prompt
    assert a.missing == b.missing
    np.testing.assert_array_equal(a.features, b.features)


@pytest.mark.parametrize("chunk", range(4))
def test_context_from_whole_store_equals_store_cut_at_that_day(store, chunk):
    """The no-look-ahead property, over 40 random ticker-days and random modality subsets."""
    for ticker, day, seed in random_days(store, 10, chunk):
        full = build_context(store, ticker, day, seed=seed)
        cut = build_context(store.cut(day), ticker, day, seed=seed)
        _same(full, cut)


def test_context_from_store_built_with_until(tmp_path):
    """Same property through the build pipeline: `tr1 data build --until D` (mini raw subset)."""
    tr1(["data", "build", "--raw", "tests/data/raw_mini", "--out", str(tmp_path / "full")])
    full = Store(tmp_path / "full")
    for day in ["2024-06-03", "2024-06-12", "2024-07-05"]:
        tr1(["data", "build", "--raw", "tests/data/raw_mini", "--out", str(tmp_path / day), "--until", day])
        for ticker in ["AAPL", "XOM", "SPY"]:
            _same(build_context(full, ticker, day), build_context(Store(tmp_path / day), ticker, day))


def test_future_rows_change_nothing(store):
    """Appending a fake headline one minute after the close leaves the day's context unchanged."""
    day = pd.Timestamp("2024-06-10")
    before = build_context(store, "AAPL", day)
    news = store.table("news")
    stamp = pd.Timestamp("2024-06-10 20:01", tz="UTC")
    fake = news.iloc[[-1]].assign(ticker="AAPL", title="Apple to be acquired at 300 USD a share",
                                  published_at=stamp, available_at=stamp)
    tables = {n: store.table(n) for n in ["prices", "dividends", "fundamentals", "profiles", "earnings",
                                          "recommendations", "insider", "macro", "fomc"]}
    doctored = Store(store.path, {**tables, "news": pd.concat([news, fake], ignore_index=True)})
    _same(before, build_context(doctored, "AAPL", day))
    assert doctored.asof("AAPL", "2024-06-11").news["title"].str.contains("acquired at 300").any()


def test_sections_and_content(store):
    ctx = build_context(store, "AAPL", "2024-06-10")
    assert ctx.modalities == MODALITIES
    assert "| 2024-06-10 | 196.90 | 197.30 | 192.15 | 193.12 |" in ctx.sections["market"]
    assert "rsi_14" in ctx.sections["market"]
    assert "OpenAI" in ctx.sections["news"] and "#### Last 3 days (10)" in ctx.sections["news"]
    assert "period ending 2024-03-31" in ctx.sections["fundamentals"]  # SimFin Q1 filed 2024-05-03
    assert "10-year Treasury yield" in ctx.sections["macro"]
    assert ctx.text in ctx.prompt and "[[[STRONG_BUY]]]" in ctx.prompt
    assert ctx.features.shape == (len(FEATURE_NAMES),) and ctx.features.dtype == np.float32
    assert np.isfinite(ctx.features).all()


def test_news_buckets_respect_caps_and_ages(store):
    ctx = build_context(store, "TSLA", "2024-07-25")
    age = (pd.Timestamp("2024-07-25", tz="America/New_York") - ctx.news["available_at"].dt.tz_convert(
        "America/New_York").dt.normalize()).dt.days
    assert age.max() <= 30 and len(ctx.news) <= 50
    assert ctx.sections["news"].count("\n- [") <= 50


def test_missing_modality_is_stated_not_invented(store):
    ctx = build_context(store, "SPY", "2024-07-01")
    assert set(ctx.missing) == {"news", "fundamentals", "sentiment"}
    assert "No news data is available for SPY as of 2024-07-01." in ctx.text


def test_random_modality_subsets_are_seeded():
    subsets = {sample_modalities(np.random.default_rng(s)) for s in range(200)}
    assert len(subsets) >= 20 and all(subsets)  # the paper's ~20 variants per day, never empty
    assert sample_modalities(np.random.default_rng(7)) == sample_modalities(np.random.default_rng(7))


def test_budget(store):
    ctx = build_context(store, "AAPL", "2024-06-10", cfg=ContextConfig(max_chars=3000))
    assert len(ctx.text) <= 3000 + 200  # headers between sections
    assert set(ctx.sections) == set(MODALITIES)


@pytest.mark.parametrize("max_chars", [300, 800, 1500])
def test_budget_holds_on_every_day(store, max_chars):
    """The sections' bodies never exceed ``max_chars``, even when sections of one or two long lines
    must be cut (at 1,500 characters 9 of 200 random days used to overflow, by up to 55 %)."""
    for ticker, day, seed in random_days(store, 150, max_chars):
        ctx = build_context(store, ticker, day, seed=seed, cfg=ContextConfig(max_chars=max_chars))
        assert sum(map(len, ctx.sections.values())) <= max_chars, (ticker, day, ctx.modalities)


def test_no_session_is_a_clear_error(store):
    with pytest.raises(ValueError, match="no session on 2024-06-08"):
        build_context(store, "AAPL", "2024-06-08")
    with pytest.raises(ValueError, match="unknown modalities"):
        build_context(store, "AAPL", "2024-06-10", modalities=("weather",))


def test_context_cli(capsys):
    tr1(["context", "--ticker", "AAPL", "--date", "2024-06-10", "--modalities", "news,macro"])
    out = capsys.readouterr().out
    assert "## News" in out and "## Macro" in out and "## Market data" not in out


def test_prices_in_context_are_as_known_that_day(store):
    """Before NVDA's 10:1 split the context shows the traded ~1,150 level, matching that day's news."""
    ctx = build_context(store, "NVDA", "2024-06-03", modalities=("market",))
    assert "| 2024-06-03 |" in ctx.text and "Last close 1,150.00" in ctx.text


@pytest.mark.parametrize("chunk", range(4))
def test_indexed_builder_equals_reference(store, chunk):
    """The fast builder renders exactly what the plain one does: 4 x 50 random ticker-days, 2016-2025,
    random modality subsets (every section and the feature vector are computed either way)."""
    rng = np.random.default_rng(100 + chunk)
    for _ in range(50):
        ticker = TICKERS[rng.integers(len(TICKERS))]
        days = store.trading_days(ticker, "2016-01-04", "2025-10-31")
        day, seed = days[rng.integers(len(days))], int(rng.integers(1 << 30))
        fast = build_context(store, ticker, day, seed=seed)
        plain = build_context_reference(store, ticker, day, seed=seed)
        _same(fast, plain)
        assert fast.sections == plain.sections and fast.modalities == plain.modalities
        pd.testing.assert_frame_equal(fast.history, plain.history)
        pd.testing.assert_frame_equal(fast.news, plain.news)


def test_indexed_builder_on_a_split_day(store):
    """NVDA's 10:1 split (announced for 2024-06-10): the day before shows the old price level, the day of
    the new one, both through the index and the plain builder."""
    for day, level in (("2024-06-07", "Last close 1,208.88"), ("2024-06-10", "Last close 121.79")):
        ctx = build_context(store, "NVDA", day, modalities=("market",))
        assert level in ctx.text
        _same(ctx, build_context_reference(store, "NVDA", day, modalities=("market",)))


def test_index_disk_cache_round_trip(store, tmp_path):
    """A prepared index written to disk and read back by a fresh index gives the same contexts."""
    from tr1_env.context.index import ContextIndex

    ContextIndex(store, cache_dir=tmp_path).prepare(["AAPL"])
    assert len(list(tmp_path.glob("AAPL-*.pkl"))) == 1
    plain = build_context_reference(store, "AAPL", "2024-06-10")
    _same(ContextIndex(store, cache_dir=tmp_path).build("AAPL", "2024-06-10"), plain)
    [cached] = tmp_path.glob("AAPL-*.pkl")
    cached.write_bytes(b"not a pickle")  # a damaged cache file is recomputed, not trusted
    _same(ContextIndex(store, cache_dir=tmp_path).build("AAPL", "2024-06-10"), plain)


@pytest.mark.slow
def test_anonymization_templates_disk_cache(store, tmp_path, monkeypatch):
    """prepare(levels=...) compiles a ticker's news and table rows once and keeps the templates on disk; a fresh
    process (an empty memo) reads them back instead of parsing, and the anonymized context is the same."""
    from tr1_env.context import anonymize
    from tr1_env.context.index import ContextIndex

    fresh = anonymize.anonymize(build_context(store, "AAPL", "2024-06-10"))
    ContextIndex(store, cache_dir=tmp_path).prepare(["AAPL"], levels=("strict",))
    [cached] = tmp_path.glob("AAPL-anon-strict-*.pkl")
    line = ContextIndex.of(store).ticker("AAPL").parts["news"].rendered[-1]
    anonymize.templates().clear()
    with monkeypatch.context() as m:
        m.setattr(anonymize, "template", lambda *a: pytest.fail("compiled again instead of read from disk"))
        ContextIndex(store, cache_dir=tmp_path).prepare(["AAPL"], levels=("strict",))
    assert ("strict", None, line) in anonymize.templates()
    assert anonymize.anonymize(build_context(store, "AAPL", "2024-06-10")).text == fresh.text
    cached.write_bytes(b"not a pickle")  # a damaged file is compiled again
    ContextIndex(store, cache_dir=tmp_path).prepare(["AAPL"], levels=("strict",))
    assert cached.read_bytes() != b"not a pickle"
