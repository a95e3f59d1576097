"""The harness end to end on a short window: every output file, resume, plug-ins, a missing API key."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port

from benchmarks import report
from benchmarks.run import RunConfig, UsageError, build_parser, main, outcome, run
from benchmarks.run_folder import verify_run
from tr1_agent.cache import CallCache
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, AgentError, Decision
from tr1_env.execution import Execution
from tr1_env.util.cli_args import flat_dict, from_args

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
    assert flags == set(flat_dict(RunConfig()))
    # each group's flags listed under its name in --help, the execution group's being the Execution value's
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    assert {f.name: groups[f.name] for f in dataclasses.fields(RunConfig) if f.name != "seed"} == {
        f.name: set(flat_dict(getattr(RunConfig(), f.name))) for f in dataclasses.fields(RunConfig) if f.name != "seed"}
    assert groups["execution"] == {"fill", "cost_bps", "execution", "capital", "commission_per_share",
                                   "commission_min", "slippage_bps", "impact_coef", "participation", "lookback",
                                   "borrow_bps", "cash_rate", "charge_llm_cost"}
    assert RunConfig.of(fill="next-open", alpha=0.1).replace(cost_bps=5) == RunConfig(
        execution=Execution("next-open", 5), statistics=dataclasses.replace(RunConfig().statistics, alpha=0.1))
    with pytest.raises(TypeError, match="no setting colour"):
        RunConfig.of(colour="red")
    cfg = from_args(RunConfig, parser.parse_args(["--weights", "-2", "-1", "0", "1", "2", "--model", "gpt-4.1",
                                                  "--no-tearsheets"]))
    assert cfg.agents.weights == (-2.0, -1.0, 0.0, 1.0, 2.0) and cfg.agents.model == ("gpt-4.1",)
    assert not cfg.outputs.tearsheets
    assert from_args(RunConfig, parser.parse_args([])) == RunConfig()


@pytest.mark.slow
def test_end_to_end_writes_every_output(tmp_path):
    out = tmp_path / "run"
    summary = run(RunConfig.of(agents=("buy_and_hold", "ma_crossover"), out=str(out), **WINDOW))
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
    assert list(board.columns) == [  # the documented file format, written out (README: leaderboard.csv)
        "agent", "n_windows", "n_tickers", "n_days", "span", "cr", "sharpe", "sharpe_lo", "sharpe_hi", "sharpe_ci_note",
        "excess_sharpe_vs_buy_and_hold", "excess_sharpe_p", "min_detectable_excess_sharpe", "spa_p", "in_mcs", "psr",
        "deflated_sharpe", "n_calls", "ic", "ic_lo", "ic_hi", "ic_p", "ic_h", "ic_h_lo", "ic_h_hi", "ic_h_p",
        "accuracy", "accuracy_lo", "accuracy_hi", "accuracy_prior", "accuracy_majority", "macro_f1", "macro_f1_lo",
        "macro_f1_hi", "macro_f1_majority", "hit_rate", "hit_rate_lo", "hit_rate_hi", "verdict", "pre_cutoff_share"]
    assert board["pre_cutoff_share"].isna().all() and board["span"].isna().all()  # no LLM, one span
    assert set(board["verdict"]) == {"benchmark", "too short"}  # 13 days: no p-value, no verdict
    assert set(board["agent"]) == {"buy_and_hold", "ma_crossover"} and (board["n_tickers"] == 2).all()
    html = (out / "leaderboard.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html  # no network
    assert "tearsheets/ma_crossover__portfolio.html" in html
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["start"] == "2024-06-01" and "coverage" in config and config["returns"].startswith("price")
    assert config["coverage"]["META"]["headlines_in_window"] == 0  # the embedded store has no 2024 META news
    bh = summary.set_index(["agent", "ticker"]).loc[("buy_and_hold", "NVDA")]
    assert bh["n_days"] == 13 and not bh["beats_bh"]  # 14 sessions (Juneteenth closed): 13 returns


@pytest.mark.slow
def test_rerun_asks_no_agent_again(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = RunConfig.of(agents=(), agent=("test_run:CountingAgent",), out=str(tmp_path), tearsheets=False, **WINDOW)
    CountingAgent.calls = 0
    first = run(cfg)
    assert CountingAgent.calls == 2 * 13  # two tickers, 14 sessions, no decision on the last
    run(cfg)
    assert CountingAgent.calls == 2 * 13  # resumed from the saved decisions
    again = run(cfg.replace(execution=Execution(cost_bps=50)))  # accounting changes, decisions do not
    assert CountingAgent.calls == 2 * 13 and (again["cr"] < first["cr"]).all()
    run(cfg.replace(decision_every=2))  # a different schedule is a different replay
    assert CountingAgent.calls == 2 * 13 + 2 * 7
    decisions = json.loads((tmp_path / "decisions" / "CountingAgent__NVDA.json").read_text())["decisions"]
    assert [d["action"] for d in decisions[:3]] == ["BUY", "SELL", "BUY"]  # it saw its own position


def test_example_plugin_and_missing_api_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "plug"
    code = main(["--agents", "buy_and_hold", "--agent", "examples.custom_agent:MomentumAgent", "--model", "gpt-4.1",
                 "--start", WINDOW["start"], "--end", WINDOW["end"], "--tickers", "SPY", "--bootstrap", "50",
                 "--no-tearsheets", "--out", str(out)])
    captured = capsys.readouterr()
    assert "OPENAI_API_KEY" in captured.err and "MomentumAgent" in captured.out
    assert code == 1 and "1 agent(s) skipped: gpt-4.1" in captured.err.splitlines()[-1]  # not everything ran
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["agent"]) == ["buy_and_hold", "MomentumAgent"]
    assert "OPENAI_API_KEY" in json.loads((out / "config.json").read_text())["skipped"]["gpt-4.1"]


def test_unknown_plugin_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="cannot load agent 'no_such_module:Agent': no module named"):
        run(RunConfig.of(agents=(), agent=("no_such_module:Agent",), out=str(tmp_path), tearsheets=False, **WINDOW))


# --- failures are never results --------------------------------------------------------------------

FAULTS = {  # what the scripted server does on every call, and the one-line error the user sees
    "http-400": (400, "BadRequestError (400) after 1 attempt"),
    "http-500": (500, "InternalServerError (500) after 2 attempts"),
    "silent": ("silent", "APITimeoutError after 2 attempts"),
    "garbled": ("garbled", "JSONDecodeError after 2 attempts"),
    "refused": (None, "APIConnectionError after 2 attempts"),
}


def _api_run(base_url: str, out: Path, *extra: str) -> list[str]:
    return ["--agents", "buy_and_hold", "--model", "gpt-4.1", "--base-url", base_url, "--start", WINDOW["start"],
            "--end", WINDOW["end"], "--tickers", "NVDA", "META", "--bootstrap", "50", "--no-tearsheets",
            "--llm-decision-every", "7", "--request-timeout", "0.5", "--max-retries", "1", "--out", str(out), *extra]


@pytest.fixture
def call_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path / "cache" / "llm_calls.sqlite"


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_api_is_reported_not_scored_and_retried_next_run(fault, api_server, call_cache, tmp_path, capsys):
    step, error = FAULTS[fault]
    base_url = api_server.base_url if step else f"http://127.0.0.1:{free_port()}/v1"
    api_server.script = [step] * 100 if step else []
    out = tmp_path / "run"
    start = time.monotonic()
    assert main(_api_run(base_url, out)) == 1
    assert time.monotonic() - start < 60  # bounded: timeout x attempts, once per failing batch
    err = capsys.readouterr().err
    # each ticker is asked on its own (its days in order), so its failed call is one of one
    assert f"failed gpt-4.1 on NVDA: 2024-06-03: 1 of 1 calls failed: gpt-4.1 at {base_url}: {error}" in err
    reason = err.strip().splitlines()[-1]
    assert reason.startswith("run.py: error: 2 agent x ticker replay(s) failed: gpt-4.1 on NVDA, gpt-4.1 on META")
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["agent"]) == ["buy_and_hold", "buy_and_hold"]  # the other agent's results are kept
    assert not list((out / "decisions").glob("gpt-4.1*")) and not list((out / "returns").glob("gpt-4.1*"))
    assert "no readable action" not in (out / "summary.md").read_text()  # a failure is not a parse failure
    assert "gpt-4.1 on NVDA: the replay failed" in (out / "summary.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and set(config["failed"]["gpt-4.1"]) == {"NVDA", "META"}
    assert not call_cache.exists() or len(CallCache(call_cache)) == 0  # nothing of a failure is cached

    if step:  # the server is fixed: the next run asks for exactly what failed (2 tickers x 2 decision days)
        api_server.script, before = [], api_server.requests
        assert main(_api_run(base_url, out)) == 0
        assert api_server.requests - before == 4 and len(CallCache(call_cache)) == 4
        assert set(pd.read_csv(out / "summary.csv")["agent"]) == {"buy_and_hold", "gpt-4.1"}


class FlakyAgent(Agent):
    """A plug-in whose call fails for NVDA from July on while ``broken`` (``test_run:FlakyAgent``)."""

    name = "flaky"
    broken, asked = True, []

    def act(self, observations):
        FlakyAgent.asked += [(o.ticker, o.date.strftime("%Y-%m-%d")) for o in observations]
        decisions = [None if self.broken and o.ticker == "NVDA" and o.date.month == 7 else Decision(Action.BUY)
                     for o in observations]
        if None in decisions:
            raise AgentError("flaky at http://127.0.0.1/v1: APIConnectionError after 1 attempt", decisions)
        return decisions


def test_walk_forward_failures_are_per_window_and_retried_exactly(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    argv = ["--agents", "buy_and_hold", "--agent", "test_run:FlakyAgent", "--walk-forward", "monthly",
            "--start", "2024-06-01", "--end", "2024-07-31", "--tickers", "NVDA", "SPY", "--bootstrap", "50",
            "--no-tearsheets", "--out", str(tmp_path)]
    FlakyAgent.broken, FlakyAgent.asked = True, []
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "failed FlakyAgent on NVDA in 2024-07-01_2024-07-31: 2024-07-01: flaky at http://127.0.0.1/v1" in err
    assert err.strip().splitlines()[-1].startswith("run.py: error: 1 agent x ticker replay(s) failed: FlakyAgent on "
                                                   "NVDA")
    # NVDA's June and SPY's two months are kept; NVDA's July is saved nowhere
    saved = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("windows/*/decisions/FlakyAgent__*.json")}
    assert saved == {"windows/2024-06-01_2024-06-30/decisions/FlakyAgent__NVDA.json",
                     "windows/2024-06-01_2024-06-30/decisions/FlakyAgent__SPY.json",
                     "windows/2024-07-01_2024-07-31/decisions/FlakyAgent__SPY.json"}
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(zip(summary["agent"], summary["ticker"])) == {("buy_and_hold", "NVDA"), ("buy_and_hold", "SPY"),
                                                             ("FlakyAgent", "SPY")}
    assert list(pd.read_csv(tmp_path / "leaderboard.csv")["agent"]) == ["buy_and_hold"]  # a partial book is not ranked
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["status"] == "failed" and list(config["failed"]["FlakyAgent"]) == ["NVDA"]
    assert verify_run(tmp_path) == []

    FlakyAgent.broken, FlakyAgent.asked = False, []
    assert main(argv) == 0
    july = pd.bdate_range("2024-07-01", "2024-07-31").drop(pd.Timestamp("2024-07-04"))[:-1]  # none on the last session
    assert FlakyAgent.asked == [("NVDA", f"{d:%Y-%m-%d}") for d in july]  # exactly what failed
    assert set(pd.read_csv(tmp_path / "leaderboard.csv")["agent"]) == {"buy_and_hold", "FlakyAgent"}
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "complete"


def test_one_failed_call_fails_only_its_ticker(api_server, call_cache, tmp_path, capsys):
    api_server.script = [400]  # the first call of the first day: one ticker of two
    out = tmp_path / "run"
    assert main(_api_run(api_server.base_url, out)) == 1
    capsys.readouterr()
    summary = pd.read_csv(out / "summary.csv").query("agent == 'gpt-4.1'")
    assert len(summary) == 1
    failed_ticker = ({"NVDA", "META"} - set(summary["ticker"])).pop()
    md = (out / "summary.md").read_text()
    column = 2 + ["NVDA", "META"].index(failed_ticker)  # "| gpt-4.1 | NVDA | META |"
    rows = [line.split("|") for line in md.split("## Contamination")[0].splitlines() if line.startswith("| gpt-4.1 |")]
    assert len(rows) == 6 and all(r[column].strip() == "failed" and r[5 - column].strip() != "failed" for r in rows)
    assert f"gpt-4.1 on {failed_ticker}: the replay failed" in md
    before = api_server.requests
    assert main(_api_run(api_server.base_url, out)) == 0
    assert api_server.requests - before == 2  # only the failed ticker's two days; the other's calls are cached


@pytest.mark.parametrize("reply, credentials", [("ok", "alice:hunter2@"), ("echo-ok", ""),
                                                 ("echo-ok", "alice:hunter2@")])
def test_secrets_never_reach_the_files(reply, credentials, api_server, call_cache, tmp_path, monkeypatch, capsys):
    """Also when the server echoes what authenticated it inside a successful completion (``echo-ok``): the
    key from the environment, or the base URL's user:password (the client sends them as Basic auth)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-key")
    api_server.default = reply
    out = tmp_path / "run"
    base_url = api_server.base_url.replace("//", f"//{credentials}")
    assert main(_api_run(base_url, out)) == 0
    basic = base64.b64encode(b"alice:hunter2").decode()
    assert api_server.seen[0]["authorization"] == (f"Basic {basic}" if credentials else "Bearer sk-test-SECRET-key")
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["base_url"] == base_url.replace(credentials, "***@" if credentials else "")
    thesis = json.loads((out / "decisions" / "gpt-4.1__NVDA.json").read_text())["decisions"][0]["thesis"]
    assert ("Your token *** (" in thesis) == (reply == "echo-ok")  # the echo arrived, masked
    assert call_cache.exists() and len(CallCache(call_cache)) == 4
    printed = capsys.readouterr()
    for text in [printed.out, printed.err] + [f.read_bytes().decode(errors="replace") for f in tmp_path.rglob("*")
                                              if f.is_file()]:
        assert "hunter2" not in text and "sk-test-SECRET-key" not in text and basic not in text


