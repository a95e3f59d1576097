"""Contamination controls wired in: anonymized envs and datasets, the training guard against every evaluation window."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from tr1_agent.configs import DatasetConfig
from tr1_agent.datasets import build_prompts, check_windows
from tr1_env.cli import main as tr1
from tr1_env.envs.thesis_env import ThesisEnv
from tr1_env.envs.trading_env import TradingEnv
from tr1_env.evaluation.metrics import sharpe, sharpe_diff_ci

ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


def test_thesis_env_serves_and_scores_the_anonymized_prompt(store):
    env = ThesisEnv(store, tickers=["AAPL"], start="2024-03-01", end="2024-04-30", anonymize=True,
                    random_modalities=False)
    prompt, info = env.reset(seed=0)
    assert info["ticker"] == "AAPL" and info["pseudonyms"]["AAPL"] == "TKR-A"  # info keeps the truth for the researcher
    assert not re.search(r"\bAAPL\b|\bApple\b", prompt) and not ISO.search(prompt)
    line = next(ln for ln in env.context.text.split("\n") if ln.startswith("Last close"))
    quote = line.split(";")[0]  # e.g. "Last close 97.17": rebased, so only the anonymized context contains it
    completion = (f"<technical>\n### Technical\n- Momentum is fading here. *{quote}* `market data`\n</technical>\n"
                  "[[[HOLD]]]")
    *_, step_info = env.step(completion)
    assert step_info["n_fabricated"] == 0
    other, info2 = env.reset(seed=1)
    assert info2["pseudonyms"]["AAPL"] == "TKR-A"


def test_trading_env_text_prompt_is_anonymized_per_episode(store):
    env = TradingEnv(store, "MSFT", "2024-06-03", "2024-06-28", obs_mode="text", anonymize=True)
    obs, info = env.reset(seed=0)
    assert "TKR-A" in obs and not re.search(r"\bMSFT\b|Microsoft", obs) and not ISO.search(obs)
    assert "State at the close of D (session 1" in obs
    first_row = next(row for row in obs.split("\n") if row.startswith("| D-"))
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
    assert out.startswith("Anonymized context (strict):") and "Company A (TKR-A): sector and industry withheld" in out
    assert not ISO.search(out) and "Apple" not in out
    assert np.isclose(float(re.search(r"\| D-\d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", out).group(1)), 100)
    tr1(["context", "--ticker", "AAPL", "--date", "2024-06-10", "--modalities", "fundamentals", "--anonymize", "names",
         "--context-only"])
    out = capsys.readouterr().out
    assert out.startswith("Anonymized context:") and "Company A (TKR-A): Technology / Consumer Electronics." in out


@pytest.mark.slow
def test_harness_flags_cutoffs_and_reports_memorisation_offline(tiny_qwen3_path, tmp_path, monkeypatch, store):
    """A random tiny Qwen3 on the transformers path, replayed plain and anonymized (offline stand-in for an LLM)."""
    from benchmarks.run import RunConfig, run

    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    spec = f"hf:{tiny_qwen3_path}"
    cfg = RunConfig.of(agents=("buy_and_hold",), model=(spec,), memorisation=True, cutoff=("2024-11-15",),
                       tickers=("AAPL", "MSFT"), start="2024-10-01", end="2024-12-31", llm_decision_every=5,
                       local_max_new_tokens=4, llm_max_chars=600, bootstrap=100, tearsheets=False,
                       out=str(tmp_path / "run"))
    summary = run(cfg).set_index(["agent", "ticker"])
    days = store.trading_days("AAPL", "2024-10-01", "2024-12-31")
    decided = days[:-1][::5]
    share = sum(d <= np.datetime64("2024-11-15") for d in decided) / len(decided)  # 7 of 13 decision days
    for agent in (spec, spec + "+anon"):
        row = summary.loc[(agent, "AAPL")]
        assert (row["cutoff"], row["cutoff_basis"]) == ("2024-11-15", "--cutoff")
        assert row["pre_cutoff_share"] == pytest.approx(share) and not row["cutoff_flagged"]
    assert summary.loc[("buy_and_hold", "AAPL"), "cutoff_basis"] == ""  # only LLM rows carry the flag
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").set_index("agent")
    assert board.loc[spec, "pre_cutoff_share"] == pytest.approx(share)  # both tickers decide on the same days
    assert np.isnan(board.loc["buy_and_hold", "pre_cutoff_share"])
    page = (tmp_path / "run" / "leaderboard.html").read_text()
    assert "decision days before cutoff" in page and f"{100 * share:.0f}%" in page
    memo = pd.read_csv(tmp_path / "run" / "memorisation.csv")
    paired = memo[memo["comparison"] == "anonymized - plain"]
    assert set(paired["ticker"]) == {"AAPL", "MSFT", "all"} and (paired["agent"] == spec).all()
    assert paired["agreement"].between(0, 1).all() and (paired["n_a"] == paired["n_b"]).all()
    split = memo[memo["comparison"] == "pre - post cutoff"]
    assert set(split["agent"]) == {spec, spec + "+anon"} and set(split["ticker"]) == {"AAPL", "MSFT", "all"}
    finite = memo.dropna(subset=["lo", "hi"])
    assert ((finite["lo"] <= finite["diff"] + 1e-12) & (finite["diff"] <= finite["hi"] + 1e-12)).all()
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "## Contamination: training cutoffs" in md and "## Memorisation checks" in md
    assert "anonymized contexts too (level strict: tr1_env.context.anonymize)" in md  # the default level, said
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["pseudonyms"]["AAPL"]["AAPL"] == "TKR-A" and config["cutoffs"][spec]["basis"] == "--cutoff"


def test_anonymized_observations_and_post_cutoff_windows(store, tmp_path):
    from benchmarks.run import Observations, RunConfig, UsageError, main, post_cutoff, run
    from tr1_env.contamination.cutoffs import model_cutoff

    obs = Observations(store).get("AAPL", np.datetime64("2024-06-10"), 1500, 0.0, anonymized=True)
    assert "TKR-A" in obs.prompt and not re.search(r"\bAAPL\b|Apple", obs.prompt) and not ISO.search(obs.prompt)
    moved = post_cutoff(RunConfig(), store, {"gpt-4.1": model_cutoff("gpt-4.1")})
    # June 1 2024 cutoff, same 91-day window
    assert (moved.window.start, moved.window.end) == ("2024-06-02", "2024-09-01")
    with pytest.raises(UsageError, match="the store ends 2026-"):
        post_cutoff(RunConfig(), store, {"x": model_cutoff("x", "2030-01-01")})
    with pytest.raises(UsageError, match="no training cutoff known for my-model"):
        post_cutoff(RunConfig(), store, {"my-model": model_cutoff("my-model")})
    with pytest.raises(UsageError, match="no data after the training cutoff"):
        run(RunConfig.of(agents=(), model=("gpt-4.1",), cutoff=("gpt-4.1=2030-01-01",), post_cutoff=True,
                         base_url="http://127.0.0.1:9/v1", out=str(tmp_path)))
    # unusable cutoff arguments exit 2, like any other argument no replay can use
    assert main(["--agents", "buy_and_hold", "--cutoff", "bogus", "--out", str(tmp_path / "bad")]) == 2


def test_sharpe_difference_ci_paired_and_unpaired():
    rng = np.random.default_rng(0)
    x = rng.normal(0.001, 0.01, 250)
    assert sharpe_diff_ci(x, x, n_boot=200) == (0.0, 0.0, 0.0)  # paired: identical days cancel exactly
    diff, lo, hi = sharpe_diff_ci(x, -x, rf=0.0, n_boot=500)
    assert diff == pytest.approx(2 * sharpe(x, 0.0)) and lo < diff < hi  # Sharpe(-x) = -Sharpe(x) at rf 0
    d2, lo2, hi2 = sharpe_diff_ci(x[:100], x[100:], rf=0.0, n_boot=500, paired=False)
    assert d2 == pytest.approx(sharpe(x[:100], 0.0) - sharpe(x[100:], 0.0)) and lo2 < hi2
    with pytest.raises(ValueError, match="aligned"):
        sharpe_diff_ci(x[:100], x[100:])
