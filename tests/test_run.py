"""The harness end to end on a short window: every output file, resume, plug-ins, a missing API key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.run import RunConfig, build_parser, main, run
from tr1_env.actions import Action
from tr1_env.agents import Agent, Decision
from tr1_env.cli_args import from_args

REPO = Path(__file__).resolve().parents[1]
WINDOW = dict(start="2024-06-01", end="2024-06-21", tickers=("NVDA", "META"), bootstrap=200)


class CountingAgent(Agent):
    """A plug-in that counts how often the harness asks it (``test_run:CountingAgent``)."""

    name = "counting"
    calls = 0

    def act(self, observations):
        CountingAgent.calls += len(observations)
        return [Decision(Action.BUY if o.position <= 0 else Action.SELL) for o in observations]


def test_flags_mirror_the_config_one_to_one():
    parser = build_parser()
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(RunConfig)}
    cfg = from_args(RunConfig, parser.parse_args(["--weights", "-2", "-1", "0", "1", "2", "--model", "gpt-4.1",
                                                  "--no-tearsheets"]))
    assert cfg.weights == (-2.0, -1.0, 0.0, 1.0, 2.0) and cfg.model == ("gpt-4.1",) and not cfg.tearsheets
    assert from_args(RunConfig, parser.parse_args([])) == RunConfig()


def test_end_to_end_writes_every_output(tmp_path):
    out = tmp_path / "run"
    summary = run(RunConfig(agents=("buy_and_hold", "ma_crossover"), out=str(out), **WINDOW))
    assert list(summary.columns[:10]) == ["agent", "ticker", "cr", "sharpe", "sharpe_lo", "sharpe_hi", "hit_rate",
                                          "mdd", "av", "n_days"]
    assert {"beats_bh", "p_value"} <= set(summary.columns) and len(summary) == 4
    for agent in ("buy_and_hold", "ma_crossover"):
        for ticker in WINDOW["tickers"]:
            returns = pd.read_csv(out / "returns" / f"{agent}__{ticker}.csv")
            assert {"date", "return", "position", "action"} <= set(returns.columns)
            assert (out / "tearsheets" / f"{agent}__{ticker}.html").stat().st_size > 10_000
    for ticker in WINDOW["tickers"]:
        assert (out / "plots" / f"equity_{ticker}.png").exists()
    md = (out / "summary.md").read_text()
    assert "## Cumulative return (CR, %)" in md and "| Agent | NVDA | META |" in md and "bootstrap" in md
    assert md.count("Costs") + md.count("costs 10 bps") == 1  # each note once
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.columns) == ["agent", "n_windows", "n_tickers", "cr", "sharpe", "sharpe_lo", "sharpe_hi",
                                   "excess_sharpe_vs_buy_and_hold", "spa_p", "in_mcs", "deflated_sharpe", "verdict"]
    assert set(board["agent"]) == {"buy_and_hold", "ma_crossover"} and (board["n_tickers"] == 2).all()
    html = (out / "leaderboard.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html  # no network
    assert "tearsheets/ma_crossover__portfolio.html" in html
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["start"] == "2024-06-01" and "coverage" in config and config["returns"].startswith("price")
    assert config["coverage"]["META"]["headlines_in_window"] == 0  # the embedded store has no 2024 META news
    bh = summary.set_index(["agent", "ticker"]).loc[("buy_and_hold", "NVDA")]
    assert bh["n_days"] == 13 and not bh["beats_bh"]  # 14 sessions (Juneteenth closed): 13 returns


def test_rerun_asks_no_agent_again(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = RunConfig(agents=(), agent=("test_run:CountingAgent",), out=str(tmp_path), tearsheets=False, **WINDOW)
    CountingAgent.calls = 0
    first = run(cfg)
    assert CountingAgent.calls == 2 * 13  # two tickers, 14 sessions, no decision on the last
    run(cfg)
    assert CountingAgent.calls == 2 * 13  # resumed from the saved decisions
    again = run(dataclasses.replace(cfg, cost_bps=50))  # accounting changes, decisions do not
    assert CountingAgent.calls == 2 * 13 and (again["cr"] < first["cr"]).all()
    run(dataclasses.replace(cfg, decision_every=2))  # a different schedule is a different replay
    assert CountingAgent.calls == 2 * 13 + 2 * 7
    decisions = json.loads((tmp_path / "decisions" / "CountingAgent__NVDA.json").read_text())["decisions"]
    assert [d["action"] for d in decisions[:3]] == ["BUY", "SELL", "BUY"]  # it saw its own position


def test_example_plugin_and_missing_api_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "plug"
    main(["--agents", "buy_and_hold", "--agent", "examples.custom_agent:MomentumAgent", "--model", "gpt-4.1",
          "--start", WINDOW["start"], "--end", WINDOW["end"], "--tickers", "SPY", "--bootstrap", "50",
          "--no-tearsheets", "--out", str(out)])
    captured = capsys.readouterr()
    assert "OPENAI_API_KEY" in captured.err and "MomentumAgent" in captured.out
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["agent"]) == ["buy_and_hold", "MomentumAgent"]
    assert "OPENAI_API_KEY" in json.loads((out / "config.json").read_text())["skipped"]["gpt-4.1"]


def test_unknown_plugin_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load agent"):
        run(RunConfig(agents=(), agent=("no_such_module:Agent",), out=str(tmp_path), tearsheets=False, **WINDOW))
