"""The five Trading-R1 actions: label classes, thesis decisions and, through weights, target positions."""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    """Ordered from most bearish to most bullish, so ``int(a) - 2`` is its direction."""

    STRONG_SELL = 0
    SELL = 1
    HOLD = 2
    BUY = 3
    STRONG_BUY = 4

    @property
    def direction(self) -> int:
        """-1 for sells, 0 for hold, +1 for buys (hit-rate and FLAG-TRADER use this)."""
        return (int(self) > 2) - (int(self) < 2)

    @classmethod
    def parse(cls, name: str) -> "Action":
        """Accept ``STRONG_BUY``, ``strong buy``, ``Strong-Buy`` ..."""
        key = name.strip().upper().replace(" ", "_").replace("-", "_")
        try:
            return cls[key]
        except KeyError:
            raise ValueError(f"unknown action {name!r}; expected one of {[a.name for a in cls]}") from None


ACTIONS: tuple[Action, ...] = tuple(Action)

#: Default long-short target weights of the replay (SS -1, S -0.5, H 0, B 0.5, SB 1).
DEFAULT_WEIGHTS: dict[Action, float] = {
    Action.STRONG_SELL: -1.0,
    Action.SELL: -0.5,
    Action.HOLD: 0.0,
    Action.BUY: 0.5,
    Action.STRONG_BUY: 1.0,
}
