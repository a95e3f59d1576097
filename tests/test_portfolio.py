"""The portfolio track: universe membership, the Portfolio env, its books and the portfolio baselines."""

import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import tr1_env  # noqa: F401 - registers the ids
from tr1_env.data.clock import decision_time
from tr1_env.data.store import Store
from tr1_env.data.universe import load_universe, membership, universe
from tr1_env.envs.portfolio_env import PortfolioEnv, weights_from_action
from tr1_env.evaluation.portfolio import Legs, portfolio_book
from tr1_env.execution import Execution

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning",
                                        "ignore:The inplace keyword:FutureWarning")


def synthetic_store(closes: dict[str, list[float]], start: str = "2024-01-02", late: dict[str, int] | None = None
                    ) -> Store:
    """Tickers with the given closes (opens equal to them) on business days from ``start``; ``late[t] = k`` drops
    ``t``'s first ``k`` sessions (it lists later)."""
    frames = []
    for t, c in closes.items():
        days = pd.bdate_range(start, periods=len(c))
        c = np.asarray(c, float)
        frame = pd.DataFrame({"ticker": t, "date": days, "open": c, "high": c, "low": c, "close": c,
                              "volume": 1_000_000, "available_at": [decision_time(d) for d in days]})
        frames.append(frame.iloc[(late or {}).get(t, 0):])
    return Store(tables={"prices": pd.concat(frames, ignore_index=True)})


TWO = {"A": [100.0, 110.0, 121.0], "B": [50.0, 50.0, 40.0]}


def run_env(env, actions) -> dict:
    env.reset(seed=0)
    info = {}
    for a in actions:
        _, _, _, _, info = env.step(a)
    return info


def test_two_tickers_hand_computed_equity():
    """10 bps; 1/2 each rebalanced: day 1 pays 10 bps on a turnover of 1 and earns 0.5 x 10% + 0.5 x 0%; the
    weights drift to 0.55/1.05 and 0.5/1.05, so day 2 pays 10 bps on 2 x 0.025/1.05 and earns 0.5 x 10% - 0.5 x 20%.
    Bought and held instead, the book is (1 - 10 bps) x the mean of the price relatives, 0.999 x (1.21 + 0.8) / 2."""
    store = synthetic_store(TWO)
    env = PortfolioEnv(store, ("A", "B"), "2024-01-01", "2024-01-31", execution=Execution(cost_bps=10))
    rebalanced = 0.999 * 1.05 * (1 - 1e-3 * 0.05 / 1.05) * 0.95
    info = run_env(env, [[0.5, 0.5, 0.0]] * 2)
    assert info["equity"] == pytest.approx(rebalanced, rel=1e-12)
    assert info["turnover"] == pytest.approx(0.05 / 1.05)
    held = run_env(env, [[0.5, 0.5, 0.0], [0.55 / 1.05, 0.5 / 1.05, 0.0]])
    assert held["equity"] == pytest.approx(0.999 * (1.21 + 0.8) / 2, rel=1e-12) and held["cost"] == pytest.approx(0)
    # the replay's book of the same weights gives the same equity
    legs = Legs(pd.DataFrame(TWO, index=env.days), pd.DataFrame(TWO, index=env.days), Execution(cost_bps=10))
    book = portfolio_book(np.array([[0.5, 0.5], [0.5, 0.5]]), legs, Execution(cost_bps=10))
    assert book["equity"].iloc[-1] == pytest.approx(rebalanced, rel=1e-12)
    assert book["turnover"].tolist() == pytest.approx([1.0, 0.05 / 1.05])


REALISTIC_BY_HAND = Execution(cost_bps=0, capital=100_000, commission_per_share=0.01, commission_min=5,
                              slippage_bps=10, impact_coef=0.5, participation=0.1, borrow_bps=2520)


