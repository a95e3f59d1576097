"""The power calibration: planted agents know what they should, a real edge is found, none is offered as an agent."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import calibrate
from benchmarks.run import RunConfig, UsageError, resolve_agents
from tr1_env.core.actions import Action
from tr1_env.data.store import Store


@pytest.fixture(scope="module")
def store():
    return Store()


def test_planted_actions_read_the_next_close_on_their_share(store):
    closes = store.closes("AAPL")
    days = store.trading_days("AAPL", "2024-01-01", "2024-12-31")
    up = (closes.reindex(days).diff().shift(-1) > 0).iloc[:-1].to_numpy()
    sure = calibrate.planted_actions(closes, days, 1.0, np.random.default_rng(0))
    assert list(sure.index) == list(days[:-1])  # decides every session but the last
    assert (sure.to_numpy() == np.where(up, "STRONG_BUY", "STRONG_SELL")).all()
    blind = calibrate.planted_actions(closes, days, 0.0, np.random.default_rng(0))
    assert set(blind) == {a.name for a in Action}  # random on every day
    some = calibrate.planted_actions(closes, days, 0.3, np.random.default_rng(1))
    informed = some.to_numpy() == np.where(up, "STRONG_BUY", "STRONG_SELL")
    assert 0.3 < informed.mean() < 0.3 + 0.7 * 0.2 + 0.1  # its share plus the lucky random calls
    assert (calibrate.planted_actions(closes, days, 0.3, np.random.default_rng(1)) == some).all()  # seeded


def test_a_planted_15_percent_edge_beats_buy_and_hold_over_the_default_walk_forward(store):
    """The issue's planted agent (15 tickers x 8 quarters, 15% informed days): Sharpe about 4 against buy-and-hold's
    1.1; the verdict on mean return alone said "indistinguishable" (SPA p 0.29). The Sharpe-difference verdict and
    the IC find it; the uninformed agent is not "beats"."""
    cfg = calibrate.CalibrationConfig(shares=(0.0, 0.15), seeds=1, bootstrap=500)
    board = calibrate.family(cfg, 0, store)
    planted = board.loc["planted 0.15"]
    assert planted["sharpe"] > 3 and board.loc["buy_and_hold", "sharpe"] < 1.5
    assert planted["verdict"] == "beats" and planted["ic"] > 0 and planted["ic_p"] < 0.05
    assert board.loc["planted 0", "verdict"] != "beats" and board.loc["planted 0", "n_calls"] == planted["n_calls"]


def test_power_table_and_bad_arguments(store, capsys):
    cfg = calibrate.CalibrationConfig(shares=(0.0, 0.5), seeds=2, tickers=("AAPL", "MSFT", "NVDA", "SPY", "XOM"),
                                      start="2024-01-01", end="2024-06-30", bootstrap=200)
    table = calibrate.power_table(cfg, store)
    assert list(table.index) == [0.0, 0.5] and table.loc[0.5, "verdict beats"] == 1.0
    assert table.loc[0.5, "IC > 0, p < alpha"] == 1.0 and table.loc[0.0, "verdict beats"] == 0.0
    assert "| 50% |" in calibrate.markdown(table, cfg)
    assert calibrate.main(["--shares", "1.5"]) == 2 and "--shares in [0, 1]" in capsys.readouterr().err
    assert calibrate.main(["--alpha", "2"]) == 2


def test_planted_agents_are_no_agent_of_the_replay():
    with pytest.raises(UsageError, match="unknown agent"):
        resolve_agents(RunConfig.of(agents=("planted",)))
    assert not any("planted" in str(s.settings) for s in resolve_agents(RunConfig.of(walk_forward=("quarterly",))))
