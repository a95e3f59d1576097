"""An evaluation protocol is data: the list of replay windows, each with the last day its fits may see.

The replay takes this list and computes no dates itself. Windows are consecutive and never overlap;
anything trained for a window (SB3 policies, label thresholds) uses data up to ``train_until``, the
day before the window opens, so fits are keyed by that date and windows that share it share the fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

__all__ = ["SCHEMES", "Window", "windows"]

#: Named schemes; anything else is an explicit list of ``START:END`` windows.
SCHEMES = {"single": None, "yearly": "Y", "quarterly": "Q", "monthly": "M"}


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp
    end: pd.Timestamp
    train_until: pd.Timestamp

    @property
    def name(self) -> str:
        return f"{self.start:%Y-%m-%d}_{self.end:%Y-%m-%d}"


def _window(start, end) -> Window:
    lo, hi = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if hi < lo:
        raise ValueError(f"window {lo:%Y-%m-%d}:{hi:%Y-%m-%d} ends before it starts")
    return Window(lo, hi, lo - pd.Timedelta(days=1))


def windows(scheme: str | Sequence[str] = "single", start=None, end=None) -> list[Window]:
    """``single`` ([start, end]), ``yearly`` / ``quarterly`` / ``monthly`` (calendar periods cut to [start, end]) or an
    explicit list of ``"YYYY-MM-DD:YYYY-MM-DD"`` windows, which must be in order and must not overlap."""
    if isinstance(scheme, str) and scheme in SCHEMES:
        if start is None or end is None:
            raise ValueError(f"the {scheme!r} protocol needs a start and an end date")
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        if SCHEMES[scheme] is None:
            return [_window(lo, hi)]
        periods = pd.period_range(lo, hi, freq=SCHEMES[scheme])
        return [_window(max(p.start_time, lo), min(p.end_time.normalize(), hi)) for p in periods]
    out = []
    for spec in [scheme] if isinstance(scheme, str) else scheme:
        a, sep, b = str(spec).partition(":")
        if not sep:
            raise ValueError(f"window {spec!r}: expected {', '.join(SCHEMES)} or START:END (YYYY-MM-DD:YYYY-MM-DD)")
        out.append(_window(a, b))
    for before, after in zip(out, out[1:]):
        if after.start <= before.end:
            raise ValueError(f"windows {before.name} and {after.name} overlap or are out of order")
    return out