def test_two_tickers_realistic_execution_by_hand():
    """$100,000; A closes 100 110 121, B 50 50 40; targets A +0.6 B -0.4, then A +0.5 B -0.5; daily volatility 2%,
    dollar volume $200,000 (A) and $1,000,000 (B); $0.01 a share (at least $5 an order), 10 bps slippage, impact
    0.5 x 2% x sqrt(value / dollar volume) of the value, orders capped at 10% of the dollar volume, borrow 10 bps a
    session (2520 bps a year) on the short.

    Session 1: A may trade $20,000 of its $60,000 (200 shares: fee $5; slippage $20; impact 0.01 sqrt(0.1) $20,000
    = $63.2455532; $40,000 unfilled), B sells $40,000 (800 shares: fee $8; slippage $40; impact 0.01 x 0.2 x
    $40,000 = $80): c = $216.2455532 / $100,000; A 0.2, B -0.4 earn 1 + 0.2 x 10% = 1.02; borrow 0.001 x 0.4:
    growth (1 - 0.002162455532) x 1.02 x 0.9996 = 1.017387177639, equity $101,738.717764.
    Session 2: the weights drifted to A 0.22/1.02 = 0.215686, B -0.4/1.02 = -0.392157; A's order again stops at
    $20,000 (fee $5, the minimum on 181.8 shares; slippage $20; impact $63.2455532; reaches 0.215686 + 20,000 /
    101,738.717764 = 0.412268, $8,925.713874 unfilled); B sells 0.107843 x equity = $10,971.822504 (219.4 shares:
    fee $5; slippage $10.971823; impact 0.01 sqrt(0.010971823) $10,971.822504 = $11.492597): c = $135.710020 /
    $101,738.717764; the day earns 1 + 0.412268 x 10% + 0.5 x 20% = 1.1412268; borrow 0.001 x 0.5: growth
    1.139358916772, equity $115,916.915265."""
    days = pd.bdate_range("2024-01-02", periods=3)
    closes = pd.DataFrame(TWO, index=days)
    liquidity = (pd.DataFrame(0.02, index=days, columns=["A", "B"]),
                 pd.DataFrame({"A": 200_000.0, "B": 1_000_000.0}, index=days))
    legs = Legs(closes, closes, REALISTIC_BY_HAND, liquidity=liquidity)
    book = portfolio_book(np.array([[0.6, -0.4], [0.5, -0.5]]), legs, REALISTIC_BY_HAND)
    assert book["equity"].tolist() == pytest.approx([1.017387177639183, 1.017387177639183 * 1.1393589167723253],
                                                    rel=1e-12)
    assert 100_000 * book["equity"].iloc[-1] == pytest.approx(115_916.915265, abs=1e-6)
    assert book["commission"].tolist() == pytest.approx([13, 10]) and book["slippage"].tolist() == pytest.approx(
        [60, 30.971822504])
    assert book["impact"].tolist() == pytest.approx([143.2455532, 74.738149723])
    assert book["unfilled"].tolist() == pytest.approx([40_000, 8_925.713874], abs=1e-6)
    assert book["borrow"].tolist() == pytest.approx([0.0004 * 1.02 * (1 - 0.002162455532) * 100_000,
                                                     0.0005 * 1.1412268 * (1 - 0.00113732485) * 101_738.717764])
    assert book["w_A"].iloc[0] == pytest.approx(0.22 / 1.02) and book["turnover"].iloc[0] == pytest.approx(0.6)


def test_env_equity_equals_the_replay_book(store):
    """Real prices, next-open fills, random weights: the env's equity path is the replay book's."""
    execution = Execution("next-open", cost_bps=7)
    env = PortfolioEnv(store, ("AAPL", "XOM", "NVDA"), "2024-03-01", "2024-05-31", execution=execution)
    rng = np.random.default_rng(1)
    actions = rng.dirichlet(np.ones(4), env.n_steps)
    env.reset(seed=0)
    equity = [env.step(a)[4]["equity"] for a in actions]
    book = portfolio_book(actions[:, :3], env.legs, execution)
    np.testing.assert_allclose(book["equity"].to_numpy(), equity, rtol=1e-12)


def test_weights_from_action():
    held = np.array([True, True, False])
    w = np.array([0.2, 0.3, 0.0, 0.5])
    np.testing.assert_allclose(weights_from_action(w, held), w[:3])  # the simplex maps to itself
    np.testing.assert_allclose(weights_from_action([1, 1, 1, 0], held), [0.5, 0.5, 0.0])  # never a non-member
    np.testing.assert_allclose(weights_from_action([-1, -1, -1, -1], held), [0, 0, 0])  # all cash
    ls = weights_from_action([1.0, -1.0, 0.5], np.ones(3, bool), "long_short", gross=1.5)
    assert np.abs(ls).sum() == pytest.approx(1.5) and ls[0] == -ls[1] and ls[0] > 0
    np.testing.assert_allclose(weights_from_action([0.2, -0.1, 0.0], np.ones(3, bool), "long_short", 2.0),
                               [0.4, -0.2, 0.0])


def test_a_ticker_is_never_held_before_it_lists(tmp_path):
    """C lists on the store's 4th session: no weight before; a universe file ending A early drops it after."""
    closes = {t: list(100 + np.arange(30.0) * (i + 1)) for i, t in enumerate("ABC")}
    store = synthetic_store(closes, late={"C": 3})
    env = PortfolioEnv(store, ("A", "B", "C"), "2024-01-01", "2024-03-29")
    info = run_env(env, [[1, 1, 1, 0]] * 3)
    assert info["weights"][2] == 0 and env.held[:3, 2].tolist() == [False] * 3 and env.held[3, 2]
    assert run_env(env, [[1, 1, 1, 0]] * 4)["weights"][2] > 0
    (tmp_path / "u.csv").write_text("ticker,from,to\nA,2024-01-01,2024-01-05\nb,2024-01-01,\nC,2023-01-01,\n")
    spans = universe(store, file=load_universe(tmp_path / "u.csv"))
    assert spans["from"].tolist() == [pd.Timestamp(d) for d in ("2024-01-02", "2024-01-02", "2024-01-05")]
    days = store.trading_days("A")
    held = membership(spans, ("A", "B", "C"), days)
    assert held[:3, 0].all() and not held[3:, 0].any()  # A leaves on Jan 5 (index 3): not held into Jan 8
    assert held[:-1, 1].all() and not held[-1].any()


