"""The store: importers' availability rules, the raw vendors' known traps, and the build CLI."""

import json

import pandas as pd
import pytest

from tr1_env.cli import main as tr1
from tr1_env.data.clock import at_ny, decision_time
from tr1_env.data.schema import TABLES, TICKERS, canonical_ticker
from tr1_env.data.store import Store

MINI_RAW = "tests/data/raw_mini"


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    tr1(["data", "build", "--raw", MINI_RAW, "--out", str(out)])
    return Store(out)


def test_embedded_store_has_every_table_and_ticker(store):
    assert set(store.tickers) == set(TICKERS)
    for name in TABLES:
        assert "available_at" in store.table(name), name
        assert str(store.table(name)["available_at"].dtype).endswith("UTC]"), name
    assert store.manifest["rows"]["prices"] == len(store.table("prices"))


def test_every_table_has_one_importer():
    """A table is its schema entry plus one importer: the build fills every table the schema names, once."""
    from tr1_env.data.importers import IMPORTERS
    from tr1_env.data.schema import SCHEMA

    filled = [name for names in IMPORTERS for name in names]
    assert sorted(filled) == sorted(SCHEMA) and list(SCHEMA) == list(TABLES)


def test_prices_are_as_traded_and_rounded(store):
    p = store.table("prices").set_index(["ticker", "date"])
    assert p.loc[("AAPL", pd.Timestamp("2024-08-30")), "close"] == 229.0
    assert p.loc[("SPY", pd.Timestamp("2024-08-30")), "close"] == pytest.approx(563.68, abs=1e-4)
    # NVDA's 10:1 split of 2024-06-10 is undone in the table: 2024-06-07 traded at 1,208.88.
    assert p.loc[("NVDA", pd.Timestamp("2024-06-07")), "close"] == pytest.approx(1208.88, abs=1e-2)
    scaled = p["close"] * 1e4  # float32 noise removed (4 decimals)
    assert (scaled - scaled.round()).abs().max() < 1e-6


def test_splits_apply_only_once_known(store):
    before = store.asof("NVDA", "2024-06-07").prices.set_index("date")
    after = store.asof("NVDA", "2024-06-10").prices.set_index("date")
    assert before.loc["2024-06-07", "close"] == pytest.approx(1208.88, abs=1e-2)  # as traded that day
    assert after.loc["2024-06-07", "close"] == pytest.approx(120.888, abs=1e-3)  # back-adjusted once effective
    assert after.loc["2024-06-07", "volume"] == before.loc["2024-06-07", "volume"] * 10
    closes = store.closes("NVDA")  # labels and accounting: one continuous series
    assert closes.loc["2024-06-10"] / closes.loc["2024-06-07"] == pytest.approx(121.79 / 120.888, rel=1e-6)
    assert closes.loc["2021-07-16"] < 20  # 4:1 of 2021 and 10:1 of 2024 both applied
    assert store.dividends("NVDA").loc["2024-03-05"] == pytest.approx(0.004)


