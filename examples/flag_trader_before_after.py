"""FLAG-TRADER on CPU: SmolLM2-135M's greedy policy over one month, a short PPO run on that month, the policy again.

    OMP_NUM_THREADS=1 python examples/flag_trader_before_after.py            # ~8 min on one CPU thread
    OMP_NUM_THREADS=1 python examples/flag_trader_before_after.py --updates 2 --end 2020-07-10   # a quick look

The episode reward is in-sample (the month the policy trains on): it shows the optimisation at work,
not that the policy generalises; ``tr1 train flag-ppo`` trains on the warm-up window and reports
InvestorBench metrics on the later test window.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from tr1_agent.flag_trader.config import FlagPPOConfig
from tr1_agent.flag_trader.policy import FlagTraderPolicy
from tr1_agent.flag_trader.ppo import PPO, run_episodes
from tr1_env.data.store import Store
from tr1_env.envs.trading_env import TradingEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--ticker", default="TSLA")
    parser.add_argument("--start", default="2020-07-01")
    parser.add_argument("--end", default="2020-07-31")
    parser.add_argument("--updates", type=int, default=8, help="PPO updates, one episode (the month) each")
    parser.add_argument("--trainable-layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-5, help="a short run: 3x the default of tr1 train flag-ppo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per PPO update
    torch.manual_seed(0)

    store = Store()

    def make_env() -> TradingEnv:  # a short prompt (3 sessions, 2 headlines): ~500 SmolLM2 tokens
        return TradingEnv(store, args.ticker, args.start, args.end, obs_mode="text", window=3, news_items=2)

    env = make_env()
    policy = FlagTraderPolicy.from_pretrained(args.model, env.action_names, args.trainable_layers, device="cpu")
    trainable, total = policy.parameter_counts()
    print(f"{args.model}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)")

    def greedy_episode(label: str) -> float:
        start = time.perf_counter()
        episode = run_episodes(policy, [make_env()])[0]
        elapsed = time.perf_counter() - start
        counts = dict(zip(policy.action_names, np.bincount(episode["actions"], minlength=3).tolist()))
        reward = float(np.sum(episode["rewards"]))
        print(f"{label}: greedy episode reward {reward:+.4f} over {len(episode['rewards'])} days, actions {counts} "
              f"({len(episode['rewards']) / elapsed:.2f} steps/s)")
        return reward

    before = greedy_episode("before")
    cfg = FlagPPOConfig(rollout_steps=env.n_steps, minibatch_size=7, lr=args.lr)  # one episode per update
    ppo = PPO(policy, [env], cfg, torch.optim.Adam(policy.param_groups(cfg.lr, cfg.head_lr), eps=1e-5))
    start = time.perf_counter()
    history = ppo.learn(args.updates * env.n_steps)
    elapsed = time.perf_counter() - start
    for h in history:
        print(f"  update {h['update']}: sampled episode reward {h['episode_return']:+.4f}, entropy {h['entropy']:.3f}, "
              f"approx KL {h['approx_kl']:.4f}, clip fraction {h['clip_fraction']:.2f}")
    print(f"training: {ppo.global_step} env steps in {elapsed:.0f} s ({ppo.global_step / elapsed:.2f} steps/s, "
          "rollouts and updates)")
    after = greedy_episode("after")
    closes = env.features["close"].loc[env.days]
    buy_and_hold = float(np.log(closes.iloc[-1] / closes.iloc[0]))
    print(f"mean episode reward before {before:+.4f}, after {after:+.4f} (buy and hold, no costs: {buy_and_hold:+.4f})")


if __name__ == "__main__":
    main()
