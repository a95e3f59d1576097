"""What an LLM decision costs in dollars: its tokens times the shipped price table.

``data/model_prices.csv`` holds, per model-id pattern (``fnmatch``, case-insensitive, first match wins, the same
matching as the training-cutoff table), USD per million input, cached-input and output tokens, the date the price
was read and its source. Local models (``hf:``, ``vllm:``, ``flag:``) cost 0 (their hardware is not counted); a
model the table lacks is unpriced (NaN), never free. A decision's tokens are those its completion reports
(``prompt_tokens``, ``completion_tokens`` and, where the endpoint reports prompt caching, ``cached_prompt_tokens``):
a decision reloaded from tr1's cache still costs what it cost when it was asked, the price of the decision.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

__all__ = ["PRICES", "Price", "decision_cost", "load_prices", "model_price"]

PRICES = Path(__file__).parents[1] / "data" / "model_prices.csv"
_COLUMNS = ["pattern", "input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m", "as_of", "source"]


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model, with the date and source of the price."""

    pattern: str
    input: float
    cached_input: float
    output: float
    as_of: str
    source: str

    def cost(self, prompt_tokens: float, completion_tokens: float, cached_tokens: float = 0.0) -> float:
        """USD of one call: cached prompt tokens at the cached price, the rest of the prompt at the input price."""
        fresh = prompt_tokens - cached_tokens
        return (fresh * self.input + cached_tokens * self.cached_input + completion_tokens * self.output) / 1e6


def load_prices(path: str | Path = PRICES) -> pd.DataFrame:
    """The price table, checked row by row (non-negative prices, an ISO date and a source on every row)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != _COLUMNS:
        raise ValueError(f"{path}: columns must be {','.join(_COLUMNS)}, got {','.join(table.columns)}")
    for row, r in table.iterrows():
        for col in _COLUMNS[1:4]:
            try:
                ok = float(r[col]) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{path}: row {row + 2} ({r.pattern}): {col} {r[col]!r} is not a price >= 0")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.as_of):
            raise ValueError(f"{path}: row {row + 2} ({r.pattern}): as_of {r.as_of!r} is not YYYY-MM-DD")
        if not r.pattern or not r.source:
            raise ValueError(f"{path}: row {row + 2}: pattern and source are required")
    return table


@lru_cache(maxsize=None)
def _shipped() -> tuple[Price, ...]:
    return tuple(Price(r.pattern, float(r.input_usd_per_1m), float(r.cached_input_usd_per_1m),
                       float(r.output_usd_per_1m), r.as_of, r.source) for r in load_prices().itertuples())


def model_price(model: str, table: tuple[Price, ...] | None = None) -> Price | None:
    """The price of a model id (``gpt-4.1-mini-2025-04-14``, ``hf:Qwen/Qwen3-4B``); None when the table lacks it."""
    for price in _shipped() if table is None else table:
        if fnmatch.fnmatch(model.lower(), price.pattern.lower()):
            return price
    return None


def decision_cost(meta: dict) -> float:
    """USD of one decision from its ``meta`` (``model`` and token counts as the LLM agents record them); NaN when
    the model is unpriced or the endpoint reported no token counts, 0 for a decision with no model (no LLM)."""
    model = meta.get("model") if isinstance(meta, dict) else None
    if not model:
        return 0.0
    price = model_price(str(model))
    prompt, completion = meta.get("prompt_tokens"), meta.get("completion_tokens")
    if price is None or prompt is None or completion is None:
        return 0.0 if price is not None and not (price.input or price.output) else float("nan")
    return price.cost(float(prompt), float(completion), float(meta.get("cached_prompt_tokens") or 0))
