"""Realistic execution with hand-computed numbers: per-share commission with a minimum, slippage, square-root
impact, a participation cap (the rest unfilled), borrow fee, cash interest, LLM cost; presets and price table."""

import numpy as np
import pandas as pd
import pytest

from tr1_env.core.actions import Action
from tr1_env.evaluation.backtest import backtest
from tr1_env.execution import Execution
from tr1_env.execution.llm_cost import decision_cost, load_prices, model_price

COSTLY = Execution(cost_bps=0, capital=100_000, commission_per_share=0.004, commission_min=5, slippage_bps=10,
                   impact_coef=1.0, participation=0.5, borrow_bps=2520, cash_rate=0.252, charge_llm_cost=True)


def _column(x) -> np.ndarray:
    return np.asarray(x, dtype=float)[:, None]


def _book():
    """One ticker filled at the close: nothing before the fill, the close-to-close return after it."""
    closes = np.array([100.0, 110, 99, 99, 99])
    asset = closes[1:] / closes[:-1] - 1
    sigma, dollar = np.full(4, 0.02), np.array([4e5, 4e5, 1e5, 1e9])
    booked = COSTLY.book(_column([1.0, 1, -1, -1]), np.zeros((4, 1)), _column(asset), _column(closes[:-1]),
                         (_column(sigma), _column(dollar)), np.array([0, 0, 12.5, 0.0]), drift=False)
    return booked.ret, pd.DataFrame(booked.paid).assign(position=booked.position[:, 0])


def test_costs_give_the_equity_written_down():
    """$100,000 book, closes 100 110 99 99 99, targets long, long, short, short; volatility 2%, dollar volumes
    400k 400k 100k 1bn; $0.004 a share (min $5), 10 bps slippage, impact 1 x vol x sqrt(value / volume), cap 50%
    of the volume, borrow 25.2% a year and cash at 25.2% a year (0.1% a session), $12.50 of LLM on day 3."""
    ret, paid = _book()
    # day 1: buy $100,000 = 1000 shares: fee max(4, 5) = $5, slippage $100, impact 0.02 x sqrt(1/4) = 1% = $1000
    assert ret[0] == pytest.approx((1 - 0.01105) * 1.1 - 1, abs=1e-15)
    assert paid.loc[0, ["commission", "slippage", "impact"]].tolist() == pytest.approx([5, 100, 1000])
    assert ret[1] == pytest.approx(-0.1)  # no order, no fee: the minimum is per order
    # day 3: equity $97,906.05; the cap lets $50,000 of the $195,812.10 order through (weight 0.510694), the
    # position reaches 0.489306 long and $145,812.10 is unfilled; fee $5, slippage $50, impact 0.02 sqrt(.5) $50k
    assert paid.loc[2, "position"] == pytest.approx(1 - 50_000 / 97_906.05)
    assert paid.loc[2, ["commission", "slippage", "impact", "unfilled", "llm"]].tolist() == pytest.approx(
        [5, 50, 707.106781, 145_812.10, 12.5])
    assert paid.loc[2, "interest"] == pytest.approx(49.610797)  # 0.1% of the idle 0.510694, grown
    # day 4: the standing order fills the rest (1.489306 of weight), the short pays 0.1% borrow
    assert paid.loc[3, "position"] == -1 and paid.loc[3, "borrow"] == pytest.approx(96.99565)
    assert np.prod(1 + ret) == pytest.approx(0.9689865425070013, rel=1e-12)


def test_the_default_adds_nothing():
    """Every new setting off: the book is today's (1 - c|dw|) formula and every new column is zero."""
    closes = np.array([100.0, 110, 99, 120])
    asset = closes[1:] / closes[:-1] - 1
    w = np.array([1.0, -0.5, 0.5])
    booked = Execution().book(_column(w), np.zeros((3, 1)), _column(asset), _column(closes[:-1]), drift=False)
    held = np.array([0, 1.0, -0.5])
    assert np.array_equal(booked.ret, (1 - 1e-3 * abs(w - held)) * (1 + w * asset) - 1)  # bit for bit
    assert np.array_equal(booked.position[:, 0], w)
    assert not any(booked.paid[k].any() for k in ("slippage", "impact", "borrow", "interest", "llm", "unfilled"))


