"""A trained FLAG-TRADER checkpoint behind the replay harness's :class:`~tr1_env.core.agents.Agent` interface."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from tr1_agent.flag_trader.policy import FlagTraderPolicy
from tr1_env.core.actions import DEFAULT_WEIGHTS
from tr1_env.core.agents import Agent, Decision, Observation

__all__ = ["FlagTraderAgent"]

_BY_WEIGHT = {weight: action for action, weight in DEFAULT_WEIGHTS.items()}


class FlagTraderAgent(Agent):
    """``benchmarks/run.py --model flag:PATH``: the policy saved by ``tr1 train flag-ppo`` at ``PATH``.

    The prompt is the Trading env's own (:meth:`TradingEnv.observation_at`), from a mirror env per ticker
    built with the checkpoint's settings (window, headlines, costs) over the replay's period and
    stepped with the agent's decisions, so session count, equity and market table read as the env's;
    the position shown is the harness's (``Observation.position``). Between two decision days (a
    replay deciding every k sessions) the mirror holds the position, as the harness does. The period
    ends at ``end``: the one :meth:`fit` receives, else the checkpoint's test end.

    Decisions are the env action's target position expressed as the :class:`~tr1_env.core.actions.Action` with that
    weight under ``DEFAULT_WEIGHTS``: sell/hold/buy -> ``STRONG_SELL``/``HOLD``/``STRONG_BUY`` (-1/0/+1), and the
    five-action mode maps to itself. ``greedy`` takes the most probable action; otherwise one is sampled.
    ``anonymize`` serves the env's anonymized prompt (:class:`TradingEnv` ``anonymize``: True = strict, or a level).
    """

    name = "flag-trader"

    def __init__(self, path: str | Path, device: str | None = None, end: str | None = None, greedy: bool = True,
                 anonymize: bool | str | None = False):
        self.policy, meta = FlagTraderPolicy.from_checkpoint(path, device)
        self.settings = meta["config"]
        self.end = pd.Timestamp(end or self.settings["test_end"])
        self.greedy = greedy
        self.anonymize = anonymize
        self.store = None
        self._mirrors: dict[str, tuple] = {}  # ticker -> (env, the session it is at)

    def fit(self, store, tickers: Sequence[str], start, end) -> None:
        """Already trained: keep the replay's store and period end (``benchmarks/run.py`` passes its window)."""
        self.store, self.end = store, pd.Timestamp(end)

    def reset(self, ticker: str) -> None:
        self._mirrors.pop(ticker, None)

    def prompts(self, observations: Sequence[Observation]) -> list[str]:
        """The env's text observation of each ticker-day, with the harness's position."""
        out = []
        for obs in observations:
            day = pd.Timestamp(obs.date).normalize()
            out.append(self._mirror(obs.ticker, day, obs.position).observation_at(day, obs.position))
        return out

    @torch.no_grad()
    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        if not observations:
            return []
        logits, values = self.policy(self.policy.encode(self.prompts(observations)))
        probs = logits.softmax(-1)
        picks = probs.argmax(-1) if self.greedy else torch.multinomial(probs, 1).squeeze(-1)
        decisions = []
        for obs, pick, p, v in zip(observations, picks.tolist(), probs.tolist(), values.tolist()):
            env, _ = self._mirrors[obs.ticker]
            action = _BY_WEIGHT[env.targets[pick]]
            _, _, _, truncated, info = env.step(pick)
            if truncated:
                del self._mirrors[obs.ticker]
            else:
                self._mirrors[obs.ticker] = (env, info["date"])
            decisions.append(Decision(action, meta={"flag_action": self.policy.action_names[pick],
                                                    "probs": dict(zip(self.policy.action_names, p)), "value": v}))
        return decisions

    def _mirror(self, ticker: str, day: pd.Timestamp, position: float):
        """The mirror env standing at ``day``: the running one, moved on with the held position, else a new one
        starting there with ``position``."""
        from tr1_env.data.store import Store
        from tr1_env.envs.trading_env import TradingEnv
        from tr1_env.execution import Execution

        env, at = self._mirrors.get(ticker, (None, None))
        while at is not None and at < day:
            _, _, _, truncated, info = env.step(env.targets.index(env.position))
            at = None if truncated else info["date"]
        if at != day:
            self.store = self.store or Store()
            s = self.settings
            end = self.end if day < self.end else day + pd.Timedelta(days=14)  # past ``end``: a short period
            env = TradingEnv(self.store, ticker, day, end, obs_mode="text", action_mode=s["action_mode"],
                             execution=Execution.from_settings(s), window=s["window"], news_items=s["news_items"],
                             anonymize=self.anonymize)
            env.reset(options={"date": day, "position": position})  # no session on ``day``: ValueError
        self._mirrors[ticker] = (env, day)
        return env