@pytest.mark.parametrize(("text", "message"), [
    ("ticker,from\nA,2024-01-01\n", "missing column"),
    ("ticker,from,to\nA,soon,\n", "line 2: field 'from' is no date"),
    ("ticker,from,to\nA,2024-01-01,2023-01-01\n", "line 2: 'to'"),
    ("ticker,from,to\n,2024-01-01,\n", "line 2: field 'ticker' is empty"),
])
def test_bad_universe_file_names_the_line(tmp_path, text, message):
    (tmp_path / "u.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_universe(tmp_path / "u.csv")


def test_unknown_universe_ticker(store):
    with pytest.raises(ValueError, match="ZZZ not in the store"):
        universe(store, ("AAPL", "ZZZ"))


@pytest.fixture(scope="module")
def store():
    return Store()


@pytest.mark.parametrize("mode", ["long_only", "long_short"])
def test_portfolio_env_checkers(store, mode):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("tr1/Portfolio-v0", store=store, tickers=("AAPL", "MSFT"), start="2024-01-01", end="2024-03-29",
                   mode=mode, gross=1.5).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="The inplace keyword")
        check_env(env, skip_render_check=True)
        sb3_check_env(env)


def test_sb3_ppo_trains_on_the_portfolio_env():
    """A steady riser and a steady faller: a few hundred PPO steps put more weight on the riser than on the
    faller."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    n = 260
    store = synthetic_store({"UP": list(100 * 1.004 ** np.arange(n)), "DOWN": list(100 * 0.996 ** np.arange(n))})
    env = PortfolioEnv(store, ("UP", "DOWN"), "2024-01-01", "2024-12-31")
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=5, seed=0, device="cpu", learning_rate=1e-3)
    model.set_logger(Logger(None, []))  # not an SB3-<time> folder in the temp dir per test
    model.learn(768)
    obs, _ = env.reset(seed=0)
    w = env.weights_from_action(model.predict(obs, deterministic=True)[0])
    assert w[0] > w[1]


# -------------------------------------------------------------------------------------------------- baselines, replay

PORTFOLIO_TICKERS = ("AAPL", "NVDA", "XOM", "JPM")


@pytest.fixture(scope="module")
def cfg():
    from benchmarks.config import RunConfig

    return RunConfig.of(portfolio=True, tickers=PORTFOLIO_TICKERS, start="2024-04-01", end="2024-06-28",
                        bootstrap=100)


@pytest.fixture(scope="module")
def uni(store, cfg):
    from benchmarks.portfolio import Universe

    return Universe(store, cfg)


@pytest.mark.parametrize("day", ["2024-04-01", "2024-05-15", "2024-06-27"])  # NVDA splits 10:1 on 2024-06-10
def test_weights_use_only_the_history_up_to_the_decision_day(store, cfg, uni, day):
    """Every baseline's weights in the replay equal those from a store cut at the decision day's close."""
    from baselines.portfolio import PORTFOLIO_BASELINES
    from benchmarks.portfolio import Universe, decide

    days = uni.closes.loc["2024-04-01":"2024-06-28"].index
    held = uni.held(days)
    cut = Universe(store.cut(day), cfg)
    i = days.get_loc(pd.Timestamp(day))
    for name, policy in PORTFOLIO_BASELINES.items():
        replayed = decide(policy, uni.closes.loc[:"2024-06-28"], held, days)[i]
        alone = policy(cut.closes, held[i], days[0])
        np.testing.assert_allclose(replayed, alone, rtol=1e-9, atol=1e-12, err_msg=name)
        assert replayed.sum() == pytest.approx(1.0) or name == "momentum_top3" and replayed.sum() == 0 or (
            name == "buy_and_hold" and np.isnan(replayed).all() and day > "2024-04-01")  # no order after the buy


def test_replay_books_equal_the_env_and_hand_numbers(store, cfg, uni):
    """The replay's equal-weight book is the Portfolio env's for the same weights; 1/N bought and held pays 10 bps
    once and ends at the mean price relative; the index ETF (not a member) ends at SPY's."""
    from baselines.portfolio import PORTFOLIO_BASELINES
    from benchmarks.portfolio import PolicyBook, replay_portfolio
    from tr1_env.evaluation.windows import windows

    window = windows("single", "2024-04-01", "2024-06-28")[0]
    books, failed = replay_portfolio([window], uni, [PolicyBook(n, PORTFOLIO_BASELINES[n], uni.closes) for n in
                                                     ("equal_weight", "buy_and_hold", "index_etf")], cfg)[window]
    assert not failed
    env = PortfolioEnv(store, PORTFOLIO_TICKERS, "2024-04-01", "2024-06-28")
    info = run_env(env, [[*[0.25] * 4, 0.0]] * env.n_steps)
    assert books["equal_weight"]["equity"].iloc[-1] == pytest.approx(info["equity"], rel=1e-12)
    closes = pd.DataFrame({t: store.closes(t) for t in (*PORTFOLIO_TICKERS, "SPY")}).loc["2024-04-01":"2024-06-28"]
    relative = closes.iloc[-1] / closes.iloc[0]
    assert books["buy_and_hold"]["equity"].iloc[-1] == pytest.approx(0.999 * relative[:4].mean(), rel=1e-12)
    assert books["buy_and_hold"]["turnover"].iloc[1:].max() == pytest.approx(0, abs=1e-12)
    assert books["index_etf"]["equity"].iloc[-1] == pytest.approx(0.999 * relative["SPY"], rel=1e-12)


