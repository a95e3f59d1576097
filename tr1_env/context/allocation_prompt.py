"""The allocation prompt: what an LLM reads on the portfolio track, one prompt for the whole book.

The Portfolio env's text observation (``obs_mode="text"``) and the harness's allocation agents
(``benchmarks/run.py --portfolio --portfolio-llm-mode allocation``) both show it, built by the env, so a model is
asked in replay exactly what it would read in the env. Per ticker that may be held that day: a row of the Trading
env's scale-free market features (from the prices known at that close) and its current weight, then the latest
headlines; then the cash weight and the answer format that :func:`tr1_env.core.allocation.parse_allocation` reads.
No price level is shown, so an anonymized prompt needs no rebasing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from tr1_env.core.allocation import CASH

__all__ = ["ALLOCATION_SYSTEM", "allocation_prompt"]

#: The system prompt of the allocation agents (the user turn is :func:`allocation_prompt`'s).
ALLOCATION_SYSTEM = ("You are a portfolio manager. You read the state of a portfolio at a market close and answer with "
                     "the target weights of its stocks and of cash as one JSON object.")

_TASK = """You manage one {kind} over the {n} stocks below plus cash, rebalanced at each close to the target \
weights you return. Execution: {execution}.

State at the close of {date:%Y-%m-%d} (returns and volatility in %, RSI 0-100, gaps to the moving averages in %):
| ticker | weight now | ret 1d | ret 5d | ret 10d | vol 20d | RSI 14 | vs SMA50 | vs SMA200 |
|---|---|---|---|---|---|---|---|---|
{table}
Cash weight now: {cash:.3f}

Latest headlines:
{news}

{rule}
Think briefly, then end with one JSON object of target weights, for example {example}; \
tickers you leave out get 0.
"""


def _row(ticker: str, weight: float, f: pd.Series) -> str:
    return (f"| {ticker} | {weight:.3f} | {100 * f.ret_1d:+.2f} | {100 * f.ret_5d:+.2f} | {100 * f.ret_10d:+.2f} | "
            f"{100 * f.vol_20d:.1f} | {100 * (f.rsi_14 + 0.5):.1f} | {100 * f.sma50_gap:+.2f} | "
            f"{100 * f.sma200_gap:+.2f} |")


def allocation_prompt(day: pd.Timestamp, tickers: Sequence[str], weights: Sequence[float],
                      features: Mapping[str, pd.Series], headlines: Sequence[str], execution: str,
                      long_only: bool = True, gross: float = 1.0, names: Mapping[str, str] | None = None) -> str:
    """The prompt on ``day`` for the ``tickers`` that may be held, with their current ``weights`` (cash is the
    rest) and each one's row of :data:`~tr1_env.context.modalities.market.MARKET_FEATURES` (``features``);
    ``headlines`` are lines already dated; ``names`` shows a ticker under another name (a pseudonym)."""
    names = names or {}
    shown = [names.get(t, t) for t in tickers]
    table = "\n".join(_row(s, w, features[t]) for t, s, w in zip(tickers, shown, weights, strict=True))
    example = ", ".join(f'"{s}": {0.9 / min(len(shown), 2):.2f}' for s in shown[:2])
    example = f"{{{example}, \"{CASH}\": 0.10}}" if shown else f'{{"{CASH}": 1.0}}'
    rule = (f"Weights are fractions >= 0 of the book; with {CASH} they sum to 1." if long_only else
            f"Weights are fractions of the book, negative for a short; with {CASH} they sum to 1, and the sum of "
            f"their absolute values is capped at {gross:g} (a larger book is scaled down to it).")
    return _TASK.format(kind="long-only portfolio" if long_only else "long-short portfolio", n=len(tickers),
                        execution=execution, date=pd.Timestamp(day), table=table, cash=1 - sum(weights),
                        news="\n".join(headlines) or "  (none available)", rule=rule, example=example)
