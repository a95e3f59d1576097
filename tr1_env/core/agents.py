"""The one interface for everything that decides: batched ticker-day observations in, decisions out.

Baselines, stable-baselines3 policies, local and remote LLMs all implement :class:`Agent`, so the
replay harness treats them alike. A new agent is any class with this shape, loaded by import path
(``my_pkg.module:MyAgent``) or through the ``tr1.agents`` entry-point group.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tr1_env.core.actions import Action


@dataclass(frozen=True)
class Observation:
    """One ticker-day as an agent sees it at the decision time (the close of ``date``).

    ``prompt`` is the Trading-R1 prompt (instructions + context); ``context`` is the data text alone
    (what quotes are checked against); ``history`` holds point-in-time daily bars with indicators;
    ``news`` the headlines in the context's window. Nothing here is from after ``date``'s close.
    """

    ticker: str
    date: pd.Timestamp
    prompt: str
    context: str
    features: np.ndarray
    feature_names: tuple[str, ...]
    history: pd.DataFrame
    news: pd.DataFrame
    position: float = 0.0


@dataclass
class Decision:
    """An action, the thesis that argued for it (LLM agents) and free-form metadata (failures, tokens)."""

    action: Action
    thesis: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class AgentError(RuntimeError):
    """An agent could not decide (an API call that failed after its retries): a failure, never a decision.

    The harness reports it per agent x ticker, keeps nothing of it and asks again on the next run.
    ``decisions`` holds, when the agent knows them, the batch's decisions that did succeed (None where
    one failed), so one failed prompt does not cost the others.
    """

    def __init__(self, message: str, decisions: list[Decision | None] | None = None):
        super().__init__(message)
        self.decisions = decisions


class Agent(ABC):
    """Subclass and implement :meth:`act`; override :meth:`fit` if the agent trains on a pre-period."""

    name: str = "agent"

    def fit(self, store, tickers: Sequence[str], start, end) -> None:  # noqa: B027 - optional hook
        """Train on data strictly before the replay window (called once per replay, before any act)."""

    def reset(self, ticker: str) -> None:  # noqa: B027 - optional hook
        """Called at the start of each ticker's replay, for agents that keep per-episode state."""

    @abstractmethod
    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        """One decision per observation, in order."""


def load_agent(spec: str, **kwargs) -> Agent:
    """Resolve ``module:Class`` or a ``tr1.agents`` entry-point name to an agent instance."""
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load agent {spec!r}: {exc}") from exc
    else:
        found = {ep.name: ep for ep in entry_points(group="tr1.agents")}
        if spec not in found:
            raise ValueError(f"unknown agent {spec!r}: not 'module:Class' and not an entry point in group "
                             f"'tr1.agents' (installed: {sorted(found)})")
        target = found[spec].load()
    agent = target(**kwargs)
    if not isinstance(agent, Agent):
        raise TypeError(f"{spec!r} built a {type(agent).__name__}, which is not a tr1_env.core.agents.Agent")
    return agent