@pytest.mark.parametrize("settings", [dict(execution="realistic"),
                                      dict(execution="realistic", fill="next-open", capital=5e10, cash_rate=0.04)])
def test_the_env_equals_the_replay_under_realistic_execution(store, settings):
    """Every realistic cost, dividends and (on $50bn) the volume cap: the env stepping 1/4 each books the replay's
    equal-weight book, session by session."""
    from baselines.portfolio import PORTFOLIO_BASELINES
    from benchmarks.config import RunConfig
    from benchmarks.portfolio import PolicyBook, Universe, replay_portfolio
    from tr1_env.evaluation.windows import windows

    cfg = RunConfig.of(portfolio=True, tickers=PORTFOLIO_TICKERS, start="2024-04-01", end="2024-06-28", **settings)
    window, uni = windows("single", "2024-04-01", "2024-06-28")[0], Universe(store, cfg)
    book = replay_portfolio([window], uni, [PolicyBook("equal_weight", PORTFOLIO_BASELINES["equal_weight"],
                                                       uni.closes)], cfg)[window][0]["equal_weight"]
    env = PortfolioEnv(store, PORTFOLIO_TICKERS, "2024-04-01", "2024-06-28", execution=cfg.execution)
    env.reset(seed=0)
    equity = [env.step([*[0.25] * 4, 0.0])[4]["equity"] for _ in range(env.n_steps)]
    np.testing.assert_allclose(book["equity"].to_numpy(), equity, rtol=1e-12)
    assert book["commission"].gt(0).all() and book["impact"].gt(0).all()
    assert book["unfilled"].gt(0).any() == (cfg.execution.capital > 1e9)


@pytest.mark.parametrize("execution", ["default", "realistic"])
def test_walk_forward_books_are_continuous(store, execution):
    """1/N bought and held over 8 quarterly windows is 1/N bought and held over the two years (the weights at each
    window's last close earn the next window's first session, at the equity reached; the new window trades from
    them), and its only trade is the first purchase."""
    from baselines.portfolio import PORTFOLIO_BASELINES
    from benchmarks.config import RunConfig
    from benchmarks.portfolio import PolicyBook, Universe, replay_portfolio
    from tr1_env.evaluation.windows import windows

    cfg = RunConfig.of(portfolio=True, tickers=PORTFOLIO_TICKERS, start="2023-07-01", end="2025-06-30",
                       execution=execution)
    uni = Universe(store, cfg)
    books = [PolicyBook("buy_and_hold", PORTFOLIO_BASELINES["buy_and_hold"], uni.closes)]
    quarters = windows("quarterly", "2023-07-01", "2025-06-30")
    chained = pd.concat([b["buy_and_hold"] for b, _ in replay_portfolio(quarters, uni, books, cfg).values()])
    whole = replay_portfolio(windows("single", "2023-07-01", "2025-06-30"), uni, books, cfg)
    whole = next(iter(whole.values()))[0]["buy_and_hold"]
    assert len(quarters) == 8 and chained.index.equals(whole.index)
    np.testing.assert_allclose(chained["equity"], whole["equity"], rtol=1e-12)
    assert chained["turnover"].iloc[0] == pytest.approx(1) and chained["turnover"].iloc[1:].max() < 1e-12
    assert chained["commission"].iloc[1:].max() == 0 and chained["decision_date"].isna().sum() == 7


