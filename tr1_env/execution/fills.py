"""When a decision taken at a session's close executes: one class per fill, each overriding :meth:`Fill.price`.

A fill splits the session after a decision in two legs: the weight held before the order earns the return from
the decision close to the fill, the weight the order sets earns the rest, to the next close. The base class (the
decision close itself) owns that bookkeeping; a variant says only at what price the order executes (as
``arch.bootstrap``'s variants override only ``update_indices``), with its name, its description and whether the
old weight is still held over the next open. A new fill is a subclass here plus its entry in :data:`FILLS`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

__all__ = ["FILLS", "Fill", "NextOpenFill"]


class Fill:
    """At the decision's close: the new weight earns the whole next session (optimistic: a real order at the close
    must be sent before the close is known)."""

    name: ClassVar[str] = "close"
    #: What the order means for the position, in the words of reports, prompts and docs.
    description: ClassVar[str] = ("the order fills at the decision's close, so the new position is held from that "
                                  "close to the next one (optimistic: a real order must be sent before the close "
                                  "is known)")
    #: Whether the weight held before the order is still held over the next session's open, so that it (and not the
    #: new weight) earns an ex-date dividend paid there.
    overnight: ClassVar[bool] = False

    def price(self, close: pd.Series, next_open: pd.Series | None) -> np.ndarray:
        """The price each decision's order executes at: ``close`` holds the decision closes ``d_1..d_{n-1}``,
        ``next_open`` the opens of ``d_2..d_n`` (None where the caller has no opens). The one method a variant
        overrides."""
        return close.to_numpy(dtype=float)

    def prices(self, closes: pd.Series, opens: pd.Series | None) -> np.ndarray:
        """:meth:`price` of a decision at each close of ``closes`` but the last (``opens`` on the same days)."""
        return self.price(closes.iloc[:-1], None if opens is None else opens.iloc[1:])

    def intraday(self, closes: pd.Series, cash: np.ndarray, opens: pd.Series | None) -> np.ndarray:
        """Simple return of each realised session ``d_2..d_n`` from the fill to its close, with the ex-date cash
        (``cash`` per session ``d_1..d_n``) when the new weight holds over the open; ``closes`` over ``d_1..d_n``."""
        px = closes.to_numpy(dtype=float)
        return (px[1:] + (0.0 if self.overnight else cash[1:])) / self.prices(closes, opens) - 1

    def legs(self, asset: np.ndarray, closes: pd.Series, cash: np.ndarray, opens: pd.Series | None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Each realised session's ``asset`` return split at the fill: ``(overnight, intraday)``, the part the old
        weight earns up to the fill and the part the new weight earns after it, ``(1 + G)(1 + I) = 1 + asset``."""
        intraday = self.intraday(closes, cash, opens)
        return (1 + asset) / (1 + intraday) - 1, intraday


class NextOpenFill(Fill):
    """At the next session's open: the old weight earns the overnight gap (and an ex-date dividend), the new one
    the session from its open to its close."""

    name = "next-open"
    description = ("the order fills at the next session's open, so the old position is held overnight and the new "
                   "one from that open to the next close")
    overnight = True

    def price(self, close: pd.Series, next_open: pd.Series | None) -> np.ndarray:
        if next_open is None:
            raise ValueError(f"fill={self.name!r} needs the opens")
        if next_open.isna().any():
            raise ValueError(f"missing opens on {list(next_open.index[next_open.isna()].strftime('%Y-%m-%d'))}")
        return next_open.to_numpy(dtype=float)


#: Every fill by name (``--fill``), the default first.
FILLS: dict[str, type[Fill]] = {cls.name: cls for cls in (Fill, NextOpenFill)}
