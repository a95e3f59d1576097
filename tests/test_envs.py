import math
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import tr1_env  # noqa: F401 - registers the ids
from benchmarks.perf import honest_thesis
from tr1_env.context.modalities.market import MARKET_FEATURES
from tr1_env.context.record import MODALITIES
from tr1_env.core.actions import DEFAULT_WEIGHTS, Action
from tr1_env.data.store import Store
from tr1_env.envs import ThesisEnv, TradingEnv, UnicodeText, action_index
from tr1_env.envs.trading_env import OBS_NAMES
from tr1_env.envs.wrappers import StepLog, TextAction
from tr1_env.execution import Execution, NextOpenFill
from tr1_env.scoring.rewards import RewardConfig

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning",
                                        "ignore:The inplace keyword:FutureWarning")

TICKER, START, END = "MSFT", "2020-10-01", "2021-05-28"


@pytest.fixture(scope="module")
def store():
    return Store()


@pytest.fixture(scope="module")
def thesis_env(store):
    return ThesisEnv(store, tickers=("NVDA", "AAPL", "MSFT"), start="2024-01-01", end="2024-05-31")


@pytest.fixture(scope="module")
def trading_env(store):
    return TradingEnv(store, TICKER, START, END)


def test_import_registers_without_loading_envs_or_torch():
    code = ("import sys, gymnasium, tr1_env; gymnasium.spec('tr1/Thesis-v0'); gymnasium.spec('tr1/Trading-v0'); "
            "print(sorted(m for m in ('torch', 'tr1_env.envs', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.strip() == "[]"


def test_unicode_text_space():
    space = UnicodeText(50, seed=0)
    assert space.contains("Nvidia’s rally — ¥ €") and space.contains("")
    assert not space.contains("x" * 51) and not space.contains(3)
    assert all(space.contains(space.sample()) for _ in range(20))
    assert space == UnicodeText(50) and space != UnicodeText(51) and space != gym.spaces.Text(50)


# --------------------------------------------------------------------------------------------------- thesis env


def strict_check_env(env, **kwargs) -> None:
    """gymnasium's checker with every warning it gives turned into an error (pandas' own deprecations aside)."""
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="The inplace keyword")
        check_env(env, skip_render_check=True, **kwargs)


def test_thesis_env_checker(thesis_env):
    strict_check_env(thesis_env)


def test_thesis_reset_info(thesis_env):
    prompt, info = thesis_env.reset(seed=3)
    assert thesis_env.observation_space.contains(prompt)
    assert set(info) == {"ticker", "date", "modalities", "missing", "label"}
    assert info["ticker"] in ("NVDA", "AAPL", "MSFT") and Action[info["label"]] is thesis_env.label
    assert pd.Timestamp("2024-01-01") <= info["date"] <= pd.Timestamp("2024-05-31")
    assert set(info["modalities"]) <= set(MODALITIES) and set(info["missing"]) <= set(info["modalities"])
    assert thesis_env.context.text in prompt


def test_thesis_seeded_determinism(store, thesis_env):
    def draws(env, seed):
        first = env.reset(seed=seed)[1]
        return [(i["ticker"], i["date"], i["modalities"]) for i in (first, *(env.reset()[1] for _ in range(3)))]

    other = ThesisEnv(store, tickers=("NVDA", "AAPL", "MSFT"), start="2024-01-01", end="2024-05-31")
    assert draws(thesis_env, 7) == draws(other, 7)
    assert len({tuple(draws(thesis_env, seed)[0]) for seed in range(6)}) > 1


def test_thesis_options_fix_the_sample(thesis_env):
    _, info = thesis_env.reset(options={"ticker": "NVDA", "date": "2024-03-04", "modalities": ("market", "macro")})
    assert info["ticker"] == "NVDA" and info["date"] == pd.Timestamp("2024-03-04")
    assert info["modalities"] == ("market", "macro")
    with pytest.raises(ValueError, match="no labelled ticker-day"):
        thesis_env.reset(options={"ticker": "NVDA", "date": "2024-03-02"})  # a Saturday
    with pytest.raises(ValueError, match="no labelled ticker-day"):
        thesis_env.reset(options={"ticker": "NVDA", "date": "2024-05-30"})  # its target lies past the window


@pytest.mark.parametrize("window", [{}, {"end": "2024-06-15"}, {"start": "2024-01-01", "end": "2025-05-31"}])
def test_thesis_env_refuses_the_replay_window(store, window):
    """The training datasets' guard: the default window trains before the replay window, and any
    window overlapping it is refused unless ``heldout=None``."""
    if not window:
        env = ThesisEnv(store, tickers=("NVDA",))
        assert env.samples["date"].max() < pd.Timestamp("2024-06-01")
        return
    with pytest.raises(ValueError, match="overlaps the evaluation window 2024-06-01..2024-08-31"):
        ThesisEnv(store, tickers=("NVDA",), **window)
    assert len(ThesisEnv(store, tickers=("NVDA",), heldout=None, **window).samples)


