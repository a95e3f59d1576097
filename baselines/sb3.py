"""stable-baselines3 PPO and A2C, trained on the numeric Trading env over a pre-period, replayed as agents.

``fit`` trains one policy per ticker (or, with ``pool``, one policy on a vector env of every ticker: the
walk-forward default, one fit per window) on the ``train_years`` before the replay window (ending the day
before it starts, so no replay price is seen) and saves it under a cache folder keyed by algorithm,
ticker, period, steps, execution and seed; the next replay with the same key reloads it. ``act`` feeds the
policy the env's own observation of the decision day (``observation_at`` of a Trading env over the
replay window, for that session and position), so training and replay observations cannot drift apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tr1_env.core.actions import DEFAULT_WEIGHTS
from tr1_env.core.agents import Agent, Decision, Observation
from tr1_env.envs.trading_env import ACTION_MODES, TradingEnv
from tr1_env.execution import Execution
from tr1_env.util.files import atomic_write, cache_root
from tr1_env.util.threads import torch_threads

ALGOS = ("ppo", "a2c")


def learn(algo: str, make_envs: Sequence, steps: int, seed: int, path: Path):
    """The ``algo`` ("ppo" or "a2c") MLP policy trained ``steps`` steps on a vector env of ``make_envs``, saved at
    ``path``; reloaded from ``path`` instead when it exists (the cache of every SB3 agent)."""
    import stable_baselines3

    algo_cls = getattr(stable_baselines3, algo.upper())
    if path.exists():
        return algo_cls.load(path, device="cpu")
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv

    per_env = max(steps // len(make_envs), 8)
    model = algo_cls("MlpPolicy", DummyVecEnv(list(make_envs)), seed=seed, device="cpu", verbose=0,
                     **({"n_steps": min(2048, per_env), "batch_size": min(64, per_env * len(make_envs))}
                        if algo == "ppo" else {}))
    model.set_logger(Logger(None, []))  # SB3's default makes an empty SB3-<time> folder per fit in $TMPDIR
    with torch_threads(1):
        model.learn(total_timesteps=steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, model.save)  # a reader in another process (a Ray worker's fit ahead) sees all of it or none
    return model


class SB3Agent(Agent):
    """A stable-baselines3 algorithm (``"ppo"`` or ``"a2c"``) with an MLP policy, one model per ticker.

    It trains on the Trading env with the replay's :class:`~tr1_env.execution.Execution` (fill and costs), so the
    policy is paid as it is booked."""

    def __init__(self, algo: str = "ppo", steps: int = 8192, train_years: float = 2.0,
                 execution: Execution = Execution(), seed: int = 0, action_mode: str = "five", pool: bool = False,
                 cache_dir: str | Path | None = None):
        if algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
        self.algo, self.steps, self.train_years, self.execution, self.seed = algo, steps, train_years, execution, seed
        self.action_mode, self.pool = action_mode, pool
        # env action index -> the Action whose default weight is the env's target (sell/buy are -1/+1: the strong ones)
        by_weight = {w: a for a, w in DEFAULT_WEIGHTS.items()}
        self.actions = [by_weight[w] for w in ACTION_MODES[action_mode][1]]
        self.cache_dir = Path(cache_dir or cache_root() / "sb3")
        self.name = algo
        self.models: dict[str, object] = {}
        self.envs: dict[str, TradingEnv] = {}
        self.trained = 0  # models trained (not reloaded) by this agent: tests check the cache

    def model_path(self, ticker: str, train_start: pd.Timestamp, train_end: pd.Timestamp) -> Path:
        return self.cache_dir / self.algo / ticker / (
            f"{train_start:%Y%m%d}-{train_end:%Y%m%d}_{self.action_mode}_{self.steps}steps_{self.execution.tag()}"
            f"_seed{self.seed}.zip")

    def fit(self, store, tickers: Sequence[str], start, end) -> None:
        """Train (or reload) on the ``train_years`` ending the day before ``start``, then open the replay envs."""
        self.train_before(store, tickers, start)
        for ticker in tickers:
            self.envs[ticker] = TradingEnv(store, ticker, start, end, obs_mode="numeric",
                                           action_mode=self.action_mode, execution=self.execution)

    def train_before(self, store, tickers: Sequence[str], start) -> None:
        """The models of a replay that starts at ``start`` (trained on the ``train_years`` ending the day before, or
        reloaded), without the replay's envs: all that a fit run ahead of its replay (on another worker) needs."""
        self.models.update(self.train(store, tickers, pd.Timestamp(start) - pd.Timedelta(days=1)))

    def train(self, store, tickers: Sequence[str], train_end) -> dict[str, object]:
        """A policy per ticker, or with ``pool`` one policy over a vector env of every ticker's Trading env;
        only sessions up to ``train_end`` are read (the envs see the store as of its close)."""
        train_end = pd.Timestamp(train_end)
        train_start = train_end - pd.DateOffset(days=round(365.25 * self.train_years))
        groups = ([(f"pool-{'-'.join(sorted(tickers))}", list(tickers))] if self.pool
                  else [(t, [t]) for t in tickers])
        models = {}
        for key, members in tqdm(groups, desc=f"{self.name} fit", unit="model", disable=len(groups) < 2):
            path = self.model_path(key, train_start, train_end)
            trained = not path.exists()
            model = learn(self.algo, [lambda t=t: TradingEnv(store, t, train_start, train_end, obs_mode="numeric",
                                                             action_mode=self.action_mode, execution=self.execution)
                                      for t in members], self.steps, self.seed, path)
            self.trained += trained
            models.update(dict.fromkeys(members, model))
        return models

    def observe(self, obs: Observation):
        """The Trading env's numeric observation for ``obs``'s session and position (its own code path)."""
        return self.envs[obs.ticker].observation_at(obs.date, obs.position)

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        out = []
        for obs in observations:
            if obs.ticker not in self.models:
                raise RuntimeError(f"{self.name}: no model for {obs.ticker}; call fit() first")
            index, _ = self.models[obs.ticker].predict(self.observe(obs), deterministic=True)
            out.append(Decision(self.actions[int(index)]))
        return out


