"""Non-LLM agents behind the same :class:`~tr1_env.core.agents.Agent` interface, by name.

Values are import paths for :func:`tr1_env.core.agents.load_agent`, so naming a baseline imports only
its module (the SB3 ones pull in torch, the others do not).
"""

BASELINES: dict[str, str] = {
    "buy_and_hold": "baselines.simple:BuyAndHold",
    "always_hold": "baselines.simple:AlwaysHold",
    "random": "baselines.simple:RandomAgent",
    "ma_crossover": "baselines.rules:MACrossover",
    "rsi_reversion": "baselines.rules:RSIMeanReversion",
    "news_sentiment": "baselines.sentiment:NewsSentiment",
    "ppo": "baselines.sb3:PPOAgent",
    "a2c": "baselines.sb3:A2CAgent",
}
#: Baselines that read prices alone (no news, no statements): the price history lets them replay years before the
#: other agents' spans (``--history-start``).
PRICES_ONLY: frozenset[str] = frozenset(BASELINES) - {"news_sentiment"}
#: Baselines that train on a pre-period (they take ``steps``, ``train_years``, ``cost_bps``, ``seed``).
TRAINED: frozenset[str] = frozenset({"ppo", "a2c"})