def test_an_order_at_the_open_pays_on_the_equity_at_the_open():
    """Half long into a 10% overnight gap, then all in at the open: the book is worth $105,000 there, so the order is
    0.5 x $105,000 = $52,500, 477.27 shares at $110: $4.77 at $0.01 a share, $52.50 of 10 bps slippage."""
    ex = Execution(cost_bps=0, capital=100_000, commission_per_share=0.01, slippage_bps=10)
    booked = ex.book(np.array([[1.0]]), np.array([[0.1]]), np.array([[0.0]]), np.array([[110.0]]),
                     held=np.array([0.5]), drift=False)
    assert booked.paid["commission"][0] == pytest.approx(0.01 * 52_500 / 110)
    assert booked.paid["slippage"][0] == pytest.approx(52.5)
    assert booked.ret[0] == pytest.approx(1.05 * (1 - (0.01 * 52_500 / 110 + 52.5) / 105_000) - 1)


def test_trade_is_elementwise_over_days_by_tickers():
    """H5's call: one (days x tickers) array each, the same as each element alone."""
    held, target = np.array([[0.0, 0.5], [1.0, -1.0]]), np.array([[1.0, 0.5], [-1.0, 0.2]])
    price, dollar, sigma = np.array([[10.0, 20.0], [10.0, 20.0]]), np.full((2, 2), 1e5), np.full((2, 2), 0.03)
    whole = COSTLY.trade(held, target, 1.0, price, dollar, sigma)
    for i in range(2):
        for j in range(2):
            one = COSTLY.trade(held[i, j], target[i, j], 1.0, price[i, j], dollar[i, j], sigma[i, j])
            assert [float(getattr(one, k)) for k in ("position", "commission", "slippage", "impact", "unfilled")] \
                == pytest.approx([getattr(whole, k)[i, j] for k in
                                  ("position", "commission", "slippage", "impact", "unfilled")])
    assert whole.unfilled[1, 0] == pytest.approx(1.5)  # 2 of weight wanted, $50,000 = 0.5 allowed


def test_liquidity_reads_nothing_after_the_decision():
    closes = pd.Series(np.linspace(100, 130, 40))
    volumes = pd.Series(np.full(40, 1000.0))
    sigma, dollar = Execution(lookback=5).liquidity(closes, volumes)
    later = volumes.copy()
    later.iloc[30:] = 1e9
    closes2 = closes.copy()
    closes2.iloc[30:] *= 3
    sigma2, dollar2 = Execution(lookback=5).liquidity(closes2, later)
    assert sigma.iloc[:30].equals(sigma2.iloc[:30]) and dollar.iloc[:30].equals(dollar2.iloc[:30])
    assert dollar.iloc[10] == pytest.approx((closes.iloc[6:11] * 1000).mean())


def test_dollar_volumes_are_on_one_split_basis():
    """AAPL split 4:1 on 2020-08-31: the closes before it are divided by 4 and the volumes multiplied, so the dollar
    volume the cap and the impact read does not jump at the split (unadjusted volumes made it 4x smaller before)."""
    from tr1_env.data.store import Store

    store = Store()
    dollar = (store.closes("AAPL") * store.closes("AAPL", "volume")).loc["2020-08-24":"2020-09-04"]
    assert dollar.max() / dollar.min() < 2.5


def test_backtest_charges_llm_cost_on_the_decision_day_and_needs_volumes():
    days = pd.bdate_range("2024-01-01", periods=4)
    closes = pd.Series([100.0, 100, 100, 100], index=days)
    actions = pd.Series([Action.STRONG_BUY, Action.HOLD], index=days[:2])
    ex = Execution(cost_bps=0, capital=1000, charge_llm_cost=True)
    frame = backtest(actions, closes, days, ex, llm_usd=pd.Series([1.0, 2.0], index=days[:2]))
    assert frame["return"].tolist() == pytest.approx([-0.001, -2 / 999, 0])
    assert frame["llm"].tolist() == [1.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="volume"):
        backtest(actions, closes, days, Execution(participation=0.1))


def test_realistic_preset_is_finsaber_like_and_books_dividends():
    ex = Execution(execution="realistic")
    assert (ex.cost_bps, ex.commission_per_share, ex.commission_min, ex.participation, ex.capital) == (
        0, 0.0049, 0.99, 0.10, 100_000)
    assert ex.total_return and not Execution().total_return
    assert Execution(execution="realistic", slippage_bps=2).slippage_bps == 2  # a flag set wins over the preset
    assert "$0.0049 a share" in ex.describe() and Execution().tag() == "10bps"
    from benchmarks.config import RunConfig
    assert RunConfig.of(execution="realistic").total_return() and not RunConfig.of().total_return()
    with pytest.raises(ValueError, match="participation"):
        Execution(participation=2)


