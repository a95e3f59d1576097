"""The execution model: a fill and the costs of trading, as one frozen value every route takes.

The replay (:func:`tr1_env.evaluation.backtest.backtest`), the Trading env's reward, SB3 training and
FLAG-TRADER all receive an :class:`Execution` and ask it for the price of an order, what a change of weight
costs and the net return or reward of a session, so a new execution setting (a commission per share, slippage,
a borrow fee) is a field and a method here, and no caller changes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tr1_env.execution.fills import FILLS, Fill

__all__ = ["Execution", "trading_reward"]


def trading_reward(position, log_return, previous_position=0.0, cost_bps: float = 0.0, overnight=0.0):
    """FLAG-TRADER's daily reward: ``position * log_return - cost_bps / 1e4 * |position - previous_position|``.

    ``position`` is the weight held from one close to the next, ``log_return`` the asset's log return
    over that day, and the cost is paid on the change of weight at the first close. The rewards of an
    episode add up to the log growth of its equity. Elementwise on arrays; with no cost it is
    InvestorBench's ``action * ln(P_t+1 / P_t)``. Filled at the next open instead, ``log_return`` is that
    session's open-to-close part and ``overnight`` (close to next open) is still earned by ``previous_position``.
    Floats or numpy arrays (plain operators: a Trading env step pays no numpy call).
    """
    return previous_position * overnight + position * log_return - cost_bps / 1e4 * abs(position - previous_position)


@dataclass(frozen=True)
class Execution:
    """How decisions taken at a close are executed and what they pay; each field is also a flag of the replay."""

    fill: str = field(default="close", metadata={
        "choices": tuple(FILLS), "help": "when a decision made on a close executes (tr1_env.execution.FILLS; "
                                         "close: at that close, optimistic)"})
    cost_bps: float = field(default=10.0, metadata={
        "help": "transaction cost in bps of equity per unit of weight traded"})

    def __post_init__(self):
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {tuple(FILLS)}, got {self.fill!r}")
        if not self.cost_bps >= 0:
            raise ValueError(f"--cost-bps must be >= 0, got {self.cost_bps:g}")

    @classmethod
    def from_settings(cls, settings: dict) -> Execution:
        """The execution a saved config names: nested under ``execution``, or flat (``cost_bps`` and, from before
        fills were a setting, maybe no ``fill``: the close) as older FLAG-TRADER checkpoints keep it."""
        if isinstance(settings.get("execution"), dict):
            return cls(**settings["execution"])
        return cls(**{f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings})

    @property
    def model(self) -> Fill:
        """The fill named by :attr:`fill`."""
        return FILLS[self.fill]()

    def describe(self) -> str:
        """The execution in words, the one description reports, the Trading env's prompt and the docs use."""
        return f"{self.model.description}; costs {self.cost_bps:g} bps of equity per unit of weight traded"

    def tag(self) -> str:
        """A short file-name-safe key of every setting (``10bps``, ``5bps_next-open``), for caches of what was
        trained under it; the defaults of the fields after ``cost_bps`` add nothing, so older keys stay valid."""
        parts = [f"{self.cost_bps:g}bps", *([self.fill] if self.fill != Fill.name else [])]
        parts += [f"{f.name}{getattr(self, f.name)}" for f in dataclasses.fields(self)[2:]
                  if getattr(self, f.name) != f.default]
        return "_".join(parts)

    def cost(self, previous, target):
        """The fraction of equity a change of weight from ``previous`` to ``target`` pays (elementwise)."""
        return self.cost_bps / 1e4 * abs(target - previous)

    def book(self, w: np.ndarray, asset: np.ndarray, closes: pd.Series, cash: np.ndarray, opens: pd.Series | None,
             held: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Net daily returns and costs of the weights ``w_i`` decided at the closes of ``d_1..d_{n-1}``, starting
        from the weight ``held`` into ``d_1`` (flat by default; a continuous walk-forward passes the previous
        window's last weight): ``asset`` is each realised session's return ``d_2..d_n``; ``closes`` and ex-date
        ``cash`` are over ``d_1..d_n``, ``opens`` over them or None.

        The trade pays its cost at the fill; the old weight earns the session up to the fill, the new one the rest:
        ``r = (1 + w_{i-1} G) (1 - c |Δw|) (1 + w_i I) - 1`` with ``(1 + G)(1 + I)`` the asset's return.
        """
        held = np.concatenate([[held], w[:-1]])
        cost = self.cost(held, w)
        intraday = self.model.intraday(closes, cash, opens)
        overnight = (1 + asset) / (1 + intraday) - 1
        return (1 + held * overnight) * (1 - cost) * (1 + w * intraday) - 1, cost

    def prices(self, closes: pd.Series, opens: pd.Series | None) -> np.ndarray:
        """The execution price of a decision at each close of ``closes`` but the last (``opens`` on the same days)."""
        return self.model.prices(closes, opens)

    def reward(self, target: float, previous: float, close: float, filled: float, next_close: float) -> float:
        """The Trading env's log reward of moving from ``previous`` to ``target`` at a decision ``close``, the order
        executed at ``filled`` (:meth:`prices`) and the session ending at ``next_close``."""
        return float(trading_reward(target, math.log(next_close / filled), previous, self.cost_bps,
                                    overnight=math.log(filled / close)))
