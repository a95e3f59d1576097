"""The replay's accounting: timing, costs, holding between decisions, dividends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tr1_env.core.actions import Action
from tr1_env.evaluation.backtest import asset_returns, backtest, buy_and_hold, decision_days, holding_returns
from tr1_env.execution import Execution

DAYS = pd.bdate_range("2024-06-03", periods=6)
CLOSES = pd.Series([100.0, 110.0, 99.0, 99.0, 108.9, 100.0], index=DAYS)


@pytest.mark.parametrize("ticker", ["NVDA", "AAPL", "MSFT", "AMZN", "META", "SPY"])
@pytest.mark.parametrize("cost_bps", [0.0, 10.0])
def test_buy_and_hold_is_the_close_to_close_change(store, ticker, cost_bps):
    """Decision at d_1's close, returns d_1->d_2 ... d_{n-1}->d_n: CR = (1 - c) P(d_n) / P(d_1) - 1, n - 1 days."""
    days = store.trading_days(ticker, "2024-06-01", "2024-08-31")
    closes = store.closes(ticker)
    frame = buy_and_hold(closes, days, Execution(cost_bps=cost_bps))
    expected = (1 - cost_bps / 1e4) * closes[days[-1]] / closes[days[0]] - 1
    assert frame["equity"].iloc[-1] - 1 == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert len(frame) == len(days) - 1 and frame.index[0] == days[1] and frame.index[-1] == days[-1]
    assert frame["cost"].sum() == pytest.approx(cost_bps / 1e4)


def test_costs_are_charged_on_weight_changes():
    actions = pd.Series([Action.STRONG_BUY, Action.STRONG_SELL, Action.STRONG_SELL, Action.HOLD, Action.BUY],
                        index=DAYS[:-1])
    frame = backtest(actions, CLOSES, DAYS, Execution(cost_bps=100))
    c = 0.01
    expected_cost = [c * 1, c * 2, 0, c * 1, c * 0.5]
    np.testing.assert_allclose(frame["cost"], expected_cost)
    asset = CLOSES.pct_change().dropna().to_numpy()
    w = np.array([1, -1, -1, 0, 0.5])
    np.testing.assert_allclose(frame["return"], (1 - np.array(expected_cost)) * (1 + w * asset) - 1)
    np.testing.assert_allclose(frame["equity"], np.cumprod(1 + frame["return"]))


def test_decisions_every_k_days_hold_in_between():
    days = decision_days(DAYS, every=2)
    assert list(days) == [DAYS[0], DAYS[2], DAYS[4]]  # never the last session
    frame = backtest(pd.Series([Action.STRONG_BUY, Action.SELL, Action.HOLD], index=days), CLOSES, DAYS,
                     Execution(cost_bps=0))
    assert list(frame["position"]) == [1, 1, -0.5, -0.5, 0]
    assert list(frame["decision_date"]) == [DAYS[0], DAYS[0], DAYS[2], DAYS[2], DAYS[4]]
    held = holding_returns(frame)
    np.testing.assert_allclose(held["forward_return"], [99 / 100 - 1, 108.9 / 99 - 1, 100 / 108.9 - 1])
    assert list(held["action"]) == ["STRONG_BUY", "SELL", "HOLD"]


def test_total_return_adds_dividends_at_the_ex_date():
    dividends = pd.Series([2.2, 5.0], index=pd.DatetimeIndex([DAYS[1], DAYS[0]]))  # the d_1 one is before any period
    total = asset_returns(CLOSES, DAYS, dividends)
    price = asset_returns(CLOSES, DAYS)
    assert total[DAYS[1]] == pytest.approx((110 + 2.2) / 100 - 1)
    np.testing.assert_allclose(total.drop(DAYS[1]), price.drop(DAYS[1]))
    weekend = pd.Series([1.0], index=pd.DatetimeIndex([pd.Timestamp("2024-06-08")]))  # credited on Monday
    assert asset_returns(CLOSES, DAYS, weekend)[DAYS[5]] == pytest.approx(101 / 108.9 - 1)


