"""FLAG-TRADER: the partially frozen LLM actor-critic, the PPO core (checked against stable-baselines3), the run,
the checkpoint and the replay agent. Tiny random Qwen3s for the mechanics, SmolLM2 for the CPU proof."""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tr1_agent.cli import register_flag_ppo
from tr1_agent.flag_trader.config import FlagPPOConfig, PPOConfig
from tr1_agent.flag_trader.policy import FlagTraderPolicy
from tr1_agent.flag_trader.ppo import PPO, compute_gae
from tr1_env.core.actions import DEFAULT_WEIGHTS, Action
from tr1_env.core.agents import Observation
from tr1_env.envs.trading_env import TradingEnv
from tr1_env.evaluation.metrics import investorbench
from tr1_env.execution import Execution

torch.set_num_threads(1)

SHORT = dict(obs_mode="text", window=2, news_items=1)  # ~800 tiny-tokenizer tokens per prompt
NAMES = ("sell", "hold", "buy")


@pytest.fixture
def tiny_policy(tiny_qwen3_path) -> FlagTraderPolicy:
    """Two decoder layers: the lower one frozen, the top one and the final norm trainable."""
    torch.manual_seed(0)
    # the tiny tokenizer spells " sell" and " hold" both from "Ġ", so the token head cannot tell them apart
    return FlagTraderPolicy.from_pretrained(str(tiny_qwen3_path), NAMES, trainable_layers=1, head="linear",
                                            device="cpu")


def short_env(store, start="2020-07-01", end="2020-07-10", **kw) -> TradingEnv:
    return TradingEnv(store, "MSFT", start, end, **{**SHORT, **kw})


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


# --- the network -------------------------------------------------------------------------------------------------

def test_frozen_and_trainable_split(tiny_policy):
    lm = tiny_policy.backbone
    assert not lm.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in lm.layers[0].parameters())
    assert all(p.requires_grad for p in lm.layers[1].parameters())
    assert lm.norm.weight.requires_grad
    assert tiny_policy.value_head.weight.requires_grad and tiny_policy.policy_head.weight.requires_grad
    trainable, total = tiny_policy.parameter_counts()
    assert 0 < trainable < total
    assert trainable == sum(p.numel() for p in tiny_policy.trainable_state().values())


def test_update_moves_trainable_weights_only(tiny_policy, store):
    cfg = PPOConfig(rollout_steps=4, minibatch_size=2, update_epochs=2, lr=1e-3, target_kl=0.0)
    ppo = PPO(tiny_policy, [short_env(store)], cfg)
    before = snapshot(tiny_policy)
    stats = ppo.update(ppo.collect())
    after = snapshot(tiny_policy)
    trainable = set(tiny_policy.trainable_state())
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (name in trainable), name
    assert stats["epochs"] == 2 and all(np.isfinite(stats[k]) for k in ("policy_loss", "value_loss", "approx_kl"))


def test_heads_shapes_and_batch_invariance(tiny_policy, store):
    env = short_env(store)
    prompts = [env.reset()[0], "a much shorter prompt", env.step(2)[0]]
    logits, values = tiny_policy(tiny_policy.encode(prompts))
    assert logits.shape == (3, 3) and values.shape == (3,)
    assert logits.dtype == values.dtype == torch.float32
    for i, prompt in enumerate(prompts):  # left padding and batch mates change nothing
        solo_logits, solo_values = tiny_policy(tiny_policy.encode([prompt]))
        torch.testing.assert_close(solo_logits[0], logits[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(solo_values[0], values[i], atol=1e-5, rtol=1e-5)


def test_invalid_actions_have_zero_probability(tiny_policy, store):
    with torch.no_grad():
        tiny_policy.policy_head.weight.normal_()  # a non-uniform policy
    features = tiny_policy.encode([short_env(store).reset()[0]] * 2)
    mask = torch.tensor([[False, True, True], [True, True, False]])
    logits, _ = tiny_policy(features, mask)
    dist = torch.distributions.Categorical(logits=logits)
    assert dist.probs[0, 0].item() == 0.0 and dist.probs[1, 2].item() == 0.0
    draws = dist.sample((2000,))
    assert not (draws[:, 0] == 0).any() and not (draws[:, 1] == 2).any()
    assert torch.isfinite(dist.entropy()).all()


class NoSell(gym.Wrapper):
    """Forbids "sell" through ``info["action_mask"]``, as an env with a long-only rule would."""

    MASK = np.array([False, True, True])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "action_mask": self.MASK}

    def step(self, action):
        assert action != 0, "a masked action was sampled"
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "action_mask": self.MASK}