# --- names, tickers and arguments: one line, exit 2 --------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--agents", "buy_and_hld"], "--agents: unknown agent 'buy_and_hld' (did you mean buy_and_hold?)"),
    (["--agents", "gpt-4.1"], "model names (gpt-4.1, hf:PATH, vllm:ID, flag:PATH) go to --model"),
    (["--agent", "momentum"], "--agent: unknown agent 'momentum'"),
    (["--tickers", "ZZZZ"], "--tickers: ZZZZ not in the store; it has AAPL, "),
    (["--alpha", "2"], "--alpha must be in (0, 1), got 2"),
    (["--bootstrap", "-5"], "--bootstrap must be >= 0 (0: off), got -5"),
    (["--weights", "1", "2", "3"], "--weights needs 5 values (SS S H B SB), got 3"),
    (["--decision-every", "0"], "--decision-every must be >= 1, got 0"),
    (["--out", "FILE"], "is a file, not a folder"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    argv = [str(tmp_path / "file.txt") if a == "FILE" else a for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "run")]
    assert main([*argv, *out, "--start", WINDOW["start"], "--end", WINDOW["end"]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists() and (tmp_path / "file.txt").read_text() == "mine"


def test_tickers_are_normalised_once(tmp_path):
    summary = run(RunConfig.of(agents=("buy_and_hold",), tickers=("nvda", "NVDA"), start=WINDOW["start"],
                               end=WINDOW["end"], bootstrap=0, tearsheets=False, out=str(tmp_path)))
    assert list(summary["ticker"]) == ["NVDA"]
    assert "No company headlines in the window for" not in (tmp_path / "summary.md").read_text()


def test_nothing_replayed_is_not_a_success(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cfg = RunConfig.of(agents=(), model=("gpt-4.1",), tickers=("SPY",), start=WINDOW["start"], end=WINDOW["end"],
                       out=str(tmp_path))
    summary = run(cfg)
    assert summary.empty and outcome(summary, cfg) == "nothing was replayed (1 agent(s) skipped: gpt-4.1)"
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "failed"


# --- files that survive kills and corruption ----------------------------------------------------------


def test_truncated_decisions_are_moved_aside_and_replayed(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = RunConfig.of(agents=(), agent=("test_run:CountingAgent",), out=str(tmp_path), tearsheets=False, **WINDOW)
    CountingAgent.calls = 0
    first = run(cfg)
    path = tmp_path / "decisions" / "CountingAgent__NVDA.json"
    path.write_text(path.read_text()[:100])  # killed by something other than us, mid-write
    again = run(cfg)
    assert CountingAgent.calls == 2 * 13 + 13  # NVDA replayed, META reloaded
    err = capsys.readouterr().err
    assert f"warning: {path} is unreadable (JSONDecodeError" in err and "replaying it again" in err
    assert len(list(path.parent.glob("CountingAgent__NVDA.json.corrupt-*"))) == 1
    pd.testing.assert_frame_equal(first, again)


def test_a_run_killed_during_the_reports_leaves_no_mixed_folder(tmp_path, monkeypatch):
    cfg = RunConfig.of(agents=("buy_and_hold", "ma_crossover"), out=str(tmp_path), tearsheets=False, **WINDOW)
    run(cfg)
    assert verify_run(tmp_path) == []
    config = json.loads((tmp_path / "config.json").read_text())
    assert {"summary.csv", "summary.md", "windows.csv", "leaderboard.csv", "leaderboard.md", "leaderboard.html",
            "returns/buy_and_hold__NVDA.csv", "plots/equity_NVDA.png"} <= set(config["files"])
    assert f"Run id: {config['run_id']}" in (tmp_path / "leaderboard.html").read_text()
    assert f"Run id: {config['run_id']}" in (tmp_path / "summary.md").read_text()
    md = tmp_path / "summary.md"
    md.write_text(md.read_text() + "edited\n")
    assert verify_run(tmp_path) == ["summary.md is not from run " + json.loads((tmp_path / "config.json")
                                                                                 .read_text())["run_id"]]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_equity", killed)  # after summary.csv, before summary.md
    with pytest.raises(KeyboardInterrupt):
        run(cfg.replace(execution=Execution(cost_bps=100)))
    assert not md.exists()  # the old run's summary.md is gone, not left beside the new summary.csv
    assert verify_run(tmp_path)[0].endswith("did not finish")
    assert not list(tmp_path.rglob(".*partial*"))  # no temp file left behind


# --- reports that agree with each other ----------------------------------------------------------------


def _tearsheet_metrics(path: Path) -> dict[str, tuple[str, str]]:
    """Key rows of a quantstats tearsheet's metrics table: name -> (benchmark, strategy) as printed."""
    text = re.sub(r"<[^>]+>", "|", path.read_text())
    assert re.search(r"\|Metric\|+buy_and_hold\|+Strategy\|", text)  # the column order read below
    rows = {}
    for name in ("Cumulative Return", "Sharpe", "Max Drawdown"):
        found = re.search(rf"\|{re.escape(name)}\|+([^|]+)\|+([^|]+)\|", text)
        rows[name] = (found.group(1).strip(), found.group(2).strip())
    return rows


@pytest.mark.slow
def test_tearsheets_show_the_whole_window_and_the_summary_figures(tmp_path):
    """rsi_reversion stays flat on META until 2024-06-06: quantstats' default would start both series there."""
    summary = run(RunConfig.of(agents=("buy_and_hold", "rsi_reversion"), tickers=("META",), bootstrap=0,
                               out=str(tmp_path))).set_index("agent")
    path = tmp_path / "tearsheets" / "rsi_reversion__META.html"
    sheet = _tearsheet_metrics(path)
    assert "matched dates" not in path.read_text()
    for column, agent in enumerate(("buy_and_hold", "rsi_reversion")):
        row = summary.loc[agent]
        assert float(sheet["Cumulative Return"][column].rstrip("%")) == pytest.approx(100 * row["cr"], abs=0.006)
        assert float(sheet["Sharpe"][column]) == pytest.approx(row["sharpe"], abs=0.006)
        assert float(sheet["Max Drawdown"][column].rstrip("%")) == pytest.approx(-100 * row["mdd"], abs=0.006)
    assert summary.loc["buy_and_hold", "cr"] == pytest.approx(0.0907, abs=5e-4)  # not the trimmed +5.3 %


# --- reproducibility ------------------------------------------------------------------------------------


def test_same_seed_and_inputs_give_a_byte_identical_summary(tmp_path, monkeypatch):
    """Every non-LLM agent, SB3 policies trained afresh in each run (separate caches)."""
    from baselines import BASELINES

    outputs = []
    for name in ("first", "second"):
        monkeypatch.setenv("TR1_CACHE", str(tmp_path / name / "cache"))
        cfg = RunConfig.of(agents=tuple(BASELINES), tickers=("NVDA",), start=WINDOW["start"], end=WINDOW["end"],
                           sb3_steps=256, train_years=0.5, bootstrap=200, tearsheets=False, out=str(tmp_path / name))
        summary = run(cfg)
        assert list(summary["agent"]) == list(BASELINES)
        assert (tmp_path / name / "cache" / "sb3").is_dir()  # trained here, not reloaded from the other run
        outputs.append((tmp_path / name / "summary.csv").read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.slow
def test_readme_table_is_the_default_run(tmp_path):
    """The README's default-run figures for every non-LLM agent are what the shipped code computes now
    (regenerate the block with benchmarks.report.readme_table on runs/default/summary.csv)."""
    from baselines import BASELINES
    from benchmarks.report import readme_table

    block = (REPO / "README.md").read_text().split("<!-- default-run-table -->")[1]
    published = {line.split(" | ")[0]: line for line in block.strip().splitlines() if line.startswith("| ")}
    summary = run(RunConfig.of(agents=tuple(BASELINES), bootstrap=0, tearsheets=False, out=str(tmp_path)))
    fresh = {line.split(" | ")[0]: line for line in readme_table(summary).splitlines() if line.startswith("| ")}
    assert {k: published.get(k) for k in fresh} == fresh
