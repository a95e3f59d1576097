import argparse
import json
import pickle

import pytest
import torch
from transformers import AutoModelForCausalLM

from tr1_agent import curriculum
from tr1_agent.cli import register, train_commands
from tr1_agent.configs import DatasetConfig, GRPORunConfig, SFTRunConfig
from tr1_agent.datasets import build_prompts, save, with_completions
from tr1_agent.distill import template_thesis
from tr1_agent.grpo import reward_functions
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import STAGE_WEIGHTS, RewardConfig, score
from tr1_env.scoring.thesis import parse_thesis

CONTEXT = "## Market data\nLast close 101.5; 5-day change +2.10%; RSI stays near 61 after the breakout."
THESIS = """<technical>
### Technical picture: **bullish**
- Momentum has turned up over the week and the close held above its recent range, which argues for further gains. *5-day change +2.10%* `market data`
- A quote the context never contained keeps the claim from counting as evidence in the reward at all. *RSI collapsed below 20 today* `market data`
</technical>
<conclusion>
### Conclusion
- Taken together the price action favours buying the stock for the coming week rather than waiting for a pullback. *Last close 101.5* `market data`
</conclusion>
[[[BUY]]]"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tr1")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_reward_functions_are_the_environment_terms_called_as_trl_calls_them():
    cfg = RewardConfig.for_stage("claims")
    funcs, weights = reward_functions(cfg)
    assert weights == list(STAGE_WEIGHTS["claims"])
    completions = [[{"role": "assistant", "content": THESIS}], [{"role": "assistant", "content": "no thesis"}]]
    kwargs = dict(prompts=[[{"role": "user", "content": "p"}]] * 2, completions=completions,
                  completion_ids=[[1], [2]], trainer_state=None, log_extra=None, log_metric=None,
                  label=["BUY", "SELL"], context=[CONTEXT, CONTEXT], ticker=["X", "X"], modalities=[["market"]] * 2)
    got = [f(**kwargs) for f in funcs]
    for i, c in enumerate(completions):
        want = score(c[0]["content"], Action[kwargs["label"][i]], CONTEXT, cfg)
        assert [g[i] for g in got] == pytest.approx([want.structure, want.evidence, want.decision])
    assert got[2] == [1.0, cfg.invalid_decision]
    assert score(THESIS, Action.BUY, CONTEXT, cfg).n_fabricated == 1  # the quote check is live in training
    assert [f.__name__ for f in funcs] == ["structure", "evidence", "decision"]  # trl's log names
    assert [pickle.loads(pickle.dumps(f)).__name__ for f in funcs] == ["structure", "evidence", "decision"]


def test_reward_functions_share_one_parse_per_completion(monkeypatch):
    from tr1_agent import grpo
    from tr1_env.scoring import rewards

    parsed = []
    monkeypatch.setattr(rewards, "parse_thesis", lambda text, *a: parsed.append(text) or parse_thesis(text, *a))
    grpo._breakdown.cache_clear()
    funcs, _ = reward_functions(RewardConfig())
    texts = [THESIS, THESIS + "\n", "no thesis"]
    for f in funcs:
        f(completions=[[{"role": "assistant", "content": t}] for t in texts], label=["BUY"] * 3, context=[CONTEXT] * 3)
    assert sorted(parsed) == sorted(texts)  # three terms, one parse each


def test_trl_configs_take_the_run_settings_on_cpu(tmp_path):
    from trl import GRPOConfig, SFTConfig

    kw = GRPORunConfig().trainer_kwargs(str(tmp_path))
    if not torch.cuda.is_available():
        assert kw["bf16"] is False and kw["use_cpu"] is True and kw["model_init_kwargs"]["dtype"] == torch.float32
    assert kw["activation_checkpointing"] is False
    cfg = GRPORunConfig(use_vllm=True, vllm_mode="server")
    GRPOConfig(**cfg.trainer_kwargs(str(tmp_path)), num_generations=cfg.num_generations, use_vllm=True,
               vllm_mode="server", reward_weights=[1.0, 0.0, 0.0])
    SFTConfig(**SFTRunConfig().trainer_kwargs(str(tmp_path)), completion_only_loss=True)
    assert SFTRunConfig(lora_r=0).lora() is None
    assert SFTRunConfig(lora_target_modules="q_proj,v_proj").lora().target_modules == {"q_proj", "v_proj"}


def test_train_group_accepts_other_registrars():
    p = argparse.ArgumentParser(prog="tr1")
    sub = p.add_subparsers(dest="command", required=True)
    train_commands(sub).add_parser("flag-ppo")  # a registrar loaded before ours
    register(sub)
    assert p.parse_args(["train", "flag-ppo"]).train_command == "flag-ppo"
    ns = p.parse_args(["train", "grpo", "--output-dir", "x", "--stage", "decision", "--reward-weights", "1", "0", "2",
                       "--num-generations", "4", "--data-tickers", "AAPL", "MSFT"])
    assert (ns.stage, ns.reward_weights, ns.num_generations, ns.data_tickers) == ("decision", [1, 0, 2], 4,
                                                                                   ["AAPL", "MSFT"])


def test_reward_settings_are_flags_of_grpo_and_curriculum():
    from tr1_env.cli import reward_config

    ns = parser().parse_args(["train", "grpo", "--output-dir", "x", "--stage", "claims", "--reward-swap-strong-corners",
                              "--reward-fabricated-penalty", "0.8", "--reward-invalid-decision", "-2",
                              "--reward-missing-conclusion-factor", "0"])
    cfg = reward_config(ns)
    assert (cfg.w_structure, cfg.w_evidence, cfg.w_decision) == STAGE_WEIGHTS["claims"]
    assert (cfg.swap_strong_corners, cfg.fabricated_penalty, cfg.invalid_decision, cfg.missing_conclusion_factor) == (
        True, 0.8, -2.0, 0.0)
    ns = parser().parse_args(["train", "curriculum", "--reward-swap-strong-corners",
                              "--reward-decision-weights", "0", "0", "1"])
    assert reward_config(ns).swap_strong_corners
    assert ns.reward_decision_weights == [0, 0, 1] and ns.reward_claims_weights == STAGE_WEIGHTS["claims"]


@pytest.mark.slow
def test_curriculum_runs_all_stages_and_resumes(tiny_qwen3_path, store, tmp_path, monkeypatch):
    """Three stages end to end on a tiny Qwen3 through ``tr1 train curriculum``; a rerun trains nothing."""
    data = DatasetConfig(tickers=("AAPL",), max_days=10, variants=1, max_chars=200)
    theses = {i: t for i, r in enumerate(build_prompts(data, store)) if (t := template_thesis(r))}
    rows = build_prompts(data, store).select(list(theses))
    distilled = save(with_completions(rows, list(theses.values())), tmp_path / "distilled")
    out = tmp_path / "run"
    argv = ["train", "curriculum", "--model", str(tiny_qwen3_path), "--output-dir", str(out),
            "--sft-data", str(distilled), "--heldout-days", "2", "--augment-prompts", "2", "--augment-samples", "2",
            "--augment-min-reward", "-10", "--generation-batch-size", "4",
            "--data-tickers", "AAPL", "--data-max-days", "10", "--data-variants", "1", "--data-max-chars", "200",
            "--sft-max-steps", "1", "--sft-per-device-train-batch-size", "2", "--sft-max-length", "4096",
            "--grpo-max-steps", "1", "--grpo-per-device-train-batch-size", "2", "--grpo-num-generations", "2",
            "--grpo-max-completion-length", "8", "--grpo-learning-rate", "1e-3"]
    ns = parser().parse_args(argv)
    ns.func(ns)

    records = [json.loads((out / f"{i}-{s}" / "stage_done.json").read_text()) for i, s in enumerate(STAGE_WEIGHTS, 1)]
    assert [r["stage"] for r in records] == list(STAGE_WEIGHTS)
    for i, r in enumerate(records, 1):
        folder = out / f"{i}-{r['stage']}"
        assert r["model"] == str(folder / "grpo" / "merged")
        assert (folder / "sft" / "merged").is_dir()  # stage 1 on distilled data, then on self-augmented data
        assert (folder / "grpo" / "adapter" / "adapter_config.json").exists()
        assert set(r["eval"]) >= {"structure", "evidence", "decision", "total"} and r["eval"]["n"] == 2
        assert json.loads((folder / "eval.json").read_text()) == r["eval"]
        assert r["augment_rows"] == 1
    assert json.loads((out / "eval_base.json").read_text())["n"] == 2
    held = json.loads((out / "data" / "heldout.jsonl").read_text().split("\n")[0])
    train_days = {(r["ticker"], r["date"]) for r in map(json.loads, (out / "data" / "train.jsonl").open())}
    assert (held["ticker"], held["date"]) not in train_days
    final = AutoModelForCausalLM.from_pretrained(records[-1]["model"])  # a plain transformers load
    assert not hasattr(final, "peft_config")

    # the ablations replay side by side in one table: `benchmarks/run.py --model hf:PATH ...`
    from benchmarks.run import RunConfig, run

    specs = (f"hf:{out / '1-structure' / 'sft' / 'merged'}", f"hf:{records[-1]['model']}")
    summary = run(RunConfig.of(agents=("buy_and_hold",), model=specs, tickers=("AAPL",), start="2024-06-03",
                               end="2024-06-14", llm_decision_every=3, local_max_new_tokens=4, bootstrap=0,
                               tearsheets=False, out=str(tmp_path / "bench")))
    assert set(summary["agent"]) == {"buy_and_hold", *specs} and (summary["n_days"] == 9).all()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    for name in ("train_sft", "train_grpo", "generate", "evaluate"):
        monkeypatch.setattr(curriculum, name, refuse)
    (out / "3-decision" / "stage_done.json").unlink()  # as if it died after its last step
    resumed = curriculum.run_curriculum(**_configs(ns))
    assert [{**r, "seconds": 0} for r in resumed] == [{**r, "seconds": 0} for r in records]


def test_curriculum_evaluates_with_the_callers_function(tiny_qwen3_path, tmp_path, monkeypatch):
    """``evaluate_fn`` scores the base and every stage (examples/ablation.py evaluates each model once so)."""
    from tr1_agent.configs import CurriculumConfig

    monkeypatch.setattr(curriculum, "evaluate", lambda *a, **k: pytest.fail("the default evaluation ran"))
    seen = []

    def scores(model, rows, reward):
        seen.append((model, len(rows), reward.w_structure))
        return {"n": len(rows), "mine": 1.0}

    data = DatasetConfig(tickers=("AAPL",), max_days=10, variants=1, max_chars=200)
    cfg = CurriculumConfig(model=str(tiny_qwen3_path), output_dir=str(tmp_path / "run"), stages=("structure",),
                           heldout_days=2, augment_prompts=2, augment_samples=2, augment_min_reward=-10)
    tiny = {"max_steps": 1, "per_device_train_batch_size": 2}
    records = curriculum.run_curriculum(cfg, data, SFTRunConfig(**tiny, max_length=4096),
                                        GRPORunConfig(**tiny, num_generations=2, max_completion_length=8),
                                        evaluate_fn=scores)
    assert [m for m, _, _ in seen] == [str(tiny_qwen3_path), records[0]["model"]]
    assert records[0]["eval"] == {"n": 2, "mine": 1.0} and seen[1][2] == STAGE_WEIGHTS["structure"][0]


def _configs(ns: argparse.Namespace) -> dict:
    from tr1_agent.configs import CurriculumConfig
    from tr1_env.util.cli_args import from_args

    return dict(cfg=from_args(CurriculumConfig, ns), data=from_args(DatasetConfig, ns, "data-"),
                sft=from_args(SFTRunConfig, ns, "sft-"), grpo=from_args(GRPORunConfig, ns, "grpo-"))


def test_generate_samples_per_seed_and_leaves_the_global_rng_alone(tiny_qwen3_path):
    """Rollouts for evaluation and self-augmentation: n samples per prompt, sample i drawn with seed + i."""
    from datasets import Dataset

    from tr1_agent.datasets import messages
    from tr1_agent.grpo import generate

    rows = Dataset.from_list([{"prompt": messages("Write about AAPL.")}, {"prompt": messages("And MSFT, briefly?")}])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sampled = generate(str(tiny_qwen3_path), rows, n=3, max_new_tokens=6, temperature=1.0, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched
    assert [len(s) for s in sampled] == [3, 3] and len(set(sampled[0])) > 1  # three different draws
    shifted = generate(str(tiny_qwen3_path), rows, n=2, max_new_tokens=6, temperature=1.0, seed=6)
    assert [s[:1] for s in shifted] == [s[1:2] for s in sampled]  # the same seed, the same draw
    greedy = generate(str(tiny_qwen3_path), rows, n=2, max_new_tokens=6)
    assert all(a == b for a, b in greedy)
