"""Cross-cutting behaviour as wrappers, so the environments stay thin.

- :class:`StepLog` (either environment) keeps every step's action, reward and info, for a
  DataFrame of a replay or a rollout (equity curves, reward terms per thesis, ...).
- :class:`TextAction` (the Trading env only: the Thesis env takes text already) lets a generative
  LLM act on :class:`~tr1_env.envs.TradingEnv` with its raw completion, read by the env's
  ``action_index``; unparseable text falls back to a fixed action.
- :class:`RandomStart` (the Trading env) cuts a long period into short episodes at random starts,
  so a short training run samples the whole period instead of only its first sessions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from tr1_env.envs.spaces import UnicodeText


class StepLog(gym.Wrapper):
    """Record ``episode, step, action, reward`` and the info of every step; :meth:`frame` returns them."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.rows: list[dict[str, Any]] = []
        self.episode = -1
        self._step = 0

    def reset(self, **kwargs):
        self.episode += 1
        self._step = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.rows.append({"episode": self.episode, "step": self._step,
                          "action": action.item() if isinstance(action, np.generic) else action,
                          "reward": float(reward), **info})
        self._step += 1
        return obs, reward, terminated, truncated, info

    def frame(self) -> pd.DataFrame:
        """One row per step of every episode so far."""
        return pd.DataFrame(self.rows)

    def summary(self) -> pd.DataFrame:
        """Per episode: number of steps and the sum of rewards (FLAG-TRADER's log return net of costs, in the trading
        env)."""
        return self.frame().groupby("episode").agg(steps=("step", "size"), reward=("reward", "sum"))


class TextAction(gym.Wrapper):
    """Take the completion text as the action; ``info["action_parsed"]`` says if it named a valid action."""

    def __init__(self, env: gym.Env, fallback: str = "hold", max_length: int = 100_000):
        super().__init__(env)
        names = [n.lower() for n in env.unwrapped.action_names]
        if fallback.lower() not in names:
            raise ValueError(f"fallback {fallback!r} is not one of {env.unwrapped.action_names}")
        self._fallback = names.index(fallback.lower())
        self.action_space = UnicodeText(max_length)

    def step(self, action: str):
        index = self.env.unwrapped.action_index(action)
        obs, reward, terminated, truncated, info = self.env.step(self._fallback if index is None else index)
        return obs, reward, terminated, truncated, {**info, "action_parsed": index is not None}


class RandomStart(gym.Wrapper):
    """Episodes of ``length`` decisions, each starting flat on a random session of the Trading env's period.

    The start is drawn from the wrapper's own generator, seeded by ``reset(seed=...)``; gymnasium's
    ``TimeLimit`` truncates an episode after ``length`` steps (or the period ends first).
    """

    def __init__(self, env: gym.Env, length: int):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        super().__init__(gym.wrappers.TimeLimit(env, max_episode_steps=length))
        self.length = length
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        env = self.env.unwrapped
        t = int(self._rng.integers(0, max(env.n_steps - self.length, 0) + 1))
        return self.env.reset(seed=seed, options={**(options or {}), "date": env.days[t]})