def test_ppo_never_samples_a_masked_action(tiny_policy, store):
    with torch.no_grad():
        tiny_policy.policy_head.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))  # sell would be the favourite
    ppo = PPO(tiny_policy, [NoSell(short_env(store))], PPOConfig(rollout_steps=8, minibatch_size=4, lr=1e-3))
    rollout = ppo.collect()
    assert (rollout.actions != 0).all() and torch.isfinite(rollout.logprobs).all()
    ppo.update(rollout)
    assert all(torch.isfinite(p).all() for p in tiny_policy.trainable_state().values())


def test_token_head_needs_distinct_action_tokens(tiny_qwen3_path):
    with pytest.raises(ValueError, match="head='linear'"):
        FlagTraderPolicy.from_pretrained(str(tiny_qwen3_path), NAMES, trainable_layers=1, head="tokens")


def test_checkpoint_round_trip(tiny_policy, tmp_path):
    with torch.no_grad():
        for p in tiny_policy.trainable_state().values():
            p.add_(0.1 * torch.randn_like(p))
    tiny_policy.save(tmp_path / "ckpt", note="x")
    loaded, meta = FlagTraderPolicy.from_checkpoint(tmp_path / "ckpt", device="cpu")
    assert meta["note"] == "x" and meta["action_names"] == list(NAMES)
    prompts = ["State at the close of 2020-07-01", "hold or buy?"]
    for a, b in zip(tiny_policy(tiny_policy.encode(prompts)), loaded(loaded.encode(prompts))):
        torch.testing.assert_close(a, b)


def test_calibration_evens_out_the_prior_and_travels_with_the_checkpoint(tiny_policy, store, tmp_path):
    """After ``calibrate``, every action has the same mean log-probability over the calibration prompts, while
    the policy still tells the prompts apart; the fixed bias is saved and loaded with the weights."""
    with torch.no_grad():
        tiny_policy.policy_head.weight.normal_(0, 0.5)  # a prior to remove
        tiny_policy.policy_head.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
    env = short_env(store)
    prompts = [env.observation_at(day, position) for day in env.days[:-1] for position in (0.0, 1.0)]
    before = tiny_policy(tiny_policy.encode(prompts))[0]
    bias = tiny_policy.calibrate(prompts, batch_size=3)
    after = tiny_policy(tiny_policy.encode(prompts))[0]
    assert before.log_softmax(-1).mean(0).std() > 0.5
    mean_logp = after.log_softmax(-1).mean(0)
    torch.testing.assert_close(mean_logp, mean_logp.mean().expand(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(after, before + bias, atol=1e-5, rtol=0)  # one shift for all: differences kept
    tiny_policy.save(tmp_path / "ckpt")
    loaded, meta = FlagTraderPolicy.from_checkpoint(tmp_path / "ckpt", device="cpu")
    torch.testing.assert_close(loaded.logit_bias, tiny_policy.logit_bias)
    torch.testing.assert_close(loaded(loaded.encode(prompts[:2]))[0], tiny_policy(tiny_policy.encode(prompts[:2]))[0])


# --- the PPO core against stable-baselines3 ----------------------------------------------------------------------

def test_gae_matches_sb3_rollout_buffer():
    from stable_baselines3.common.buffers import RolloutBuffer

    T, N, gamma, lam = 16, 3, 0.97, 0.9
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(T, N)).astype(np.float32), rng.normal(size=(T, N)).astype(np.float32)
    starts = (rng.random((T, N)) < 0.2).astype(np.float32)
    starts[0] = 1
    last_values, last_dones = rng.normal(size=N).astype(np.float32), np.array([True, False, False])

    buffer = RolloutBuffer(T, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), "cpu", lam, gamma, N)
    for t in range(T):
        buffer.add(np.zeros((N, 1)), np.zeros((N, 1)), rewards[t], starts[t], torch.as_tensor(values[t]),
                   torch.zeros(N))
    buffer.compute_returns_and_advantage(torch.as_tensor(last_values), last_dones)

    adv, ret = compute_gae(*map(torch.as_tensor, (rewards, values, starts, last_values)),
                           torch.as_tensor(last_dones, dtype=torch.float32), gamma, lam)
    np.testing.assert_allclose(adv.numpy(), buffer.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), buffer.returns, rtol=1e-5, atol=1e-5)