def test_per_share_figures_on_the_split_basis_of_the_day(store):
    """NVDA's week of its 10:1 split (2024-06-10): EPS, estimates and share counts as they were
    reported (the vendors restate them for every later split), beside the as-traded close."""
    before, after = store.asof("NVDA", "2024-06-07"), store.asof("NVDA", "2024-06-11")
    eps = before.earnings.set_index(before.earnings["release_at"].dt.strftime("%Y-%m-%d"))
    assert eps.loc["2024-05-22", "reported_eps"] == pytest.approx(6.12, rel=0.02)  # 6.12 reported, 0.60 restated
    assert eps.loc["2024-05-22", "eps_estimate"] == pytest.approx(5.2, rel=0.02)
    assert eps.loc["2024-05-22", "surprise_pct"] == pytest.approx(14.83)  # a ratio: no split basis

    def annual(view, item):
        f = view.fundamentals
        return f[(f["item"] == item) & (f["freq"] == "annual") & (f["period_end"] == "2024-01-31")]["value"].iloc[0]

    assert annual(before, "Diluted EPS") == pytest.approx(11.93, rel=0.01)  # fiscal 2024 as reported
    assert annual(before, "Diluted Average Shares") == pytest.approx(2.494e9, rel=0.01)
    assert annual(after, "Diluted EPS") == pytest.approx(1.193, rel=0.01)  # the split is known from 06-10
    assert annual(after, "Diluted Average Shares") == pytest.approx(2.494e10, rel=0.01)
    after_eps = after.earnings.set_index(after.earnings["release_at"].dt.strftime("%Y-%m-%d"))
    assert after_eps.loc["2024-05-22", "reported_eps"] == pytest.approx(0.612, rel=0.02)
    # the price/earnings ratio is the same on either side of the split (about 1209 / 11.93 and 121 / 1.193)
    pe_before = before.prices["close"].iloc[-1] / annual(before, "Diluted EPS")
    pe_after = after.prices["close"].iloc[-1] / annual(after, "Diluted EPS")
    assert 90 < pe_before < 115 and 90 < pe_after < 115
    # a store cut at the day shows the same figures (the restatement is undone from the package's record)
    cut = store.cut("2024-06-07").asof("NVDA", "2024-06-07")
    pd.testing.assert_frame_equal(cut.earnings, before.earnings)
    pd.testing.assert_frame_equal(cut.fundamentals, before.fundamentals)
    paid = {name: view.dividends.set_index("date")["amount"] for name, view in (("before", before), ("after", after))}
    assert paid["before"].loc["2024-03-05"] == pytest.approx(0.04)  # as paid
    assert paid["after"].loc["2024-03-05"] == pytest.approx(0.004)  # on the new basis once the split is known


def test_price_available_at_the_close():
    assert decision_time("2024-06-10") == pd.Timestamp("2024-06-10 20:00", tz="UTC")  # EDT
    assert decision_time("2024-01-10") == pd.Timestamp("2024-01-10 21:00", tz="UTC")  # EST


def test_ticker_spellings():
    assert canonical_ticker("GOOG") == "GOOGL"
    assert {canonical_ticker(s) for s in ["BRK.B", "BRK_B", "brk-b", "BRK-A"]} == {"BRK-B"}


def test_news_deduplicated_and_timestamped(store):
    news = store.table("news")
    with_url = news[news["url"] != ""]
    assert not with_url.duplicated(["ticker", "url"]).any()
    hit = news[news["title"].str.startswith("Apple Unveils Apple Intelligence Suite, OpenAI Partnership")]
    assert (len(hit)
            and hit["published_at"].dt.tz_convert("America/New_York").dt.date.astype(str).iloc[0] == "2024-06-10")
    assert not news["summary"].str.startswith("Looking for stock market analysis").any()  # vendor boilerplate


def test_date_only_headlines_wait_for_the_next_session(mini):
    gnews = mini.table("news").query("vendor == 'gnews'")
    day = gnews["published_at"].dt.tz_localize(None).dt.normalize()
    assert (gnews["available_at"] > [decision_time(d) for d in day]).all()


def test_fundamentals_point_in_time(store):
    f = store.table("fundamentals")
    annual = f[(f.vendor == "yfinance") & (f.freq == "annual")]
    assert (annual["available_at"].dt.tz_localize(None) >= annual["period_end"] + pd.Timedelta(days=60)).all()
    meta_q2 = f[(f.ticker == "META") & (f.vendor == "simfin") & (f.period_end == "2024-06-30")]
    assert meta_q2["available_at"].iloc[0] == at_ny("2024-08-01", 23, 59)  # the 10-Q filing day, not the release
    assert (f["available_at"].dt.tz_localize(None) > f["period_end"]).all()  # JNJ's early "Publish Date" fixed
    brk = f[(f.ticker == "BRK-B") & (f.vendor == "simfin")]
    assert set(brk["item"]) == {"Net Income"}


def test_no_2026_snapshot_fields_in_2024(store):
    view = store.asof("AAPL", "2024-06-10")
    assert view.fundamentals["available_at"].max() <= view.time
    assert not {"target_mean", "recommendation", "pe_ratio"} & set(view.fundamentals["item"])
    assert set(store.table("profiles").columns) == {"ticker", "name", "sector", "industry", "available_at"}


