"""Baselines decide from the observation alone; the SB3 ones train once, cache, reload and see the env's observation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from baselines import BASELINES, TRAINED
from baselines.rules import MACrossover, RSIMeanReversion
from baselines.sentiment import NewsSentiment, lexicon_score
from baselines.simple import AlwaysHold, BuyAndHold, RandomAgent
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Observation, load_agent


def obs(ticker="AAPL", date="2024-06-03", history=None, news=None, position=0.0) -> Observation:
    return Observation(ticker, pd.Timestamp(date), "", "", np.zeros(0, np.float32), (),
                       history if history is not None else pd.DataFrame(), news if news is not None else pd.DataFrame(),
                       position)


def news(titles, sentiments, hours_ago) -> pd.DataFrame:
    now = pd.Timestamp("2024-06-03 20:00", tz="UTC")
    return pd.DataFrame({"title": titles, "sentiment": sentiments,
                         "available_at": [now - pd.Timedelta(hours=h) for h in hours_ago]})


def test_every_baseline_is_an_agent(store):
    """Each untrained baseline answers real observations (built by the context builder) with one valid
    decision each, in order (the SB3 ones are checked on the env below, after training)."""
    from tr1_env.context.reference import build_context

    observations = [build_context(store, t, d).observation() for t in ("AAPL", "NVDA") for d in ("2024-06-03",
                                                                                                  "2024-06-12")]
    for name, path in BASELINES.items():
        if name in TRAINED:
            continue
        agent = load_agent(path)
        assert isinstance(agent, Agent)
        agent.reset("AAPL")
        decisions = agent.act(observations)
        assert len(decisions) == len(observations), name
        assert all(isinstance(d.action, Action) for d in decisions), name
    assert [d.action for d in load_agent(BASELINES["buy_and_hold"]).act(observations)] == [Action.STRONG_BUY] * 4


def test_constant_agents():
    assert [d.action for d in BuyAndHold().act([obs(), obs("MSFT")])] == [Action.STRONG_BUY] * 2
    assert [d.action for d in AlwaysHold().act([obs()])] == [Action.HOLD]


def test_random_is_seeded_per_ticker():
    a, b = RandomAgent(seed=1), RandomAgent(seed=1)
    first = [d.action for d in a.act([obs("AAPL"), obs("MSFT")] * 5)]
    b.act([obs("MSFT")])  # another order must not change AAPL's draws
    b.reset("MSFT")
    again = [d.action for d in b.act([obs("AAPL"), obs("MSFT")] * 5)]
    assert first == again and len(set(first)) > 1
    assert first != [d.action for d in RandomAgent(seed=2).act([obs("AAPL"), obs("MSFT")] * 5)]


def test_rules_read_the_last_indicator_row():
    hist = pd.DataFrame({"close_10_sma": [1.0, 2.0], "close_50_sma": [1.5, 1.5], "rsi_14": [50.0, 25.0]})
    assert MACrossover().act([obs(history=hist)])[0].action == Action.STRONG_BUY
    assert MACrossover().act([obs(history=hist.iloc[:1])])[0].action == Action.STRONG_SELL
    assert MACrossover().act([obs(history=hist.assign(close_50_sma=np.nan))])[0].action == Action.HOLD
    rsi = RSIMeanReversion()
    expected = {25: Action.STRONG_BUY, 35: Action.BUY, 50: Action.HOLD, 65: Action.SELL, 80: Action.STRONG_SELL}
    for value, action in expected.items():
        assert rsi.act([obs(history=hist.assign(rsi_14=float(value)))])[0].action == action


def test_news_sentiment_uses_vendor_labels_then_the_lexicon():
    agent = NewsSentiment(days=3, min_headlines=2)
    labelled = news(["a", "b", "c"], ["Positive", "Positive", "Neutral"], [1, 5, 30])
    assert agent.act([obs(news=labelled)])[0].action == Action.STRONG_BUY  # (1 + 1 + 0) / 3
    unlabelled = news(["Shares plunge after earnings miss", "Analyst downgrade", "Record sales"], [None] * 3, [1, 2, 3])
    assert agent.act([obs(news=unlabelled)])[0].action == Action.SELL  # (-1 - 1 + 1) / 3
    stale = news(["x", "y"], ["Negative", "Negative"], [24 * 10, 24 * 12])
    assert agent.act([obs(news=stale)])[0].action == Action.HOLD  # older than 3 days: too few headlines
    assert agent.act([obs()])[0].action == Action.HOLD
    assert lexicon_score("Nvidia stock surges to a record") == 1.0 and lexicon_score("Quiet day") == 0.0


def test_sb3_fit_saves_and_reloads(store, tmp_path, monkeypatch):
    import tempfile

    from baselines.sb3 import SB3Agent

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kw = dict(steps=64, train_years=0.25, cache_dir=tmp_path, seed=0)
    first = SB3Agent("a2c", **kw)
    first.fit(store, ["AAPL"], "2024-06-01", "2024-06-14")
    assert first.trained == 1 and len(list(tmp_path.rglob("*.zip"))) == 1
    assert not list(tmp_path.glob("SB3-*"))  # no empty logger folder per fit in the temp dir
    again = SB3Agent("a2c", **kw)
    again.fit(store, ["AAPL"], "2024-06-01", "2024-06-14")
    assert again.trained == 0
    days = store.trading_days("AAPL", "2024-06-01", "2024-06-14")
    batch = [obs("AAPL", d, position=p) for d, p in zip(days[:-1], [0.0, 1.0, -0.5, 0.5] * 3)]
    assert [d.action for d in first.act(batch)] == [d.action for d in again.act(batch)]


def test_sb3_trains_with_the_replays_fill(store, tmp_path):
    """``--fill next-open`` reaches the SB3 policies: trained and replayed on envs paid at the next open."""
    from baselines.sb3 import SB3Agent
    from benchmarks.config import RunConfig
    from benchmarks.run import resolve_agents
    from tr1_env.execution import Execution

    (spec,) = resolve_agents(RunConfig.of(agents=("a2c",), execution=Execution("next-open")))
    assert spec.settings["fill"] == "next-open"
    agent = SB3Agent("a2c", steps=64, train_years=0.25, cache_dir=tmp_path,
                     execution=Execution("next-open"))
    agent.fit(store, ["AAPL"], "2024-06-01", "2024-06-14")
    assert agent.envs["AAPL"].execution.fill == "next-open" and "_next-open_" in next(tmp_path.rglob("*.zip")).name


def test_sb3_observation_is_the_envs_own(store, tmp_path):
    """Stepping the env and seeking it per decision give the same vectors (time left, position included)."""
    from baselines.sb3 import SB3Agent
    from tr1_env.envs.trading_env import TradingEnv

    agent = SB3Agent("ppo", steps=64, train_years=0.25, cache_dir=tmp_path)
    agent.fit(store, ["MSFT"], "2024-06-01", "2024-06-14")
    env = TradingEnv(store, "MSFT", "2024-06-01", "2024-06-14", obs_mode="numeric", action_mode="five")
    x, info = env.reset()
    for action in [4, 0, 2, 3]:
        np.testing.assert_array_equal(agent.observe(obs("MSFT", info["date"], position=env.position)), x)
        x, _, _, _, info = env.step(action)


def test_sb3_rejects_unknown_algorithms():
    from baselines.sb3 import SB3Agent

    with pytest.raises(ValueError, match="algo"):
        SB3Agent("dqn")


def test_sb3_pooled_policy_sees_nothing_of_its_window(store, tmp_path):
    """One pooled policy for every ticker, trained the same from the whole store as from the store cut the day
    before the window: nothing of the window (or later) reaches the fit."""
    import torch

    from baselines.sb3 import SB3Agent
    from tr1_env.evaluation.windows import windows

    (window,) = windows("single", "2024-06-01", "2024-06-14")
    kw = dict(steps=64, train_years=0.25, seed=0, pool=True)
    whole = SB3Agent("a2c", cache_dir=tmp_path / "whole", **kw).train(store, ["AAPL", "MSFT"], window.train_until)
    cut = SB3Agent("a2c", cache_dir=tmp_path / "cut", **kw).train(store.cut(window.train_until), ["AAPL", "MSFT"],
                                                                  window.train_until)
    assert whole["AAPL"] is whole["MSFT"] and len(list((tmp_path / "whole").rglob("*.zip"))) == 1
    for a, b in zip(whole["AAPL"].policy.parameters(), cut["AAPL"].policy.parameters()):
        torch.testing.assert_close(a, b)