def _linear(inputs: int, outputs: int, gain: float) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class MlpActorCritic(nn.Module):
    """SB3's default MlpPolicy (separate 64-64 tanh nets, orthogonal init) behind the two PPO calls."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.pi = nn.Sequential(_linear(obs_dim, 64, 2 ** 0.5), nn.Tanh(), _linear(64, 64, 2 ** 0.5), nn.Tanh(),
                                _linear(64, n_actions, 0.01))
        self.vf = nn.Sequential(_linear(obs_dim, 64, 2 ** 0.5), nn.Tanh(), _linear(64, 64, 2 ** 0.5), nn.Tanh(),
                                _linear(64, 1, 1.0))

    def encode(self, observations):
        return [torch.as_tensor(o, dtype=torch.float32) for o in observations]

    def forward(self, features, action_mask=None):
        x = torch.stack(list(features))
        logits = self.pi(x)
        if action_mask is not None:
            logits = logits.masked_fill(~action_mask, float("-inf"))
        return logits, self.vf(x).squeeze(-1)


def _cartpole_score(act) -> float:
    env = gym.make("CartPole-v1")
    total = 0.0
    for episode in range(10):
        obs, _ = env.reset(seed=1000 + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
    return total / 10


@pytest.mark.slow
def test_ppo_learns_cartpole_like_sb3():
    """Same hyperparameters, same budget: our loss/GAE code with SB3's network learns as far as SB3's PPO."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    steps, hp = 12_288, dict(gamma=0.99, gae_lambda=0.95, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
    torch.manual_seed(0)
    mlp = MlpActorCritic(4, 2)
    ours = PPO(mlp, [gym.make("CartPole-v1") for _ in range(4)],
               PPOConfig(rollout_steps=128, update_epochs=4, minibatch_size=64, lr=3e-4, clip_coef=0.2, target_kl=0.0,
                         reward_scale=1.0, **hp))
    ours.learn(steps)
    sb3 = SB3PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=0), n_steps=128, batch_size=64, n_epochs=4,
                 learning_rate=3e-4, clip_range=0.2, seed=0, device="cpu", **hp)
    sb3.learn(steps)

    with torch.no_grad():
        our_score = _cartpole_score(lambda o: int(mlp([torch.as_tensor(o)])[0].argmax()))
    sb3_score = _cartpole_score(lambda o: int(sb3.predict(o, deterministic=True)[0]))
    assert sb3_score > 150, sb3_score  # a random policy scores ~20
    assert our_score > 0.75 * sb3_score, (our_score, sb3_score)


# --- the run, its checkpoint, the agent, the command -------------------------------------------------------------