def test_thesis_reward_ordering(thesis_env):
    """An honest thesis with the right call beats a wrong call, fabricated quotes and garbage."""
    prompt, info = thesis_env.reset(seed=0, options={"modalities": MODALITIES})
    label = thesis_env.label
    wrong = Action.STRONG_SELL if label.direction > 0 else Action.STRONG_BUY

    def reward(completion):
        thesis_env.reset(seed=0, options={"modalities": MODALITIES})
        obs, r, terminated, truncated, step_info = thesis_env.step(completion)
        assert (obs, terminated, truncated) == (prompt, True, False)
        return r, step_info

    honest = honest_thesis(thesis_env.context, label)
    r_honest, step_info = reward(honest)
    assert step_info["decision_action"] == step_info["label"] == label.name
    assert step_info["n_fabricated"] == 0 and step_info["n_quotes"] == step_info["n_claims"] == 28
    assert step_info["total"] == r_honest == pytest.approx(
        step_info["structure"] + step_info["evidence"] + step_info["decision"])
    assert step_info["structure"] > 0.9 and step_info["evidence"] > 0.9 and step_info["decision"] == 1.0

    r_wrong, _ = reward(honest.replace(f"[[[{label.name}]]]", f"[[[{wrong.name}]]]"))
    r_fabricated, fab_info = reward(_fabricate(honest))
    r_garbage, garbage_info = reward("lorem ipsum dolor sit amet, buy buy buy")
    assert fab_info["n_fabricated"] == 28 and fab_info["evidence"] < step_info["evidence"]
    assert garbage_info["decision_action"] is None and garbage_info["decision"] == -1.5
    assert r_honest > r_wrong and r_honest > r_fabricated > r_garbage


def _fabricate(thesis: str) -> str:
    """Replace every quote by words that are not in any context."""
    lines = []
    for line in thesis.splitlines():
        if line.startswith("- ") and " *" in line:
            opinion, _, rest = line.partition(" *")
            line = f"{opinion} *quarterly zorblax shipments tripled overnight* `{rest.partition('`')[2]}"
        lines.append(line)
    return "\n".join(lines)


def test_thesis_step_needs_reset(store):
    env = ThesisEnv(store, tickers=("SPY",), start="2024-03-01", end="2024-04-30")
    with pytest.raises(RuntimeError):
        env.step("text")
    env.reset(seed=0)
    env.step("text")
    with pytest.raises(RuntimeError):
        env.step("again")


def test_thesis_stage_weights(store):
    env = ThesisEnv(store, tickers=("SPY",), start="2024-03-01", end="2024-04-30", stage="structure")
    assert env.reward_config == RewardConfig.for_stage("structure")
    env.reset(seed=1)
    _, reward, *_, info = env.step("<conclusion>\n### Done\nshort\n</conclusion>\n[[[HOLD]]]")
    assert reward == pytest.approx(info["structure"])
    with pytest.raises(ValueError):
        ThesisEnv(store, tickers=("SPY",), stage="claims", reward_config=RewardConfig())


def test_thesis_gym_make(store):
    env = gym.make("tr1/Thesis-v0", store=store, tickers=["JPM"], start="2024-02-01", end="2024-03-29")
    prompt, info = env.reset(seed=0)
    assert info["ticker"] == "JPM" and "[[[STRONG_SELL]]]" in prompt
    _, reward, terminated, _, _ = env.step("")
    assert terminated and reward < 0


# -------------------------------------------------------------------------------------------------- trading env


def test_trading_env_checkers(store):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    strict_check_env(TradingEnv(store, TICKER, START, END))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="The inplace keyword")
        sb3_check_env(TradingEnv(store, TICKER, START, END))
    strict_check_env(TradingEnv(store, TICKER, START, END, obs_mode="text", action_mode="five"))
    strict_check_env(TradingEnv(store, TICKER, START, END, execution=Execution("next-open")))


def _up_trend_store() -> Store:
    """One synthetic ticker, UP, rising 0.4% a session with 0.2% noise (seeded) over 2023-2024."""
    from tr1_env.data.clock import decision_time

    days = pd.bdate_range("2023-01-02", "2024-12-31")
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.004 + rng.normal(0, 0.002, len(days))))
    prices = pd.DataFrame({"ticker": "UP", "date": days, "open": close, "high": close * 1.002, "low": close * 0.998,
                           "close": close, "volume": 1_000_000, "available_at": [decision_time(d) for d in days]})
    return Store(tables={"prices": prices})