class PPOAgent(SB3Agent):
    name = "ppo"

    def __init__(self, **kwargs):
        super().__init__(algo="ppo", **kwargs)


class A2CAgent(SB3Agent):
    name = "a2c"

    def __init__(self, **kwargs):
        super().__init__(algo="a2c", **kwargs)


class PortfolioSB3:
    """A stable-baselines3 algorithm on the Portfolio env (``tr1/Portfolio-v0``, numeric, long-only): one policy
    over the universe, trained on the ``train_years`` before each replay window under the replay's
    :class:`~tr1_env.execution.Execution` and cached as :class:`SB3Agent` caches (algorithm, universe, period,
    steps, execution, seed). :meth:`weights` replays the window in the Portfolio env itself, each action the
    policy's on the env's observation (with the weights its own book drifted to), so training and replay observe
    alike."""

    def __init__(self, algo: str = "ppo", steps: int = 8192, train_years: float = 2.0,
                 execution: Execution = Execution(), seed: int = 0, universe_file: str | None = None,
                 cache_dir: str | Path | None = None):
        if algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
        self.algo, self.steps, self.train_years, self.execution, self.seed = algo, steps, train_years, execution, seed
        self.universe_file = universe_file
        self.cache_dir = Path(cache_dir or cache_root() / "sb3")
        self.trained = 0  # policies trained (not reloaded): tests check the cache

    def _env(self, store, tickers, start, end):
        from tr1_env.envs.portfolio_env import PortfolioEnv

        return PortfolioEnv(store, tickers, start, end, execution=self.execution, universe_file=self.universe_file)

    def model_path(self, tickers: Sequence[str], train_start: pd.Timestamp, train_end: pd.Timestamp) -> Path:
        universe = "-".join(tickers)
        if self.universe_file:  # a membership file decides who is held when: its content is part of the key
            universe += "_" + hashlib.sha256(Path(self.universe_file).read_bytes()).hexdigest()[:12]
        return self.cache_dir / self.algo / "portfolio" / universe / (
            f"{train_start:%Y%m%d}-{train_end:%Y%m%d}_{self.steps}steps_{self.execution.tag()}_seed{self.seed}.zip")

    def weights(self, store, tickers: Sequence[str] | None, start, end) -> tuple[tuple[str, ...], np.ndarray]:
        """The env's tickers and the policy's target weights at each close of ``start..end`` but the last, the
        policy trained (or reloaded) on the ``train_years`` ending the day before ``start``."""
        train_end = pd.Timestamp(start) - pd.Timedelta(days=1)
        train_start = train_end - pd.DateOffset(days=round(365.25 * self.train_years))
        env = self._env(store, tickers, start, end)
        train = self._env(store, tickers, train_start, train_end)
        if train.tickers != env.tickers:
            raise ValueError(f"{self.algo}: the universe trades {list(train.tickers)} in {train_start:%Y-%m-%d}.."
                             f"{train_end:%Y-%m-%d} but {list(env.tickers)} in the window: one policy cannot map both")
        path = self.model_path(env.tickers, train_start, train_end)
        self.trained += not path.exists()
        model = learn(self.algo, [lambda: train], self.steps, self.seed, path)
        obs, _ = env.reset(seed=self.seed)
        out = np.zeros((env.n_steps, len(env.tickers)))
        for i in range(env.n_steps):
            action, _ = model.predict(obs, deterministic=True)
            out[i] = env.weights_from_action(action)
            obs, *_ = env.step(action)
        return env.tickers, out