def test_rejects_a_replay_that_does_not_start_on_the_first_session():
    with pytest.raises(ValueError, match="first decision"):
        backtest(pd.Series([Action.BUY], index=DAYS[1:2]), CLOSES, DAYS)
    with pytest.raises(ValueError, match="off the replay"):
        backtest(pd.Series([Action.BUY, Action.BUY], index=[DAYS[0], DAYS[-1]]), CLOSES, DAYS)
    with pytest.raises(ValueError, match="two decisions on 2024-06-04"):
        backtest(pd.Series([Action.BUY, Action.BUY, Action.SELL], index=[DAYS[0], DAYS[1], DAYS[1]]), CLOSES, DAYS)


def test_custom_weights():
    weights = {a: w for a, w in zip(Action, (-2, -1, 0, 1, 2))}
    frame = backtest(pd.Series([Action.STRONG_SELL], index=DAYS[:1]), CLOSES, DAYS, Execution(cost_bps=0), weights)
    assert frame["return"].iloc[0] == pytest.approx(-2 * 0.1)


def test_total_return_on_the_store_uses_the_closes_split_basis(store):
    """AAPL went ex $0.25 on 2024-08-12; NVDA's first post-split dividend ($0.01) on 2024-06-11."""
    for ticker, ex_date, amount in [("AAPL", "2024-08-12", 0.25), ("NVDA", "2024-06-11", 0.01)]:
        days, closes = store.trading_days(ticker, "2024-06-01", "2024-08-31"), store.closes(ticker)
        gap = asset_returns(closes, days, store.dividends(ticker)) - asset_returns(closes, days)
        prev = closes[days[days.get_loc(pd.Timestamp(ex_date)) - 1]]
        assert gap[ex_date] == pytest.approx(amount / prev) and (gap.drop(pd.Timestamp(ex_date)) == 0).all()


def test_trading_reward_by_hand():
    """FLAG-TRADER's daily reward: position x log return, minus the cost of the change of position."""
    from tr1_env.execution.execution import trading_reward

    assert trading_reward(1.0, 0.01, previous_position=-1.0, cost_bps=10.0) == pytest.approx(0.01 - 0.002)
    assert trading_reward(-0.5, 0.02) == pytest.approx(-0.01)  # from flat, no cost
    np.testing.assert_allclose(trading_reward(np.array([1.0, 1.0, 0.0]), np.array([0.1, -0.1, 0.3]),
                                              np.array([0.0, 1.0, 1.0]), 100.0), [0.09, -0.1, -0.01])
    assert "25 bps" in Execution(cost_bps=25.0).describe()


OPENS = pd.Series([99.0, 105.0, 100.0, 98.0, 110.0, 101.0], index=DAYS)


def test_next_open_fill_trades_at_the_following_open():
    """Buy-and-hold filled at d_2's open compounds to (1 - c) P(d_n) / O(d_2); a flip pays the gap at the old weight."""
    bh = buy_and_hold(CLOSES, DAYS, Execution("next-open", 100), opens=OPENS)
    assert bh["equity"].iloc[-1] == pytest.approx(0.99 * 100 / 105)
    assert bh["return"].iloc[0] == pytest.approx(0.99 * 110 / 105 - 1)  # no position overnight, in at the open
    # long from d_2's open, then STRONG_SELL decided at d_2's close, filled at d_3's open (100):
    # day 3 = long overnight 110 -> 100, pay 2 % for the flip, short 100 -> 99
    frame = backtest(pd.Series([Action.STRONG_BUY, Action.STRONG_SELL], index=DAYS[:2]), CLOSES, DAYS,
                     Execution("next-open", 100), opens=OPENS)
    assert frame["return"].iloc[1] == pytest.approx((100 / 110) * 0.98 * (1 - (99 / 100 - 1)) - 1)
    close_fill = backtest(pd.Series([Action.STRONG_BUY], index=DAYS[:1]), CLOSES, DAYS, Execution(cost_bps=100))
    assert close_fill["equity"].iloc[-1] == pytest.approx(0.99 * 100 / 100)  # the optimistic close fill differs
    with pytest.raises(ValueError, match="fill must be one of"):
        Execution(fill="vwap")
    with pytest.raises(ValueError, match="needs the opens"):
        backtest(pd.Series([Action.HOLD], index=DAYS[:1]), CLOSES, DAYS, Execution("next-open"))


