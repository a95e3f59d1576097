"""FLAG-TRADER (arXiv 2502.11433): PPO on a partially frozen LLM acting in the Trading env.

- :mod:`.policy`: the network (frozen lower layers, trainable top, action-token policy head, value head);
- :mod:`.ppo`: the PPO algorithm and the warm-up/test run behind ``tr1 train flag-ppo``;
- :mod:`.config`: the run's dataclass settings (``tr1 train flag-ppo`` is registered in :mod:`tr1_agent.cli`);
- :mod:`.agent`: a saved checkpoint as a replay :class:`~tr1_env.core.agents.Agent`.

Importing the package stays light (no torch) until one of the heavy names is used.
"""

from __future__ import annotations

from importlib import import_module

from tr1_agent.flag_trader.config import FlagPPOConfig, PPOConfig

__all__ = ["PPO", "FlagPPOConfig", "FlagTraderAgent", "FlagTraderPolicy", "PPOConfig", "compute_gae",
           "run_episodes", "train_flag_trader"]

_LAZY = {"FlagTraderAgent": "agent", "FlagTraderPolicy": "policy", "PPO": "ppo", "compute_gae": "ppo",
         "run_episodes": "ppo", "train_flag_trader": "ppo"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