def test_run_portfolio_cli(tmp_path, monkeypatch):
    from benchmarks.run import main

    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["--portfolio", "--tickers", "AAPL", "XOM", "--start", "2024-04-01", "--end", "2024-06-28",
            "--walk-forward", "monthly", "--bootstrap", "100", "--sb3-steps", "64", "--out", str(out)]
    assert main(argv) == 0
    board = pd.read_csv(out / "leaderboard_portfolio.csv")
    assert set(board["agent"]) == {"buy_and_hold", "equal_weight", "index_etf", "momentum_top3", "inverse_vol", "hrp",
                                   "ppo", "a2c"}  # the default roster: the baselines and SB3
    assert board["n_windows"].eq(3).all() and board["turnover"].notna().all() and "verdict" in board
    md = (out / "leaderboard_portfolio.md").read_text()
    assert "turnover / yr" in md and "accuracy" not in md  # two tickers: no IC either (it needs 5 a day)
    assert "Active-weight IC tests the weights" in md and "IC, accuracy and hit rate" not in md  # the family note
    assert "<table" in (out / "leaderboard_portfolio.html").read_text()
    (tmp_path / "u.csv").write_text("ticker,from,to\nAAPL,2024-13-01,\n")
    assert main([*argv, "--universe", str(tmp_path / "u.csv"), "--out", str(tmp_path / "r2")]) == 2
    assert main([*argv, "--agents", "random", "--out", str(tmp_path / "r3")]) == 2
    assert main([*argv, "--agent", "examples.custom_agent:MomentumAgent", "--out", str(tmp_path / "r3")]) == 2
    # every execution setting is booked: realistic execution, its cost table per agent
    assert main([*argv, "--agents", "equal_weight", "--execution", "realistic", "--out", str(tmp_path / "r4")]) == 0
    costs = pd.read_csv(tmp_path / "r4" / "costs.csv").set_index("agent")
    assert set(costs.index) == {"buy_and_hold", "equal_weight"} and costs["returns"].eq("total").all()
    assert (costs.loc["equal_weight", "commission_usd"] > costs.loc["buy_and_hold", "commission_usd"] > 0)
    assert costs.loc["buy_and_hold", "decisions"] == costs.loc["equal_weight", "decisions"] > 0
    book = pd.read_csv(tmp_path / "r4" / "portfolio" / "equal_weight.csv")
    assert costs.loc["equal_weight", "slippage_usd"] == pytest.approx(book["slippage"].sum())
    assert "## What the books paid (USD)" in (tmp_path / "r4" / "leaderboard_portfolio.md").read_text()


# -------------------------------------------------------------------------------------------------- LLM allocations


def test_parse_allocation_is_strict():
    from tr1_env.core.allocation import AllocationError, parse_allocation

    tickers = ("AAPL", "MSFT")
    text = 'Thinking {"AAPL": 0.9}... final:\n{"AAPL": 0.25, "MSFT": 0.5, "CASH": 0.25}'
    np.testing.assert_allclose(parse_allocation(text, tickers), [0.25, 0.5])
    np.testing.assert_allclose(parse_allocation('{"MSFT": 0.4, "CASH": 0.6}', tickers), [0.0, 0.4])
    for bad, why in [("all cash please", "no JSON object"), ('{"AAPL": 0.5, CASH: 0.5}', "does not parse"),
                     ('{"AAPL": 0.5, "TSLA": 0.5, "CASH": 0}', "unknown key"), ('{"AAPL": 1.0}', "no CASH"),
                     ('{"AAPL": "half", "CASH": 0.5}', "no finite number"),
                     ('{"AAPL": -0.5, "MSFT": 1, "CASH": 0.5}', "negative weight"),
                     ('{"AAPL": 0.5, "MSFT": 0.4, "CASH": 0.2}', "sum to 1.1")]:
        with pytest.raises(AllocationError, match=why):
            parse_allocation(bad, tickers)
    np.testing.assert_allclose(parse_allocation('{"AAPL": -0.5, "MSFT": 1, "CASH": 0.5}', tickers, long_only=False),
                               [-0.5, 1.0])


def test_decisions_to_weights_rule():
    from tr1_env.core.actions import Action
    from tr1_env.core.allocation import decisions_to_weights

    calls = {"A": Action.STRONG_BUY, "B": Action.BUY, "C": Action.SELL, "D": Action.HOLD}
    np.testing.assert_allclose(decisions_to_weights(calls, ("A", "B", "C", "D", "E")), [0.25, 0.125, 0, 0, 0])
    np.testing.assert_allclose(decisions_to_weights(calls, ("A", "C"), long_only=False), [0.25, -0.125])


# -------------------------------------------------------------------------------------------------- text mode, LLMs

FIVE = ("AAPL", "MSFT", "NVDA", "XOM", "JPM")


def test_text_mode_passes_check_env_and_reads_allocations(store):
    from gymnasium.utils.env_checker import check_env

    from tr1_env.core.allocation import AllocationError

    env = gym.make("tr1/Portfolio-v0", store=store, tickers=("AAPL", "MSFT", "NVDA"), start="2024-01-01",
                   end="2024-02-29", obs_mode="text").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="The inplace keyword")
        check_env(env, skip_render_check=True)
    prompt, _ = env.reset(seed=0)
    assert env.observation_space.contains(prompt) and "| MSFT | 0.000 |" in prompt
    assert "Cash weight now: 1.000" in prompt
    action = env.parse_action('reasoning... {"AAPL": 0.5, "NVDA": 0.25, "CASH": 0.25}')
    np.testing.assert_allclose(env.weights_from_action(action), [0.5, 0.0, 0.25])
    prompt, *_ = env.step(action)
    assert "| AAPL | 0.5" in prompt and "| NVDA | 0.2" in prompt  # the weights drifted from the targets
    for bad in ('{"AAPL": 0.5, "CASH": 0.6}', '{"TSLA": 0.5, "CASH": 0.5}', "buy everything"):
        with pytest.raises(AllocationError):
            env.parse_action(bad)

    anon = PortfolioEnv(store, ("AAPL", "MSFT", "NVDA"), "2024-01-01", "2024-02-29", obs_mode="text",
                        anonymize="strict")
    prompt, info = anon.reset(seed=3)
    names = info["pseudonyms"]
    assert not any(t in prompt for t in ("AAPL", "MSFT", "NVDA", "Apple", "2024-")) and names["AAPL"] in prompt
    with pytest.raises(AllocationError, match="unknown key"):
        anon.parse_action('{"AAPL": 1.0, "CASH": 0}')  # the real name is not one the model was shown
    np.testing.assert_allclose(anon.parse_action(f'{{"{names["MSFT"]}": 1.0, "CASH": 0}}'), [0, 1, 0, 0])