def _chained(store, ticker, actions, execution, windows, **market):
    """One continuous book over consecutive windows: each window's book continues the one before."""
    closes, frames, previous = store.closes(ticker), [], None
    for start, end in windows:
        days = store.trading_days(ticker, start, end)
        previous = backtest(actions[(actions.index >= days[0]) & (actions.index < days[-1])], closes, days,
                            execution, previous=previous, **market)
        frames.append(previous)
    return pd.concat(frames)


QUARTERS = [(str(p.start_time.date()), str(p.end_time.date())) for p in pd.period_range("2023Q3", "2025Q2", freq="Q")]


@pytest.mark.parametrize("execution", [Execution(cost_bps=10.0), Execution("next-open", 25.0)])
def test_buy_and_hold_over_quarterly_windows_is_buy_and_hold_over_the_span(store, execution):
    """Eight continuous quarterly books of buy-and-hold compound to the one book over the two years: no boundary
    session is lost (a flat start would drop the first session of each quarter) and no cost is paid twice."""
    closes, opens, dividends = store.closes("XOM"), store.closes("XOM", "open"), store.dividends("XOM")
    days = store.trading_days("XOM", QUARTERS[0][0], QUARTERS[-1][1])
    whole = buy_and_hold(closes, days, execution, dividends, opens)
    frames, previous = [], None
    for start, end in QUARTERS:
        previous = buy_and_hold(closes, store.trading_days("XOM", start, end), execution, dividends, opens,
                                previous=previous)
        frames.append(previous)
    chained = pd.concat(frames)
    assert list(chained.index) == list(whole.index)
    assert abs(np.prod(1 + chained["return"]) - whole["equity"].iloc[-1]) < 1e-12
    np.testing.assert_allclose(chained["return"], whole["return"], rtol=0, atol=1e-15)
    assert chained["cost"].sum() == pytest.approx(execution.cost_bps / 1e4)


@pytest.mark.parametrize("execution", [Execution(cost_bps=10.0), Execution("next-open", 25.0),
                                       Execution(cost_bps=0.0, commission_per_share=0.0049, commission_min=0.99,
                                                 borrow_bps=50.0, capital=100_000.0)])  # equity-dependent fees
def test_a_continuous_book_equals_the_single_window_book_when_the_decisions_are_the_same(store, execution):
    """Any decisions, cut at quarter boundaries: the chained books are the one book (returns, costs, positions,
    the decision each session's position comes from, so hit rates count each holding period once). A window takes
    no decision at its last close, so the single book's decision there repeats the one before."""
    days = store.trading_days("NVDA", QUARTERS[0][0], QUARTERS[3][1])
    rng = np.random.default_rng(7)
    actions = pd.Series(rng.choice(list(Action), size=len(days) - 1), index=days[:-1])
    for (_, end), carried in zip(QUARTERS[:3], [Action.STRONG_BUY, Action.SELL, Action.BUY]):
        last = store.trading_days("NVDA", end=end)[-2:]  # a quarter's last two sessions: none is carried flat
        actions = actions.drop(last[-1])
        actions[last[0]] = carried
    opens = store.closes("NVDA", "open")
    whole = backtest(actions, store.closes("NVDA"), days, execution, opens=opens)
    chained = _chained(store, "NVDA", actions, execution, QUARTERS[:4], opens=opens)
    pd.testing.assert_frame_equal(chained, whole, rtol=1e-12, atol=1e-9)  # USD columns in dollars of a $1M book
    pd.testing.assert_frame_equal(holding_returns(chained), holding_returns(whole))


def test_a_continuous_book_must_start_on_the_session_after_the_previous_one(store):
    closes = store.closes("SPY")
    first = buy_and_hold(closes, store.trading_days("SPY", "2024-01-01", "2024-03-31"))
    with pytest.raises(ValueError, match="previous book to end on the session before 2024-05-01"):
        buy_and_hold(closes, store.trading_days("SPY", "2024-05-01", "2024-06-30"), previous=first)
