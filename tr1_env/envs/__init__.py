"""The two Gymnasium environments: Trading-R1's thesis env and FLAG-TRADER's trading env."""

from tr1_env.envs.spaces import UnicodeText
from tr1_env.envs.thesis_env import ThesisEnv
from tr1_env.envs.trading_env import TradingEnv, action_index

__all__ = ["ThesisEnv", "TradingEnv", "UnicodeText", "action_index"]