def test_sb3_ppo_short_run():
    """On a steady up-trend a briefly trained PPO policy ends richer than a random one (which holds
    a long position a third of the time and pays costs on every change)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    env = gym.make("tr1/Trading-v0", store=_up_trend_store(), ticker="UP", start="2024-01-02", end="2024-12-31")
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=4, seed=0, device="cpu")
    model.set_logger(Logger(None, []))  # not an SB3-<time> folder in the temp dir per test
    model.learn(2048)

    def final_equity(policy, seed: int) -> float:
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            done = terminated or truncated
        return info["equity"]

    trained = final_equity(lambda o: int(model.predict(o, deterministic=True)[0]), 0)
    env.action_space.seed(0)
    random = np.mean([final_equity(lambda o: env.action_space.sample(), seed) for seed in range(3)])
    assert trained > 1.5 and trained > random + 0.3


def test_observation_layout(trading_env):
    obs, info = trading_env.reset(seed=0)
    assert obs.shape == (len(OBS_NAMES),) and obs.dtype == np.float32
    assert info == {"date": pd.Timestamp(START), "position": 0.0, "equity": 1.0, "cash": 1.0,
                    "log_return": 0.0, "cost": 0.0}
    assert obs[-2:].tolist() == [0.0, 1.0]
    np.testing.assert_array_equal(obs[:-2], trading_env.features.loc[START, list(MARKET_FEATURES)].to_numpy(np.float32))
    obs, *_ = trading_env.step(2)
    assert obs[-2] == 1.0 and obs[-1] == pytest.approx(1 - 1 / trading_env.n_steps)


def test_no_look_ahead(store, trading_env):
    """The observation of day t equals the one built from a store holding nothing after t's close."""
    rng = np.random.default_rng(0)
    obs_by_day = {}
    obs, info = trading_env.reset(seed=0)
    truncated = False
    while not truncated:
        obs_by_day[info["date"]] = obs
        obs, _, _, truncated, info = trading_env.step(int(rng.integers(3)))
    obs_by_day[info["date"]] = obs
    days = trading_env.days
    for i in sorted(rng.choice(np.arange(1, len(days)), 30, replace=False)):
        day = days[i]
        cut = TradingEnv(store.cut(day), TICKER, start=days[i - 1], end=day)
        cut.reset()
        cut_obs, *_, truncated, cut_info = cut.step(1)
        assert truncated and cut_info["date"] == day
        np.testing.assert_array_equal(cut_obs[:-2], obs_by_day[day][:-2])


def test_text_observation_is_point_in_time(store):
    day = pd.Timestamp("2024-05-31")
    full = TradingEnv(store, "NVDA", "2024-05-01", "2024-07-31", obs_mode="text")
    cut = TradingEnv(store.cut(day), "NVDA", "2024-05-30", day, obs_mode="text")
    _, info = full.reset()
    while info["date"] != day:
        prompt, _, _, _, info = full.step(1)
    cut.reset()
    cut_prompt, *_ = cut.step(1)
    def state(p):
        return p[p.index("- Last"):p.index("Think briefly")]
    assert state(cut_prompt) == state(prompt)
    assert "Latest NVDA headlines:\n  - [2024-05-31]" in prompt and "(none available)" not in prompt
    assert prompt.rstrip().endswith("Action: <one of sell, hold, buy>")


@pytest.mark.parametrize("action_mode", ["sell_hold_buy", "five"])
def test_reward_arithmetic(store, action_mode):
    env = TradingEnv(store, TICKER, START, END, action_mode=action_mode, execution=Execution(cost_bps=25.0))
    targets = {"sell_hold_buy": (-1, 0, 1), "five": tuple(DEFAULT_WEIGHTS[a] for a in Action)}[action_mode]
    closes = store.closes(TICKER).loc[START:END]
    actions = [2, 2, 0, 1, 0, 2, 1] if action_mode == "sell_hold_buy" else [4, 3, 0, 1, 2, 4, 3]
    env.reset(seed=0)
    previous, book = 0.0, 1.0
    for k, action in enumerate(actions):
        _, reward, terminated, truncated, info = env.step(action)
        position = targets[action]
        log_return = math.log(closes.iloc[k + 1] / closes.iloc[k])
        cost = 25.0 / 1e4 * abs(position - previous)
        assert reward == pytest.approx(position * log_return - cost, abs=1e-12)
        book *= (1 - cost) * (1 + position * (closes.iloc[k + 1] / closes.iloc[k] - 1))  # the replay's book
        assert info["date"] == closes.index[k + 1] and info["position"] == position
        assert info["log_return"] == pytest.approx(log_return) and info["cost"] == pytest.approx(cost)
        assert info["equity"] == pytest.approx(book, rel=1e-12)
        assert info["cash"] == pytest.approx(info["equity"] * (1 - position))
        assert not terminated and not truncated
        previous = position


