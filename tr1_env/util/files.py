"""Where tr1 keeps the files it makes, and the plain JSON it writes them in.

Both the environment's users and the layers above it (trained SB3 policies, converted models,
LLM call caches, replay decisions, training reports) need them, so they live at the bottom.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["atomic_write", "cache_root", "jsonable"]


def cache_root() -> Path:
    """``$TR1_CACHE`` or ``~/.cache/tr1``: converted models, trained baselines and call caches live here."""
    return Path(os.environ.get("TR1_CACHE") or Path.home() / ".cache" / "tr1").expanduser()


_PLAIN = frozenset({str, int, bool, type(None)})


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars as Python numbers, NaN and infinities (an undefined
    Sharpe) as null, anything else unknown (a timestamp) as its string."""
    if type(value) in _PLAIN:  # most of a record's values: returned before the checks below
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename onto ``path``: a kill leaves the old file or the new one, never half of one.
    The temp name is per process (two writers never share it) and keeps the suffix (matplotlib and quantstats
    pick the format from it)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