def test_train_then_agent_replays_the_test_window(tiny_qwen3_path, store, tmp_path):
    cfg = FlagPPOConfig(model=str(tiny_qwen3_path), trainable_layers=1, head="linear", tickers=("MSFT",),
                        train_start="2020-07-01", train_end="2020-07-10", test_start="2020-10-01",
                        test_end="2020-10-09", window=2, news_items=1, rollout_steps=4, minibatch_size=4,
                        total_timesteps=8, save_every=1, device="cpu", output_dir=str(tmp_path / "run"),
                        calibrate=True, execution=Execution("next-open"))  # the other fill travels with the checkpoint
    from tr1_agent.flag_trader.ppo import train_flag_trader

    report = train_flag_trader(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(json.loads((tmp_path / "run" / "flag_trader.json").read_text())["logit_bias"]) == 3
    assert saved["global_step"] == 8 and len(saved["train_history"]) == 2
    test = saved["test"]["MSFT"]
    assert set(test) >= {"cr", "sharpe", "av", "buy_and_hold", "cr_net_of_costs"} and test["days"] == 6
    assert 0 < report["trainable_share"] < 1

    from tr1_agent.flag_trader.agent import FlagTraderAgent

    agent = FlagTraderAgent(tmp_path / "run", device="cpu")
    agent.fit(store, ["MSFT"], cfg.test_start, cfg.test_end)  # as benchmarks/run.py: the replay window
    env = TradingEnv(store, "MSFT", cfg.test_start, cfg.test_end, execution=cfg.execution, **SHORT)
    positions, returns = replay(agent, env, every=1)
    assert investorbench(positions, returns)["cr"] == pytest.approx(test["cr"])  # the same greedy policy
    agent.reset("MSFT")
    replay(agent, TradingEnv(store, "MSFT", cfg.test_start, cfg.test_end, execution=cfg.execution, **SHORT), every=2)

    # and the harness replays the checkpoint next to buy-and-hold: `benchmarks/run.py --model flag:PATH`
    from benchmarks.run import RunConfig, run

    summary = run(RunConfig.of(agents=("buy_and_hold",), model=(f"flag:{tmp_path / 'run'}",), tickers=("MSFT",),
                               start=cfg.test_start, end=cfg.test_end, llm_decision_every=1, bootstrap=0,
                               tearsheets=False, out=str(tmp_path / "bench")))
    assert set(summary["agent"]) == {"buy_and_hold", f"flag:{tmp_path / 'run'}"}
    assert (summary["n_days"] == 6).all()


def replay(agent, env: TradingEnv, every: int) -> tuple[list[float], list[float]]:
    """Drive ``env`` as the benchmark harness would: the agent decides every ``every`` sessions, holds in between.

    Checks on each decision day that the agent's prompt is the env's own observation of that day.
    """
    text, info = env.reset()
    positions, returns, done, session = [], [], False, 0
    while not done:
        action = env.targets.index(env.position)  # hold
        if session % every == 0:
            obs = Observation("MSFT", info["date"], "", "", np.zeros(0), (), pd.DataFrame(), pd.DataFrame(),
                              env.position)
            assert agent.prompts([obs]) == [text]
            decision = agent.act([obs])[0]
            assert decision.action in (Action.STRONG_SELL, Action.HOLD, Action.STRONG_BUY)
            action = env.targets.index(DEFAULT_WEIGHTS[decision.action])
        text, _, _, done, info = env.step(action)
        positions.append(info["position"])
        returns.append(np.expm1(info["log_return"]))
        session += 1
    return positions, returns


def test_command_flags_mirror_the_config():
    parser = argparse.ArgumentParser()
    register_flag_ppo(parser.add_subparsers(dest="group"))
    ns = parser.parse_args(["train", "flag-ppo", "--tickers", "MSFT", "JNJ", "--trainable-layers", "4", "--no-norm-adv",
                            "--fill", "next-open"])
    from tr1_env.util.cli_args import from_args

    assert from_args(FlagPPOConfig, ns) == FlagPPOConfig(tickers=("MSFT", "JNJ"), trainable_layers=4, norm_adv=False,
                                                         execution=Execution("next-open"))
    assert ns.func.__name__ == "cmd_flag_ppo"


# --- the CPU proof with the paper's model size -------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_token_head_and_ppo_updates(smollm2_dir, store):
    policy = FlagTraderPolicy.from_pretrained(str(smollm2_dir), NAMES, trainable_layers=2, device="cpu")
    trainable, total = policy.parameter_counts()
    assert 0.04 < trainable / total < 0.07  # two of 30 layers + the final norm + heads (~5.3%)

    env = short_env(store, window=1, news_items=0)
    prompt = env.reset()[0]
    logits, _ = policy(policy.encode([prompt]))
    batch = policy.tokenizer(policy.render(prompt), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        vocab_logits = policy.lm(**batch).logits[0, -1]
    ids = [policy.tokenizer.convert_tokens_to_ids("Ġ" + n) for n in NAMES]
    torch.testing.assert_close(logits[0], vocab_logits[ids], atol=1e-4, rtol=1e-4)  # the LM's own next-token logits

    before = snapshot(policy)
    ppo = PPO(policy, [env], PPOConfig(rollout_steps=3, minibatch_size=3, update_epochs=2, lr=1e-4, target_kl=0.0))
    history = ppo.learn(6)
    assert len(history) == 2 and all(np.isfinite(h["policy_loss"]) for h in history)
    moved = {name for name, p in policy.named_parameters() if not torch.equal(p, before[name])}
    assert moved == set(policy.trainable_state())


def test_random_start_cuts_the_warm_up_into_seeded_episodes(store):
    from tr1_env.envs.wrappers import RandomStart

    def starts(seed: int) -> list:
        env = RandomStart(short_env(store, end="2020-09-30", window=1, news_items=0), length=5)
        out = [env.reset(seed=seed)[1]["date"]]
        for _ in range(3):
            steps, done = 0, False
            while not done:
                _, _, terminated, truncated, _ = env.step(2)
                steps, done = steps + 1, terminated or truncated
            assert steps == 5
            out.append(env.reset()[1]["date"])
        return out

    assert starts(0) == starts(0) and len(set(starts(0))) > 1  # reproducible, and not always the first session
    assert min(starts(1)) >= pd.Timestamp("2020-07-01")


# --- examples/flag_trader_paper.py: seeds, harness replay, the table, resuming ------------------------------------

def test_paper_script_tabulates_seeds_and_resumes(tiny_qwen3_path, store, tmp_path, monkeypatch):
    from dataclasses import replace

    import benchmarks.run
    import examples.flag_trader_paper as paper
    import tr1_agent.flag_trader.ppo as ppo

    argv = ["--model", str(tiny_qwen3_path), "--head", "linear", "--trainable-layers", "1", "--seeds", "0", "1",
            "--train-end", "2020-07-10", "--test-end", "2020-10-09", "--window", "2", "--news-items", "1",
            "--total-timesteps", "4", "--rollout-steps", "4", "--minibatch-size", "4", "--bootstrap", "20",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    results = paper.main(argv)
    assert [r["seed"] for r in results] == [0, 1] and all(r["days"] == 6 and r["global_step"] == 4 for r in results)
    bh = results[0]["buy_and_hold"]
    closes = store.closes("MSFT").loc["2020-10-01":"2020-10-09"]
    assert bh["long"] == 6 and bh["ib_cr"] == pytest.approx(np.log(closes.iloc[-1] / closes.iloc[0]))
    assert all(r["ib_sharpe_lo"] <= r["ib_sharpe_hi"] for r in results)
    assert "mean +- std (2 seeds)" in (tmp_path / "out" / "results.md").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("a finished seed ran again")

    monkeypatch.setattr(ppo, "train_flag_trader", fail)
    monkeypatch.setattr(benchmarks.run, "run", fail)
    assert paper.main(argv) == results  # both seeds come from their folders
    with pytest.raises(SystemExit, match="other settings"):
        paper.main([*argv, "--lr", "1e-3"])

    cfg = FlagPPOConfig(tickers=("MSFT",))  # the paper's windows: its numbers join the table
    assert "| paper: FLAG-TRADER | 20.1 | 1.37 |" in paper.table(results, cfg)
    assert "paper" not in paper.table(results, replace(cfg, train_end="2020-07-10"))


def test_paper_script_presets():
    """``--preset paper`` is `tr1 train flag-ppo`'s own defaults; the CPU preset changes only what it names."""
    from dataclasses import asdict

    import examples.flag_trader_paper as paper
    from tr1_env.util.cli_args import from_args

    def config(preset: str) -> dict:
        parser = paper.build_parser()
        parser.set_defaults(**paper.PRESETS[preset])
        return asdict(from_args(FlagPPOConfig, parser.parse_args(["--preset", preset]), skip=paper._SKIP))

    default, cpu = asdict(FlagPPOConfig()), config("cpu")
    assert config("paper") == default
    changed = {k for k, v in paper.PRESETS["cpu"].items() if default[k] != v}
    assert {k for k in default if cpu[k] != default[k]} == changed
    assert all(cpu[k] == v for k, v in paper.PRESETS["cpu"].items())
