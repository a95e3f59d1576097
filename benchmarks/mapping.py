"""How the run maps its per-item work after the cells (statistics, window rows, signal rows): in this process one
item after another (:func:`in_order`), or through an executor's ``map`` on its workers
(:meth:`benchmarks.executors.RayExecutor.map`). The reports take a :data:`Mapper`, so the run decides where their
items run without them knowing of executors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Mapper", "in_order"]

#: ``mapper(fn, items, **shared)``: ``[fn(*item, **shared) for item in items]``, in order, wherever it runs.
Mapper = Callable[..., list]


def in_order(fn: Callable[..., Any], items: list[tuple], **shared) -> list:
    """``[fn(*item, **shared) for item in items]``, in this process."""
    return [fn(*item, **shared) for item in items]