def test_reset_at_a_date_and_observation_at(store):
    """A public seek: starting on day d with position p observes what stepping there with p observes."""
    env = TradingEnv(store, TICKER, START, END)
    stepped, info = env.reset()
    for _ in range(3):
        stepped, _, _, _, info = env.step(2)  # buy: position +1
    day = info["date"]
    other = TradingEnv(store, TICKER, START, END)
    seeked, other_info = other.reset(options={"date": day, "position": 1.0})
    assert other_info["date"] == day and other.position == 1.0
    np.testing.assert_array_equal(seeked, stepped)
    np.testing.assert_array_equal(other.observation_at(day, 1.0), stepped)
    first = other.observation_at(START, -1.0)
    assert first[-2] == -1.0 and first[-1] == 1.0  # the first session, a full episode left
    np.testing.assert_array_equal(other.step(1)[0][:-2], env.step(1)[0][:-2])  # the seek moved nothing
    with pytest.raises(ValueError, match="no session"):
        other.observation_at("2020-10-03", 0.0)  # a Saturday
    with pytest.raises(ValueError, match="last session"):
        other.reset(options={"date": other.days[-1]})


def test_text_prompt_states_the_reward(store):
    env = TradingEnv(store, TICKER, START, END, obs_mode="text", execution=Execution(cost_bps=25.0))
    prompt, info = env.reset()
    assert "Your reward is the old position x ln(fill / today's close) + the new position x ln(next close / fill)" \
        in prompt
    assert f"Execution: {Execution(cost_bps=25.0).describe()}." in prompt and "25 bps" in prompt
    assert env.observation_at(info["date"], 0.0) == prompt


def test_truncation_at_period_end(trading_env):
    days = pd.DatetimeIndex(trading_env.store.trading_days(TICKER, START, END))
    assert trading_env.days.equals(days) and trading_env.n_steps == len(days) - 1
    trading_env.reset()
    steps = [trading_env.step(1) for _ in range(trading_env.n_steps)]
    flags = [s[2:4] for s in steps]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    assert steps[-1][4]["date"] == days[-1] <= pd.Timestamp(END)
    with pytest.raises(RuntimeError):
        trading_env.step(1)


def test_buy_and_hold_matches_prices(store):
    env = TradingEnv(store, TICKER, START, END, execution=Execution(cost_bps=0.0))
    env.reset()
    truncated = False
    while not truncated:
        *_, truncated, info = env.step(2)
    closes = store.closes(TICKER).loc[START:END]
    assert info["equity"] == pytest.approx(closes.iloc[-1] / closes.iloc[0])


def test_next_open_fill_reward(store):
    """Filled at the next open: the old position earns the night, the new one the session, the trade pays once."""
    env = TradingEnv(store, TICKER, START, END, action_mode="sell_hold_buy",
                     execution=Execution("next-open", 25.0))
    closes, opens = store.closes(TICKER).loc[START:END], store.closes(TICKER, "open").loc[START:END]
    env.reset()
    previous = 0.0
    for k, action in enumerate([2, 2, 0, 1, 0, 2]):
        _, reward, _, _, info = env.step(action)
        position = (-1.0, 0.0, 1.0)[action]
        night, session = math.log(opens.iloc[k + 1] / closes.iloc[k]), math.log(closes.iloc[k + 1] / opens.iloc[k + 1])
        cost = 25.0 / 1e4 * abs(position - previous)
        assert reward == pytest.approx(previous * night + position * session - cost, abs=1e-12)
        assert info["cost"] == pytest.approx(cost) and info["log_return"] == pytest.approx(night + session)
        previous = position
    with pytest.raises(ValueError, match="fill must be one of"):
        TradingEnv(store, TICKER, START, END, execution=Execution(fill="vwap"))


