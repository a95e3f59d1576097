"""Contamination controls wired in: anonymized envs and datasets, the training guard against every evaluation window."""

import json
import re

import numpy as np
import pytest

from tr1_agent.configs import DatasetConfig
from tr1_agent.datasets import build_prompts, check_windows
from tr1_env.cli import main as tr1
from tr1_env.envs.thesis_env import ThesisEnv
from tr1_env.envs.trading_env import TradingEnv

ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


def test_thesis_env_serves_and_scores_the_anonymized_prompt(store):
    env = ThesisEnv(store, tickers=["AAPL"], start="2024-06-01", end="2024-07-31", anonymize=True,
                    random_modalities=False)
    prompt, info = env.reset(seed=0)
    assert info["ticker"] == "AAPL" and info["pseudonyms"]["AAPL"] == "TKR-A"  # info keeps the truth for the researcher
    assert not re.search(r"\bAAPL\b|\bApple\b", prompt) and not ISO.search(prompt)
    line = next(l for l in env.context.text.split("\n") if l.startswith("Last close"))
    quote = line.split(";")[0]  # e.g. "Last close 97.17": rebased, so only the anonymized context contains it
    completion = f"<technical>\n### Technical\n- Momentum is fading here. *{quote}* `market data`\n</technical>\n[[[HOLD]]]"
    *_, step_info = env.step(completion)
    assert step_info["n_fabricated"] == 0
    other, info2 = env.reset(seed=1)
    assert info2["pseudonyms"]["AAPL"] == "TKR-A"


def test_trading_env_text_prompt_is_anonymized_per_episode(store):
    env = TradingEnv(store, "MSFT", "2024-06-03", "2024-06-28", obs_mode="text", anonymize=True)
    obs, info = env.reset(seed=0)
    assert "TKR-A" in obs and not re.search(r"\bMSFT\b|Microsoft", obs) and not ISO.search(obs)
    assert "State at the close of D (session 1" in obs
    first_row = next(l for l in obs.split("\n") if l.startswith("| D-"))
    assert first_row.split("|")[2].strip() == "100.00"  # the first close shown
    assert info["pseudonyms"]["MSFT"] == "TKR-A"
    obs2, *_ = env.step(1)
    plain = TradingEnv(store, "MSFT", "2024-06-03", "2024-06-28", obs_mode="text")
    plain.reset(seed=0)
    plain_obs, *_ = plain.step(1)
    ret = lambda text: re.findall(r"\| D[-\d]* \| [\d.,]+ \| ([-+\d.]+) \|", text)  # noqa: E731
    assert ret(obs2) == re.findall(r"\| \d{4}-\d{2}-\d{2} \| [\d.,]+ \| ([-+\d.]+) \|", plain_obs)


def test_datasets_anonymize_and_refuse_any_evaluation_window(store):
    cfg = DatasetConfig(tickers=("NVDA",), start="2024-01-01", end="2024-05-31", max_days=2, variants=2,
                        max_chars=2000, anonymize=True)
    rows = build_prompts(cfg, store)
    for row in rows:
        user = row["prompt"][1]["content"]
        assert row["ticker"] == "NVDA" and not re.search(r"\bNVDA\b|Nvidia", user, re.IGNORECASE)
        assert not ISO.search(user) and row["context"] in user
        assert json.loads(row["pseudonyms"])["NVDA"] == "TKR-A"
    assert rows["prompt"] == build_prompts(cfg, store)["prompt"]  # seeded per row
    walk_forward = ("2024-09-01:2024-11-30", "2024-03-01:2024-05-31")
    with pytest.raises(ValueError, match="overlaps the evaluation window 2024-03-01..2024-05-31"):
        check_windows(DatasetConfig(start="2024-01-01", end="2024-04-30", eval_windows=walk_forward))
    check_windows(DatasetConfig(start="2024-01-01", end="2024-02-28", eval_windows=walk_forward))
    with pytest.raises(ValueError, match="expected START:END"):
        check_windows(DatasetConfig(eval_windows=("2024-09-01",)))


def test_cli_context_anonymize(capsys):
    tr1(["context", "--ticker", "AAPL", "--date", "2024-06-10", "--modalities", "market,fundamentals",
         "--anonymize", "--context-only"])
    out = capsys.readouterr().out
    assert out.startswith("Anonymized context:") and "Company A (TKR-A)" in out
    assert not ISO.search(out) and "Apple" not in out
    assert np.isclose(float(re.search(r"\| D-\d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", out).group(1)), 100)
