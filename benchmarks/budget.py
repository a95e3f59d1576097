"""What a run's API calls have cost and what the rest will: the line printed before the first call.

The cost so far is the price (:func:`tr1_env.execution.llm_cost.decision_cost`) of every API decision saved in the
run folder; the rest is the number of decisions still to ask times the price of a call whose prompt is the
context budget (``--llm-max-chars`` plus the system prompt and instructions, at
:data:`~tr1_agent.api_limits.CHARS_PER_TOKEN`) and whose reply is the mean reply of the saved decisions of that
model (:data:`TYPICAL_REPLY_TOKENS` before there is one), or, for the ceiling, ``--api-max-tokens`` long (what
``--max-cost-usd`` reserves per call).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks.config import RunConfig
from benchmarks.report import slug
from benchmarks.roster import UsageError
from tr1_agent.api_limits import CHARS_PER_TOKEN, ApiGovernor, Reservation
from tr1_env.context.prompt import INSTRUCTIONS, SYSTEM_PROMPT
from tr1_env.evaluation.backtest import decision_days
from tr1_env.evaluation.windows import Window
from tr1_env.execution.llm_cost import decision_cost, model_price

__all__ = ["TYPICAL_REPLY_TOKENS", "Estimate", "charge_saved", "estimate", "known_cost"]

TYPICAL_REPLY_TOKENS = 800  # a thesis of the shipped prompt, before the run has saved replies of the model


@dataclass
class Estimate:
    """Dollars spent by the saved API decisions, and the calls left with their typical and ceiling price."""

    spent: float = 0.0
    saved: int = 0
    calls: int = 0
    typical: float = 0.0
    ceiling: float = 0.0
    unpriced: list[str] = field(default_factory=list)

    def line(self, cfg: RunConfig) -> str:
        unpriced = (f"; no price for {', '.join(self.unpriced)} in tr1_env/data/model_prices.csv"
                    if self.unpriced else "")
        return (f"API cost: ${self.spent:.2f} so far ({self.saved} saved decisions); the remaining {self.calls} calls "
                f"about ${self.typical:.2f} (at most ${self.ceiling:.2f} if every reply used --api-max-tokens "
                f"{cfg.agents.api_max_tokens}){unpriced}")


def known_cost(metas) -> float:
    """Dollars the calls of these decisions' ``meta`` cost at the price table's price (those it cannot price: 0)."""
    return sum(c for m in metas if not math.isnan(c := decision_cost(m or {})))


def charge_saved(governor: ApiGovernor, cfg: RunConfig, spent: float, unpriced: list[str]) -> None:
    """Before a run's first call: ``spent`` (its saved decisions' cost) counted against ``--max-cost-usd``; a
    UsageError when a model the price table lacks (``unpriced``) would run under the budget."""
    if cfg.api.max_cost_usd is not None and unpriced:
        raise UsageError(f"--max-cost-usd: {', '.join(unpriced)} has no price in tr1_env/data/model_prices.csv "
                         "(a run cannot stay under a budget it cannot count)")
    governor.settle(Reservation(0.0, 0.0), spent)


def _saved(path: Path) -> list[dict]:
    try:
        return list(json.loads(path.read_text())["decisions"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def estimate(cells: list, cfg: RunConfig, folder_of: Callable[[Window], Path]) -> Estimate:
    """The cost of the API cells (:class:`benchmarks.executors.Cell`) so far and to come; the saved decisions are
    counted whatever their fingerprint (a continuous book's positions are known only as the run goes)."""
    out = Estimate()
    per_model: dict[str, tuple[int, int, int]] = {}  # model -> (calls left, reply tokens seen, replies seen)
    for cell in cells:
        spec = cell.spec
        if not spec.api:
            continue
        left, tokens, replies = per_model.get(spec.model, (0, 0, 0))
        for t, days in cell.days.items():
            saved = _saved(folder_of(cell.window) / "decisions" / f"{slug(spec.label)}__{t}.json")
            out.spent += known_cost(d.get("meta") for d in saved)
            out.saved += len(saved)
            counted = [d["meta"]["completion_tokens"] for d in saved
                       if isinstance((d.get("meta") or {}).get("completion_tokens"), int)]
            tokens, replies = tokens + sum(counted), replies + len(counted)
            left += max(0, len(decision_days(days, spec.every)) - len(saved))
        per_model[spec.model] = (left, tokens, replies)
    for model, (left, tokens, replies) in per_model.items():
        out.calls += left
        price = model_price(model)
        if price is None:
            out.unpriced.append(model)
            continue
        prompt = math.ceil((len(SYSTEM_PROMPT) + len(INSTRUCTIONS) + cfg.agents.llm_max_chars) / CHARS_PER_TOKEN)
        reply = min(cfg.agents.api_max_tokens, tokens / replies if replies else TYPICAL_REPLY_TOKENS)
        out.typical += left * price.cost(prompt, reply)
        out.ceiling += left * price.cost(prompt, cfg.agents.api_max_tokens)
    return out