def test_earnings_traps(mini):
    e = mini.table("earnings")
    cvx = e[e.ticker == "CVX"]["release_at"].dt.tz_convert("America/New_York").dt.date.astype(str)
    assert "2023-07-23" not in set(cvx) and "2023-07-28" in set(cvx)
    aapl = e[(e.ticker == "AAPL") & (e.release_at.dt.year == 2024)].iloc[0]
    assert aapl["release_at"] == pd.Timestamp("2024-02-01 16:30", tz="America/New_York")  # EDGAR acceptance


def test_insider_row_from_the_future_dropped(mini):
    ins = mini.table("insider")
    assert (ins["transaction_date"] <= ins["filing_date"]).all()
    assert not (ins["transaction_date"].dt.year == 2027).any()
    assert set(ins["ticker"]) == {"AAPL", "GOOGL"}


def test_macro_lagged_by_release(store):
    m = store.table("macro")
    cpi = m[(m.series == "CPI") & (m.date == "2024-07-01")].iloc[0]
    assert cpi["available_at"] > pd.Timestamp("2024-08-14", tz="UTC")  # July CPI came out mid-August
    dgs = m[(m.series == "DGS10") & (m.date == "2024-08-30")].iloc[0]
    assert dgs["available_at"] > decision_time("2024-08-30")
    assert dgs["value"] == 3.91


def test_fomc_minutes_lagged(store):
    f = store.table("fomc")
    minutes = f[f.kind == "minutes"]
    assert (minutes["available_at"].dt.tz_localize(None) - minutes["meeting_date"] >= pd.Timedelta(days=21)).all()


def test_asof_filters_every_table(store):
    t = pd.Timestamp("2024-09-16 20:00", tz="UTC")
    view = store.asof("AAPL", t)
    for name in ["prices", "news", "fundamentals", "earnings", "insider", "macro", "fomc", "dividends"]:
        df = getattr(view, name)
        assert len(df) and df["available_at"].max() <= t, name


def test_build_until_keeps_nothing_later(tmp_path):
    tr1(["data", "build", "--raw", MINI_RAW, "--out", str(tmp_path), "--until", "2024-06-14"])
    cut = Store(tmp_path)
    for name in TABLES:
        assert (cut.table(name)["available_at"] <= decision_time("2024-06-14")).all(), name
    assert cut.table("prices")["date"].max() == pd.Timestamp("2024-06-14")
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["until"] == "2024-06-14"


def test_build_refuses_a_folder_that_is_not_a_store(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "own file"}')
    (mine / "news.parquet").write_bytes(b"not yours")
    with pytest.raises(SystemExit) as exit_:
        tr1(["data", "build", "--raw", MINI_RAW, "--out", str(mine)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "is a non-empty folder that is not a tr1 store" in err and "--force" in err
    assert (mine / "news.parquet").read_bytes() == b"not yours" and len(list(mine.iterdir())) == 2
    tr1(["data", "build", "--raw", MINI_RAW, "--out", str(mine), "--force"])
    assert Store(mine).table("prices").size > 0
    tr1(["data", "build", "--raw", MINI_RAW, "--out", str(mine)])  # now a store: rebuilt in place, no --force


def test_bad_raw_file_names_file_and_row(tmp_path):
    import shutil

    shutil.copytree(MINI_RAW, tmp_path / "raw")
    f = tmp_path / "raw" / "backtester39_yahoo_chart" / "SPY.csv"
    lines = f.read_text().splitlines()
    good = lines[5]
    lines[5] = good.split(",")[0] + ",,,,,"
    f.write_text("\n".join(lines) + "\n")
    from tr1_env.data.build import BuildConfig, build_store

    with pytest.raises(ValueError, match=r"SPY\.csv: row 6"):
        build_store(BuildConfig(raw=str(tmp_path / "raw"), out=str(tmp_path / "out")))
    lines[5] = ",".join(["0" if i == 1 else v for i, v in enumerate(good.split(","))])  # an open of 0
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"SPY\.csv: row 6: missing or non-positive price"):
        build_store(BuildConfig(raw=str(tmp_path / "raw"), out=str(tmp_path / "out2")))


def test_unknown_ticker_is_a_clear_error(store):
    with pytest.raises(KeyError, match="no prices for ticker 'FOO'"):
        store.closes("FOO")
