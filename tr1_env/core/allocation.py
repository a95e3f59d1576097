"""What an LLM on the portfolio track answers, and how the answer becomes weights.

Two routes, a setting of the caller: (a) the model returns an allocation over the tickers and ``CASH`` as a JSON
object, parsed strictly by :func:`parse_allocation` (anything unparseable or invalid raises
:class:`AllocationError`, a failed decision, never silently cash); (b) per-ticker Trading-R1 calls mapped to
weights by :func:`decisions_to_weights`'s stated rule.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from tr1_env.core.actions import DEFAULT_WEIGHTS, Action

__all__ = ["CASH", "AllocationError", "decisions_to_weights", "parse_allocation"]

CASH = "CASH"
#: How far the weights of an allocation may sum from 1 (rounding in a model's answer).
TOLERANCE = 1e-3
_OBJECT = re.compile(r"\{[^{}]*\}")


class AllocationError(ValueError):
    """An answer that is no valid allocation: the decision failed (the harness handles it as any failed call)."""


def parse_allocation(text: str, tickers: Sequence[str], long_only: bool = True) -> np.ndarray:
    """The weights of ``tickers`` in the last flat JSON object of ``text`` (models may think before it).

    Strict: every key is one of ``tickers`` or ``CASH`` (case as given; ``CASH`` required), every value a finite
    number, non-negative when ``long_only``, and the weights with cash sum to 1 within :data:`TOLERANCE`; a ticker
    left out has weight 0. Anything else raises :class:`AllocationError` saying what was wrong.
    """
    blocks = _OBJECT.findall(text or "")
    if not blocks:
        raise AllocationError("no JSON object in the answer")
    try:
        answer = json.loads(blocks[-1])
    except json.JSONDecodeError as exc:
        raise AllocationError(f"the last JSON object does not parse: {exc.msg}") from None
    unknown = [k for k in answer if k not in (*tickers, CASH)]
    if unknown:
        raise AllocationError(f"unknown key(s) {unknown}; allowed: {[*tickers, CASH]}")
    if CASH not in answer:
        raise AllocationError(f"no {CASH} weight")
    for key, value in answer.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AllocationError(f"weight of {key} is no finite number: {value!r}")
        if long_only and value < 0:
            raise AllocationError(f"negative weight {value:g} for {key} in a long-only book")
    total = sum(answer.values())
    if abs(total - 1) > TOLERANCE:
        raise AllocationError(f"weights sum to {total:g}, not 1")
    return np.array([float(answer.get(t, 0.0)) for t in tickers])


def decisions_to_weights(actions: Mapping[str, Action], tickers: Sequence[str], long_only: bool = True
                         ) -> np.ndarray:
    """Per-ticker five-way calls as one book: each ticker gets ``1/n`` of it times its call's target weight
    (:data:`~tr1_env.core.actions.DEFAULT_WEIGHTS`: STRONG_BUY 1, BUY 0.5, HOLD 0, SELL -0.5, STRONG_SELL -1;
    negative ones are 0 when ``long_only``), ``n`` the tickers called; the rest is cash. A ticker without a call
    is not held."""
    n = len(actions)
    weights = np.array([DEFAULT_WEIGHTS[actions[t]] if t in actions else 0.0 for t in tickers]) / max(n, 1)
    return np.maximum(weights, 0.0) if long_only else weights