def _llm_argv(base_url: str, out, *extra: str) -> list[str]:
    return ["--portfolio", "--agents", "buy_and_hold", "--model", "gpt-4.1", "--base-url", base_url, "--tickers",
            *FIVE, "--start", "2024-04-01", "--end", "2024-05-31", "--walk-forward", "monthly",
            "--llm-decision-every", "10", "--bootstrap", "100", "--request-timeout", "2", "--max-retries", "0",
            "--out", str(out), *extra]


def _decision_days(store) -> list[pd.Timestamp]:
    from tr1_env.evaluation.backtest import decision_days

    return [d for m in ("04", "05") for d in decision_days(store.trading_days("AAPL", f"2024-{m}-01",
                                                                                 f"2024-{m}-{30 if m == '04' else 31}"),
                                                         10)]


@pytest.fixture
def llm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path / "cache" / "llm_calls.sqlite"


@pytest.mark.slow
def test_llm_allocation_books_the_json_weights_and_resumes(store, api_server, llm_cache, tmp_path, capsys):
    """Each decision day's allocation is the book's target; between decision days it drifts untraded; the prompt is
    the Portfolio env's text observation; a rerun asks nothing again, from the run folder or the call cache."""
    import json

    from benchmarks.run import main

    api_server.reply = 'I like AAPL.\n{"AAPL": 0.5, "XOM": 0.3, "CASH": 0.2}'
    out = tmp_path / "run"
    assert main(_llm_argv(api_server.base_url, out)) == 0
    days = _decision_days(store)
    assert api_server.requests == len(days) == 6
    env = PortfolioEnv(store, FIVE, "2024-04-01", "2024-04-30", obs_mode="text")
    assert api_server.seen[0]["body"]["messages"][1]["content"] == env.reset(seed=0)[0]
    book = pd.read_csv(out / "portfolio" / "gpt-4.1.csv", index_col=0, parse_dates=True)
    uni_days = store.trading_days("AAPL", "2024-04-01", "2024-05-31")
    for d in days:  # the targets decided at d are booked on the next session's row
        row = book.loc[uni_days[uni_days.get_loc(d) + 1]]
        assert (row["p_AAPL"], row["p_XOM"], row["p_MSFT"]) == (0.5, 0.3, 0.0)
    held = book.loc[uni_days[2], ["p_AAPL", "p_XOM"]]  # no decision: the weights it drifted to, not traded
    assert held["p_AAPL"] != 0.5 and book.loc[uni_days[2], "turnover"] == pytest.approx(0, abs=1e-12)
    board = pd.read_csv(out / "leaderboard_portfolio.csv").set_index("agent")
    assert 0 <= board.loc["gpt-4.1", "pre_cutoff_share"] <= 1 and not np.isnan(board.loc["gpt-4.1", "ic"])
    assert "active-weight IC 1d" in (out / "leaderboard_portfolio.md").read_text()
    assert json.loads((out / "config.json").read_text())["status"] == "complete"

    assert main(_llm_argv(api_server.base_url, out)) == 0  # saved windows: not asked again
    for saved in (out / "portfolio" / "decisions").glob("gpt-4.1__*.json"):
        saved.unlink()
    assert main(_llm_argv(api_server.base_url, out)) == 0  # the call cache answers
    assert api_server.requests == 6
    pd.testing.assert_frame_equal(pd.read_csv(out / "portfolio" / "gpt-4.1.csv", index_col=0, parse_dates=True), book)
    capsys.readouterr()


