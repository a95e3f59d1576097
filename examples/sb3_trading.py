"""Train stable-baselines3 PPO on the numeric trading env, then replay FLAG-TRADER's MSFT test period.

    python examples/sb3_trading.py [--timesteps 20000]

Training uses the sessions before the test window (2016 to September 2020); the evaluation is a
deterministic replay of October 2020 to May 2021 against buy and hold, with InvestorBench's
metrics: CR = sum of daily rewards, Sharpe = annualised mean / std (risk-free 0).
"""

import argparse
import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

import tr1_env  # noqa: E402,F401 - registers tr1/Trading-v0
from tr1_env.data.store import Store  # noqa: E402
from tr1_env.envs.wrappers import StepLog  # noqa: E402


def replay(env: StepLog, policy) -> tuple[float, float]:
    """Cumulative log return and annualised Sharpe of one deterministic episode."""
    obs, _ = env.reset(seed=0)
    truncated = False
    while not truncated:
        obs, _, _, truncated, _ = env.step(policy(obs))
    rewards = env.frame().query(f"episode == {env.episode}")["reward"]
    return rewards.sum(), rewards.mean() / rewards.std() * math.sqrt(252)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--ticker", default="MSFT")
    args = parser.parse_args()
    store = Store()
    train = gym.make("tr1/Trading-v0", store=store, ticker=args.ticker, start="2016-01-01", end="2020-09-30")
    model = PPO("MlpPolicy", train, n_steps=1024, batch_size=128, seed=0, device="cpu", verbose=0)
    model.learn(args.timesteps)

    test = StepLog(gym.make("tr1/Trading-v0", store=store, ticker=args.ticker, start="2020-10-01", end="2021-05-28"))
    ppo_cr, ppo_sharpe = replay(test, lambda obs: int(model.predict(obs, deterministic=True)[0]))
    buy = test.unwrapped.action_names.index("buy")
    bh_cr, bh_sharpe = replay(test, lambda obs: buy)
    print(f"{args.ticker} 2020-10-01..2021-05-28 after {args.timesteps:,} PPO steps")
    print(f"  PPO          CR {100 * ppo_cr:+6.2f}%  Sharpe {ppo_sharpe:+.2f}")
    print(f"  buy & hold   CR {100 * bh_cr:+6.2f}%  Sharpe {bh_sharpe:+.2f}")
    print(test.frame().query("episode == 0")[["date", "position", "reward", "equity"]].tail())


if __name__ == "__main__":
    main()