@pytest.mark.parametrize("fill", ["close", "next-open"])
def test_trading_env_books_as_the_replay_does(store, fill):
    """Long or flat without costs, the env's equity is the harness's (backtest.py) for either fill, on every day."""
    from tr1_env.evaluation.backtest import backtest

    env = TradingEnv(store, TICKER, START, END, action_mode="five", execution=Execution(fill, 0.0))
    rng = np.random.default_rng(0)
    choices = rng.choice([int(Action.HOLD), int(Action.STRONG_BUY)], env.n_steps)
    env.reset()
    equity = [env.step(a)[4]["equity"] for a in choices]
    actions = pd.Series([Action(a) for a in choices], index=env.days[:-1])
    booked = backtest(actions, store.closes(TICKER), env.days, Execution(fill, 0.0),
                      opens=store.closes(TICKER, "open"))
    np.testing.assert_allclose(equity, booked["equity"], rtol=1e-10)


@pytest.mark.parametrize("settings", [dict(), dict(fill="next-open", capital=2e10, cash_rate=0.04)])
def test_trading_env_books_as_the_replay_does_under_realistic_execution(store, settings):
    """Every action (shorts too), per-share commission, slippage, impact, borrow, dividends and (on $20bn) the volume
    cap: the env's equity is the replay's, session by session, and so are the positions the orders reached."""
    from tr1_env.evaluation.backtest import backtest

    execution = Execution(execution="realistic", **settings)
    env = TradingEnv(store, "XOM", "2024-01-02", "2024-06-28", action_mode="five", execution=execution)
    choices = np.random.default_rng(0).choice(len(Action), env.n_steps)
    env.reset()
    steps = [env.step(a)[4] for a in choices]
    actions = pd.Series([Action(a) for a in choices], index=env.days[:-1])
    booked = backtest(actions, store.closes("XOM"), env.days, execution, dividends=store.dividends("XOM"),
                      opens=store.closes("XOM", "open"), volumes=store.closes("XOM", "volume"))
    np.testing.assert_allclose([i["equity"] for i in steps], booked["equity"], rtol=1e-12)
    np.testing.assert_allclose([i["position"] for i in steps], booked["position"], rtol=1e-12)
    assert booked["borrow"].gt(0).any() and booked["impact"].gt(0).any()
    assert booked["unfilled"].gt(0).any() == (execution.capital > 1e9)


def test_next_open_prompt_states_the_fill(store):
    prompt, _ = TradingEnv(store, TICKER, START, END, obs_mode="text", execution=Execution("next-open")).reset()
    assert NextOpenFill.description in prompt and "fills at the decision's close" not in prompt


@pytest.mark.parametrize("text, mode, expected", [
    ("I think the trend holds.\nAction: buy", "sell_hold_buy", 2),
    ("**Action:** SELL", "sell_hold_buy", 0),
    ("Action: hold\n...on reflection\nAction = Strong Buy", "five", 4),
    ("Action: strong-sell", "sell_hold_buy", 0),
    ("<conclusion>...</conclusion>\n[[[BUY]]]", "five", 3),
    ("Action: sell", "five", 1),
    ("I would buy, sell or hold", "sell_hold_buy", None),
    ("Action: maybe", "five", None),
])
def test_action_index(text, mode, expected):
    assert action_index(text, mode) == expected


def test_action_names(store):
    assert TradingEnv(store, TICKER, START, END).action_names == ("sell", "hold", "buy")
    five = TradingEnv(store, TICKER, START, END, action_mode="five")
    assert five.action_names == tuple(a.name for a in Action) and five.action_space.n == 5
    assert all(five.action_index(f"Action: {name}") == i for i, name in enumerate(five.action_names))
    with pytest.raises(ValueError):
        TradingEnv(store, TICKER, START, END, obs_mode="pixels")


# ----------------------------------------------------------------------------------------------------- wrappers


def test_text_action_and_step_log(store):
    env = StepLog(TextAction(gym.make("tr1/Trading-v0", store=store, ticker=TICKER, start=START, end=END,
                                      obs_mode="text")))
    for _ in range(2):
        prompt, _ = env.reset()
        assert env.observation_space.contains(prompt)
        for completion in ("Action: buy", "no idea", "Action: sell"):
            env.step(completion)
    frame = env.frame()
    assert len(frame) == 6 and frame["episode"].tolist() == [0, 0, 0, 1, 1, 1]
    assert frame["position"].tolist() == [1.0, 0.0, -1.0] * 2
    assert frame["action_parsed"].tolist() == [True, False, True] * 2
    summary = env.summary()
    assert summary["steps"].tolist() == [3, 3]
    closes = store.closes(TICKER).loc[START:].iloc[:4].to_numpy()
    # long, flat, short: 10 bps on each change of position (1, 1, 1), the log returns of the days held
    rewards = math.log(closes[1] / closes[0]) - 1e-3 - 1e-3 - math.log(closes[3] / closes[2]) - 1e-3
    assert summary["reward"].iloc[0] == pytest.approx(rewards, abs=1e-12)