def test_the_budget_stops_a_portfolio_run_resumably_and_counts_its_saved_windows(store, api_server, llm_cache,
                                                                                 tmp_path, capsys):
    """--max-cost-usd holds on the portfolio track: the run stops before the call that would pass it (exit 1, one
    line, resumable), and the windows saved by an earlier run count against it."""
    import json

    from benchmarks.run import main

    api_server.reply = '{"AAPL": 0.5, "XOM": 0.3, "CASH": 0.2}'
    out = tmp_path / "run"
    assert main(_llm_argv(api_server.base_url, out, "--dry-run")) == 2  # no estimate here: refused, never run
    assert "--dry-run" in capsys.readouterr().err and not out.exists() and api_server.requests == 0
    assert main(_llm_argv(api_server.base_url, out, "--max-cost-usd", "0.001")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("API cost: $0.00 so far")
    assert err[-1].startswith("run.py: error: --max-cost-usd 0.001: the next gpt-4.1 call") and "resume" in err[-1]
    assert api_server.requests == 0 and json.loads((out / "config.json").read_text())["status"] == "running"
    assert main(_llm_argv(api_server.base_url, out, "--max-cost-usd", "1")) == 0  # resumes, finishes under it
    assert api_server.requests == 6
    april, may = sorted((out / "portfolio" / "decisions").glob("gpt-4.1__*.json"))
    saved = json.loads(april.read_text())
    for r in saved["decisions"]:  # as if April's calls had cost $10 each (gpt-4.1: $2 per million prompt tokens)
        r["meta"]["prompt_tokens"] = 5_000_000
    april.write_text(json.dumps(saved))
    may.unlink()
    llm_cache.unlink()  # May is asked again, not answered from the call cache
    capsys.readouterr()
    assert main(_llm_argv(api_server.base_url, out, "--max-cost-usd", "30.01")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("API cost: $30.0") and api_server.requests == 6  # April's $30 left no room for May


@pytest.mark.parametrize("reply, why", [('{"AAPL": 0.7, "CASH": 0.7}', "weights sum to 1.4, not 1"),
                                        ('{"AAPL": 0.5, "TSLA": 0.5, "CASH": 0}', "unknown key"),
                                        ("Mostly cash, some Apple.", "no JSON object")])
def test_an_invalid_allocation_is_a_failed_decision_retried_next_run(store, api_server, llm_cache, tmp_path, capsys,
                                                                     reply, why):
    import json

    from benchmarks.run import main
    from tr1_agent.cache import CallCache

    api_server.reply = reply
    out = tmp_path / "run"
    assert main(_llm_argv(api_server.base_url, out)) == 1
    err = capsys.readouterr().err
    assert f"failed gpt-4.1 in 2024-04-01_2024-04-30: 2024-04-01: gpt-4.1: invalid allocation: {why}" in err
    assert err.strip().splitlines()[-1].startswith("run.py: error: 2 agent x window replay(s) failed: gpt-4.1 in")
    assert api_server.requests == 2  # each window stops at its first failed decision
    assert list(pd.read_csv(out / "leaderboard_portfolio.csv")["agent"]) == ["buy_and_hold"]  # never silently cash
    assert not (out / "portfolio" / "gpt-4.1.csv").exists() and not list(out.glob("portfolio/decisions/*"))
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and set(config["failed"]["gpt-4.1"]) == {"2024-04-01_2024-04-30",
                                                                                   "2024-05-01_2024-05-31"}
    assert not llm_cache.exists() or len(CallCache(llm_cache)) == 0  # an invalid answer is not cached
    assert "gpt-4.1 (failed in" in (out / "leaderboard_portfolio.html").read_text()

    api_server.reply = '{"AAPL": 0.5, "CASH": 0.5}'  # the model answers well now: exactly the failures are asked
    assert main(_llm_argv(api_server.base_url, out)) == 0
    assert api_server.requests == 2 + 6 and len(CallCache(llm_cache)) == 6
    assert "gpt-4.1" in set(pd.read_csv(out / "leaderboard_portfolio.csv")["agent"])


def test_a_failed_call_fails_the_window_only(store, api_server, llm_cache, tmp_path, capsys):
    """A 400 on the first window's second decision: that window is failed and asked again; the other is kept."""
    from benchmarks.run import main

    api_server.script, api_server.reply = ["ok", 400], '{"NVDA": 1, "CASH": 0}'
    out = tmp_path / "run"
    assert main(_llm_argv(api_server.base_url, out)) == 1
    assert "failed gpt-4.1 in 2024-04-01_2024-04-30: 2024-04-15: gpt-4.1 at" in capsys.readouterr().err
    assert [p.name for p in (out / "portfolio" / "decisions").glob("*")] == ["gpt-4.1__2024-05-01_2024-05-31.json"]
    before = api_server.requests
    assert main(_llm_argv(api_server.base_url, out)) == 0
    # April's last two decisions (its first is cached) and May's, whose prompt now reads the weights April left: the
    # May saved by the failed run started in cash, so its fingerprint (the carried weights) no longer matches
    assert api_server.requests - before == 3


def test_llm_decisions_mode_maps_calls_to_weights(store, api_server, llm_cache, tmp_path, capsys):
    """Every member's Trading-R1 call (BUY) is asked from its own context: each gets 1/5 x 0.5."""
    from benchmarks.run import main

    out = tmp_path / "run"
    assert main(_llm_argv(api_server.base_url, out, "--portfolio-llm-mode", "decisions")) == 0
    assert api_server.requests == 6 * len(FIVE)
    prompts = [r["body"]["messages"][1]["content"] for r in api_server.seen]
    assert sum("AAPL" in p for p in prompts) >= 6 and all("CASH" not in p for p in prompts)
    book = pd.read_csv(out / "portfolio" / "gpt-4.1.csv", index_col=0)
    np.testing.assert_allclose(book.iloc[0][[f"p_{t}" for t in FIVE]].astype(float), [0.1] * 5)
    assert "decide by decisions" in (out / "leaderboard_portfolio.html").read_text()
    capsys.readouterr()


def test_portfolio_sb3_trains_before_the_window_and_caches(store, tmp_path):
    from baselines.sb3 import PortfolioSB3

    agent = PortfolioSB3("a2c", steps=64, train_years=0.5, cache_dir=tmp_path)
    tickers, weights = agent.weights(store, ("AAPL", "XOM"), "2024-04-01", "2024-04-30")
    (path,) = tmp_path.glob("a2c/portfolio/AAPL-XOM/*.zip")
    assert path.name.startswith("20230930-20240331_64steps") and agent.trained == 1  # ends the day before the window
    again = PortfolioSB3("a2c", steps=64, train_years=0.5, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.weights(store, ("AAPL", "XOM"), "2024-04-01", "2024-04-30")[1], weights)
    assert again.trained == 0 and tickers == ("AAPL", "XOM") and weights.shape == (21, 2)
    assert (weights >= 0).all() and (weights.sum(axis=1) <= 1 + 1e-9).all()


def test_active_weight_ic_reads_the_next_session():
    """Active weights equal to the next session's returns have IC 1 on every day; shifted a day (what a book
    that peeked would be scored on, or a misaligned test), they do not."""
    from tr1_env.evaluation.signals import daily_rank_ic, ic_tests, weight_rows

    rng = np.random.default_rng(0)
    days = pd.bdate_range("2024-01-01", periods=40)
    closes = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.02, (40, 6)), axis=0)), days, list("ABCDEF"))
    nxt = (closes.shift(-1) / closes - 1).iloc[:-1]
    bench = pd.DataFrame(1 / 6, nxt.index, closes.columns)
    held = pd.DataFrame(True, nxt.index, closes.columns)
    rows = weight_rows(bench + nxt, bench, held, closes, 5)
    np.testing.assert_allclose(daily_rank_ic(rows, "fwd_1"), 1.0)
    late = weight_rows(bench + nxt.shift(1).fillna(0), bench, held, closes, 5)
    assert abs(ic_tests(late, 5)["ic"]) < 0.5
    held.iloc[:, 0] = False  # a ticker that may not be held is no row
    assert set(weight_rows(bench + nxt, bench, held, closes, 5)["ticker"]) == set("BCDEF")


