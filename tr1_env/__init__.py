"""TR1: Gymnasium environments, training and benchmarks for LLM trading agents.

Importing the package only registers the environments (``gymnasium.make("tr1/Thesis-v0")``,
``gymnasium.make("tr1/Trading-v0")``, ``"tr1/Portfolio-v0"``); their modules load on first ``make``.
"""

import gymnasium

gymnasium.register(id="tr1/Thesis-v0", entry_point="tr1_env.envs.thesis_env:ThesisEnv")
gymnasium.register(id="tr1/Trading-v0", entry_point="tr1_env.envs.trading_env:TradingEnv")
gymnasium.register(id="tr1/Portfolio-v0", entry_point="tr1_env.envs.portfolio_env:PortfolioEnv")
