"""`tr1 data synth`: deterministic by seed, realistic enough for load tests, stamped by the store's rules, a planted
signal of the stated strength, and flagged synthetic in every report built from it."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.notes import synthetic_note
from tr1_env.cli import main as tr1
from tr1_env.context.reference import build_context
from tr1_env.data.clock import at_ny
from tr1_env.data.schema import TABLES
from tr1_env.data.store import Store
from tr1_env.data.synth import SynthConfig, synth_tables


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "store"
    tr1(["data", "synth", "--tickers", "12", "--years", "3", "--seed", "7", "--out", str(out)])
    return Store(out)


def test_the_same_seed_writes_the_same_store(synthetic, tmp_path):
    tr1(["data", "synth", "--tickers", "12", "--years", "3", "--seed", "7", "--out", str(tmp_path / "again")])
    for name in TABLES:
        again = (tmp_path / "again" / f"{name}.parquet").read_bytes()
        assert (synthetic.path / f"{name}.parquet").read_bytes() == again, name
    other = synth_tables(SynthConfig(out="", tickers=12, years=3, seed=8))["prices"]
    assert not np.allclose(other["close"], synthetic.table("prices")["close"])


def test_it_can_never_pass_for_market_data(synthetic):
    assert synthetic.synthetic["seed"] == 7 and synthetic.manifest["source"] == "synthetic"
    assert all(t.startswith("SYN") for t in synthetic.tickers)
    assert synthetic.table("profiles")["name"].str.startswith("Synthetic Company").all()
    news = synthetic.table("news")
    assert (news["vendor"] == "synthetic").all() and news["summary"].str.contains("not market news").all()
    assert synthetic_note(synthetic.synthetic)[0].startswith("SYNTHETIC DATA") and synthetic_note(None) == []


def test_returns_look_like_equities(synthetic):
    """Yearly volatility in the equity range, fat tails, volatility clustering, a common market factor."""
    r = pd.DataFrame({t: np.log(synthetic.closes(t)).diff() for t in synthetic.tickers}).dropna()
    vol = r.std() * np.sqrt(252)
    assert vol.between(0.12, 0.7).all()
    assert (r.kurt() > 0.5).mean() > 0.8  # fat tails (a normal's excess kurtosis is 0)
    squared = (r ** 2).mean(axis=1)
    assert squared.autocorr(1) > 0.05  # GARCH: big moves follow big moves
    corr = r.corr().to_numpy()[np.triu_indices(len(r.columns), 1)]
    assert 0.1 < corr.mean() < 0.8


def test_splits_and_dividends_are_in_the_store_tables(synthetic):
    splits, dividends = synthetic.table("splits"), synthetic.table("dividends")
    assert len(splits) and len(dividends)
    t, day, ratio = splits.iloc[0][["ticker", "date", "ratio"]]
    traded = synthetic.table("prices").set_index(["ticker", "date"])["close"]
    before = traded.loc[t][traded.loc[t].index < day].iloc[-1]
    after = traded.loc[t][traded.loc[t].index >= day].iloc[0]
    assert 0.5 < after * ratio / before < 1.5  # as traded: the price drops by the ratio at the split
    closes = synthetic.closes(t)  # adjusted: continuous
    assert abs(np.log(closes.loc[day] / closes[closes.index < day].iloc[-1])) < 0.3
    # statements as reported: per-share figures put on the split basis of the decision time
    last_before = synthetic.trading_days(t)[synthetic.trading_days(t) < day][-1]
    eps = {when: synthetic.asof(t, when).fundamentals.query("item == 'Diluted EPS'").set_index("period_end")["value"]
           for when in (last_before, day)}
    old = eps[last_before].index
    np.testing.assert_allclose(eps[day].loc[old], eps[last_before] / ratio)


def test_nothing_is_available_before_its_event(synthetic):
    news, fund, earn = synthetic.table("news"), synthetic.table("fundamentals"), synthetic.table("earnings")
    assert (news["available_at"] >= news["published_at"]).all()
    last_close = synthetic.table("prices")["available_at"].max()
    assert (news["available_at"] <= last_close + pd.Timedelta(hours=4)).all()
    period_end = pd.to_datetime(fund["period_end"]).dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    assert (fund["available_at"] >= period_end + pd.Timedelta(days=45)).all()
    assert (earn["available_at"] == earn["release_at"]).all()
    prices = synthetic.table("prices")
    assert (prices["available_at"] == [at_ny(d) for d in prices["date"]]).all()


def test_a_context_from_the_whole_store_equals_one_from_the_store_cut_that_day(synthetic):
    rng = np.random.default_rng(0)
    splits = synthetic.table("splits")
    days = [(t, d) for t, d in zip(splits["ticker"], splits["date"])]  # the split days themselves
    for _ in range(6):
        t = synthetic.tickers[rng.integers(len(synthetic.tickers))]
        sessions = synthetic.trading_days(t)
        days.append((t, sessions[rng.integers(60, len(sessions))]))
    for t, day in days:
        full = build_context(synthetic, t, day)
        cut = build_context(synthetic.cut(day), t, day)
        assert full.text == cut.text, (t, day)
        np.testing.assert_array_equal(full.features, cut.features)


def _sentiment_ic(store: Store) -> float:
    """Correlation of each pre-close headline's sentiment label (+1/0/-1) with the next session's log return."""
    news = store.table("news")
    news = news[news["ticker"] != "MARKET"]
    local = news["published_at"].dt.tz_convert("America/New_York")
    pre = news[local.dt.hour < 16].assign(date=local.dt.tz_localize(None).dt.normalize())
    nxt = pd.concat({t: np.log(store.closes(t)).diff().shift(-1) for t in store.tickers}, names=["ticker", "date"])
    joined = pre.join(nxt.rename("next"), on=["ticker", "date"]).dropna(subset=["next"])
    score = joined["sentiment"].map({"Positive": 1.0, "Neutral": 0.0, "Negative": -1.0})
    return float(np.corrcoef(score, joined["next"])[0, 1])


def test_a_planted_signal_has_the_stated_strength(tmp_path):
    """The tone of pre-close headlines predicts the next session with the stated correlation (the three-way label
    keeps about 0.8 of it); without a plant it predicts nothing."""
    for ic in (0.0, 0.2):
        tr1(["data", "synth", "--tickers", "30", "--years", "2", "--seed", "1", "--signal-ic", str(ic),
             "--news-rate", "0.5", "--out", str(tmp_path / str(ic))])
    planted, plain = _sentiment_ic(Store(tmp_path / "0.2")), _sentiment_ic(Store(tmp_path / "0.0"))
    assert 0.12 < planted < 0.22 and abs(plain) < 0.04


def test_the_synthetic_flag_reaches_the_reports(synthetic, tmp_path):
    from benchmarks.run import main as run

    out = tmp_path / "run"
    run(["--store", str(synthetic.path), "--tickers", "SYN0001", "SYN0002", "--start", "2017-01-03",
         "--end", "2017-03-31", "--agents", "buy_and_hold", "ma_crossover", "--no-tearsheets", "--out", str(out)])
    # a store without SPY: the portfolio track runs against 1/N and skips the index ETF by name (exit 1)
    assert run(["--portfolio", "--store", str(synthetic.path), "--tickers", "SYN0001", "SYN0002", "SYN0003",
                "--start", "2017-01-03", "--end", "2017-03-31", "--agents", "equal_weight", "index_etf",
                "--no-tearsheets", "--out", str(tmp_path / "book")]) == 1
    board = pd.read_csv(tmp_path / "book" / "leaderboard_portfolio.csv")
    assert set(board["agent"]) == {"buy_and_hold", "equal_weight"}
    for page in (out / "summary.md", out / "leaderboard.html", tmp_path / "book" / "leaderboard_portfolio.html"):
        assert "SYNTHETIC DATA: the store was simulated by tr1 data synth (12 tickers, 3 years, seed 7" in \
            page.read_text(), page


def test_bad_settings_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        tr1(["data", "synth", "--tickers", "0", "--out", str(tmp_path / "s")])
    assert exit_.value.code == 2 and "--tickers 0" in capsys.readouterr().err and not (tmp_path / "s").exists()
