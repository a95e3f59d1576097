"""How a decision becomes a trade and what the trade pays: one :class:`Execution` value, taken by the replay,
the Trading env, SB3 training and FLAG-TRADER alike."""

from tr1_env.execution.execution import PRESETS, Booked, Execution, Trade, trading_reward
from tr1_env.execution.fills import FILLS, Fill, NextOpenFill

__all__ = ["FILLS", "PRESETS", "Booked", "Execution", "Fill", "NextOpenFill", "Trade", "trading_reward"]
