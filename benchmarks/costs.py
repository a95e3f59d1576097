"""What each agent x ticker book paid, by kind: ``costs.csv`` and the cost table of ``summary.md``.

The books (:meth:`tr1_env.execution.Execution.book`) record per session, in USD of the run's ``--capital``, the
commission, slippage, impact, borrow fee and cash interest, the LLM cost charged and the value of the orders the
volume cap left unfilled; this sums them per agent x ticker (``benchmarks.report`` lays them out) and prices
every LLM decision (:mod:`tr1_env.execution.llm_cost`), charged to the book or not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.config import RunConfig
from tr1_env.execution.llm_cost import decision_cost

__all__ = ["COST_COLUMNS", "cost_table"]

#: Paid by the book (USD), then unfilled (USD of orders not filled) and the LLM's price per decision and per run.
PAID = ["commission", "slippage", "impact", "borrow", "interest"]
COST_COLUMNS = ["agent", "ticker", "returns", "capital", *[f"{c}_usd" for c in PAID], "unfilled_usd",
                "decisions", "llm_usd", "llm_usd_per_decision", "llm_charged", "total_usd", "total_bps"]


def cost_table(results: dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]], cfg: RunConfig) -> pd.DataFrame:
    """One row per agent x ticker: USD paid by kind, unfilled, the LLM's cost, and the total in USD and in bps of
    the capital (interest counts against it; the LLM's cost counts only when charged)."""
    rows = []
    for agent, per in results.items():
        for ticker, (frame, decisions) in per.items():
            paid = {f"{c}_usd": float(frame[c].sum()) if c in frame else 0.0 for c in PAID}
            llm = decisions["meta"].map(decision_cost) if "meta" in decisions else pd.Series(dtype=float)
            llm_usd = float(llm.sum(min_count=1)) if len(llm) else 0.0
            charged = cfg.execution.charge_llm_cost and np.isfinite(llm_usd)
            total = (sum(paid.values()) - 2 * paid["interest_usd"]) + (llm_usd if charged else 0.0)
            rows.append({"agent": agent, "ticker": ticker, "returns": "total" if cfg.total_return() else "price",
                         "capital": cfg.execution.capital, **paid,
                         "unfilled_usd": float(frame["unfilled"].sum()) if "unfilled" in frame else 0.0,
                         "decisions": len(decisions), "llm_usd": llm_usd,
                         "llm_usd_per_decision": llm_usd / len(decisions) if len(decisions) else np.nan,
                         "llm_charged": bool(charged), "total_usd": total,
                         "total_bps": 1e4 * total / cfg.execution.capital})
    return pd.DataFrame(rows, columns=COST_COLUMNS)
