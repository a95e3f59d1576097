"""Rate limits, Retry-After and the spending cap of API models, against the local scripted server (127.0.0.1)."""

import json
import math
import time

import pytest
from conftest import make_observation

from tr1_agent.api_limits import CHARS_PER_TOKEN, ApiGovernor, BudgetExhausted
from tr1_agent.llm_agents import OpenAIChatAgent
from tr1_env.core.actions import Action
from tr1_env.execution.llm_cost import model_price

WINDOW = ["--start", "2024-06-03", "--end", "2024-06-21", "--tickers", "NVDA", "AAPL", "--bootstrap", "0",
          "--no-tearsheets", "--llm-decision-every", "7", "--agents", "buy_and_hold", "--model", "gpt-4.1"]


def test_the_governor_paces_requests_and_tokens_per_model():
    governor = ApiGovernor(rpm={"*": 120, "o4-mini": 60}, tpm={"gpt-4.1": 6000})
    delays = [governor.reserve("gpt-4.1-mini", 10, 10).delay for _ in range(5)]  # 2/s, one second's burst
    assert delays[:2] == pytest.approx([0, 0], abs=0.02) and delays[2:] == pytest.approx([0.5, 1.0, 1.5], abs=0.05)
    assert governor.reserve("o4-mini", 10, 10).delay == pytest.approx(0, abs=0.02)  # its own clock
    tokens = [governor.reserve("gpt-4.1", 100, 900).delay for _ in range(3)]  # 100 tokens/s: 10 s a request
    assert tokens == pytest.approx([0, 10, 20], abs=0.1)  # (its 2 requests/s do not bind)


def test_the_budget_refuses_the_call_that_would_pass_it():
    price = model_price("gpt-4.1")
    worst = price.cost(1000, 500)
    governor = ApiGovernor(max_cost_usd=2.5 * worst, spent=0.4 * worst)
    first = governor.reserve("gpt-4.1", 1000, 500)
    assert first.usd == pytest.approx(worst)
    governor.reserve("gpt-4.1", 1000, 500)  # 0.4 spent + 2 in flight: 2.4 of 2.5
    with pytest.raises(BudgetExhausted, match="--max-cost-usd"):
        governor.reserve("gpt-4.1", 1000, 500)
    governor.settle(first, price.cost(1000, 20))  # the reply was short: its reservation is released
    assert governor.spent() == pytest.approx(0.4 * worst + price.cost(1000, 20))
    with pytest.raises(BudgetExhausted):
        ApiGovernor(max_cost_usd=100).reserve("some-unpriced-model", 10, 10)  # an unpriced call never fits


def _agent(server, tmp_path, **kwargs) -> OpenAIChatAgent:
    return OpenAIChatAgent("gpt-4.1", base_url=server.base_url, backoff_base=0.01, cache_dir=tmp_path, **kwargs)


class _Recording(ApiGovernor):
    """The governor, noting when each request it admits may start."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.starts = []

    def reserve(self, model, prompt_tokens, max_tokens):
        reservation = super().reserve(model, prompt_tokens, max_tokens)
        self.starts.append(time.monotonic() + reservation.delay)
        return reservation


def test_an_agent_keeps_to_its_rate_limit(api_server, tmp_path):
    governor = _Recording(rpm={"gpt-4.1": 600})  # 10/s: 10 at once (a second's burst), then one per 0.1 s
    _agent(api_server, tmp_path, concurrency=16, governor=governor).act([make_observation(f"T{i}?") for i in range(20)])
    starts, arrived = sorted(governor.starts), sorted(seen["at"] for seen in api_server.seen)
    assert len(arrived) == 20 and starts[-1] - starts[0] >= 0.95
    assert all(a >= s - 0.01 for a, s in zip(arrived, starts))  # no request reached the server before its slot


def test_retry_after_is_obeyed_on_a_429(api_server, tmp_path):
    api_server.script, api_server.headers = [429], {"Retry-After": "1"}
    t0 = time.monotonic()
    [decision] = _agent(api_server, tmp_path).act([make_observation("AAPL?")])
    assert decision.action == Action.BUY and time.monotonic() - t0 >= 1.0 and len(api_server.seen) == 2


def test_an_agent_stops_before_its_calls_would_pass_the_budget(api_server, tmp_path):
    agent = _agent(api_server, tmp_path, concurrency=1, max_tokens=100)
    price = model_price("gpt-4.1")
    prompts = [f"ticker {i} ?" for i in range(4)]
    reserve = price.cost(math.ceil(sum(len(m["content"]) for m in agent.messages(prompts[0])) / CHARS_PER_TOKEN), 100)
    paid = price.cost(11, 7)  # what the server's usage says a call cost
    agent.governor = ApiGovernor(max_cost_usd=reserve + 2.5 * paid)
    with pytest.raises(BudgetExhausted):
        agent.act([make_observation(p) for p in prompts])
    assert len(api_server.seen) == 3 and agent.governor.spent() == pytest.approx(3 * paid)  # the 4th never sent
    again = _agent(api_server, tmp_path, concurrency=1, max_tokens=100)
    assert [d.meta["cached"] for d in again.act([make_observation(p) for p in prompts])] == [True] * 3 + [False]


def test_a_run_over_budget_exits_1_resumably_and_dry_run_only_estimates(api_server, tmp_path, monkeypatch, capsys):
    from benchmarks.run import main

    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out, argv = tmp_path / "run", [*WINDOW, "--base-url", api_server.base_url]
    assert main([*argv, "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "API cost: $0.00 so far (0 saved decisions); the remaining 4 calls about $" in printed
    assert not out.exists() and api_server.requests == 0  # nothing written, nothing asked
    assert main([*argv, "--out", str(out), "--max-cost-usd", "0.001"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("API cost: $0.00 so far") and "remaining 4 calls" in err[0]
    assert err[-1].startswith("run.py: error: --max-cost-usd 0.001: the next gpt-4.1 call") and "resume" in err[-1]
    assert api_server.requests == 0 and json.loads((out / "config.json").read_text())["status"] == "running"
    assert main([*argv, "--out", str(out), "--max-cost-usd", "1"]) == 0  # resumes and finishes under the budget
    assert api_server.requests == 4
    assert main([*argv, "--out", str(out), "--dry-run"]) == 0
    assert "the remaining 0 calls about $0.00" in capsys.readouterr().out
