"""A plug-in agent: copy this file, change ``act``, and replay it beside the baselines.

    python benchmarks/run.py --agent examples.custom_agent:MomentumAgent --agents buy_and_hold ma_crossover

Any importable ``module:Class`` works. To make it a name, declare an entry point in your package:
``[project.entry-points."tr1.agents"] momentum = "my_pkg.agents:MomentumAgent"``, then ``--agent momentum``.
"""

from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision


class MomentumAgent(Agent):
    """Long after a rising week, short after a falling one; reads only the bars in the observation."""

    name = "momentum"

    def __init__(self, lookback: int = 5):
        self.lookback = lookback

    def act(self, observations):
        decisions = []
        for obs in observations:  # one ticker-day each, nothing after its close
            close = obs.history["close"]
            change = close.iloc[-1] / close.iloc[-1 - self.lookback] - 1
            decisions.append(Decision(Action.BUY if change > 0 else Action.SELL, meta={"change": float(change)}))
        return decisions