def test_signal_board_scores_each_target_against_the_session_after_it(store):
    """A planted book whose targets (decided at d_k, on the row of d_k+1) rank the tickers by their return over
    d_k..d_k+1, blurred by noise, has a strong active-weight IC; the benchmark has none (no active weight)."""
    from benchmarks.config import RunConfig
    from benchmarks.portfolio import Universe, signal_board
    from tr1_env.evaluation.windows import windows

    cfg = RunConfig.of(portfolio=True, tickers=FIVE, start="2024-04-01", end="2024-05-31", bootstrap=100)
    uni = Universe(store, cfg)
    window = windows("single", "2024-04-01", "2024-05-31")[0]
    days = uni.closes.loc["2024-04-01":"2024-05-31"].index
    bench = pd.DataFrame(0.0, days[1:], [f"p_{t}" for t in uni.closes.columns])
    moved = (uni.closes.loc[days] / uni.closes.loc[days].shift(1) - 1).iloc[1:].fillna(0.0)
    noise = np.random.default_rng(0).normal(0, moved.to_numpy().std(), moved.shape)
    planted = (bench + 0.2 + (moved.to_numpy() + noise) / 10).assign(decision_date=days[:-1])
    bench = bench.assign(decision_date=days[:-1])
    board = signal_board({window: {"buy_and_hold": bench, "planted": planted}}, uni, "buy_and_hold", cfg)
    assert board.loc["planted", "ic"] > 0.5 and board.loc["planted", "ic_p_holm"] < 0.001
    assert np.isnan(board.loc["buy_and_hold", "ic"])


def test_anonymized_allocation_reads_and_answers_pseudonyms(store, api_server, llm_cache, tmp_path, capsys):
    """--anonymize: the model sees no ticker, answers with the pseudonyms, and its weights land on the real tickers."""
    from benchmarks.run import main

    env = PortfolioEnv(store, FIVE, "2024-04-01", "2024-04-30", obs_mode="text", anonymize="strict")
    names = env.reset(seed=0)[1]["pseudonyms"]
    api_server.reply = f'{{"{names["NVDA"]}": 0.6, "CASH": 0.4}}'
    out = tmp_path / "run"
    assert main(_llm_argv(api_server.base_url, out, "--anonymize")) == 0
    prompts = [r["body"]["messages"][1]["content"] for r in api_server.seen]
    assert not any(t in p for p in prompts for t in FIVE) and all(names["NVDA"] in p for p in prompts)
    book = pd.read_csv(out / "portfolio" / "gpt-4.1+anon.csv", index_col=0)
    assert book.iloc[0]["p_NVDA"] == 0.6 and book.iloc[0][["p_AAPL", "p_MSFT"]].eq(0).all()
    capsys.readouterr()