def test_llm_prices():
    assert decision_cost({"model": "gpt-4.1", "prompt_tokens": 1000, "completion_tokens": 500}) == pytest.approx(
        (1000 * 2.0 + 500 * 8.0) / 1e6)
    assert decision_cost({"model": "gpt-4.1-mini", "prompt_tokens": 1000, "completion_tokens": 0,
                          "cached_prompt_tokens": 400}) == pytest.approx((600 * 0.4 + 400 * 0.1) / 1e6)
    assert model_price("gpt-4.1-nano-2025-04-14").input == 0.10  # the longest family name first
    assert decision_cost({"model": "hf:HuggingFaceTB/SmolLM2-360M-Instruct", "prompt_tokens": 9,
                          "completion_tokens": 9}) == 0
    assert np.isnan(decision_cost({"model": "some-new-model", "prompt_tokens": 9, "completion_tokens": 9}))
    assert decision_cost({}) == 0


def test_price_table_errors_name_the_row(tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_text("pattern,input_usd_per_1m,cached_input_usd_per_1m,output_usd_per_1m,as_of,source\n"
                   "x*,1,0.5,-2,2025-01-01,somewhere\n")
    with pytest.raises(ValueError, match=r"row 2 \(x\*\): output_usd_per_1m"):
        load_prices(bad)
    assert len(load_prices()) >= 5


def test_a_run_writes_the_cost_breakdown(tmp_path):
    """Default: buy-and-hold pays 10 bps of $1,000,000 once; realistic: total returns, per-share commission."""
    from benchmarks.run import RunConfig, run

    window = dict(agents=("buy_and_hold",), tickers=("NVDA",), start="2024-06-03", end="2024-06-21", bootstrap=0,
                  tearsheets=False)
    run(RunConfig.of(out=str(tmp_path / "default"), **window))
    costs = pd.read_csv(tmp_path / "default" / "costs.csv")
    assert costs[["agent", "ticker", "returns"]].values.tolist() == [["buy_and_hold", "NVDA", "price"]]
    assert costs.loc[0, "commission_usd"] == pytest.approx(1000) and costs.loc[0, "total_bps"] == pytest.approx(10)
    assert "## What the books paid (USD)" in (tmp_path / "default" / "summary.md").read_text()
    run(RunConfig.of(out=str(tmp_path / "realistic"), execution="realistic", **window))
    costs = pd.read_csv(tmp_path / "realistic" / "costs.csv")
    first = pd.read_csv(tmp_path / "realistic" / "returns" / "buy_and_hold__NVDA.csv").iloc[0]
    assert costs.loc[0, "returns"] == "total" and costs.loc[0, "commission_usd"] == pytest.approx(first["commission"])
    assert costs.loc[0, "slippage_usd"] == pytest.approx(50) and costs.loc[0, "impact_usd"] > 0
    assert "total return" in (tmp_path / "realistic" / "summary.md").read_text()


def test_llm_cost_is_reported_and_charged(api_server, tmp_path, monkeypatch):
    """The local server reports 11 prompt and 7 completion tokens a call: gpt-4.1 at $2 / $8 per 1M is $0.000078."""
    from benchmarks.run import main

    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run"
    argv = ["--agents", "buy_and_hold", "--model", "gpt-4.1", "--base-url", api_server.base_url, "--start",
            "2024-06-03", "--end", "2024-06-21", "--tickers", "NVDA", "--bootstrap", "0", "--no-tearsheets",
            "--llm-decision-every", "7", "--capital", "1", "--charge-llm-cost", "--out", str(out)]
    assert main(argv) == 0
    row = pd.read_csv(out / "costs.csv").set_index("agent").loc["gpt-4.1"]
    assert row["decisions"] == 2 and row["llm_charged"]  # 13 sessions, every 7th
    assert row["llm_usd_per_decision"] == pytest.approx(78e-6) and row["llm_usd"] == pytest.approx(2 * 78e-6)
    booked = pd.read_csv(out / "returns" / "gpt-4.1__NVDA.csv")
    assert booked["llm"].sum() == pytest.approx(2 * 78e-6)
    assert (booked.loc[booked["llm"] > 0, "date"] > booked.loc[booked["llm"] > 0, "decision_date"]).all()
