"""What a modality is: the one interface both context builders iterate over, and the registry of modalities.

A modality (market, news, fundamentals, ...) owns the store tables it reads, the text of its section, its
numeric features and the index the fast builder keeps of its rows. It answers a ticker-day twice, in two ways
tested equal: :meth:`Modality.reference` selects rows with pandas from the point-in-time view
(:func:`tr1_env.context.reference.build_context_reference`), :meth:`Modality.index` builds a :class:`Part` once per
store whose :meth:`Part.section` selects them by binary search (:class:`tr1_env.context.index.ContextIndex`). Both
render with the module's own public renderers, so they agree by construction of the text.

Modules of this package register their modality on import (:func:`register`); ``order`` places its section and
features in the context. Adding a data table then takes its schema and importer (``tr1_env.data``) and one module
here.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.data.store import PointInTime, Store

DAY_NS = 86_400 * 10**9
#: After every row: whole tables through the point-in-time door (what an index reads once).
END = pd.Timestamp("2262-01-01", tz="UTC")


@dataclass(frozen=True)
class Section:
    """One modality's answer for a ticker-day.

    ``text`` is the section's body (None: no data, stated as missing); ``features`` are values of names in the
    modality's ``features``; ``frames`` are :class:`~tr1_env.context.record.Context` fields the modality fills, each
    a value or a zero-argument function called on first read (most readers want only the text).
    """

    text: str | None
    features: dict[str, float] = field(default_factory=dict)
    frames: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Instant:
    """A decision instant as an index searches it: the decision time and the New-York midnight of its day, as
    int64 UTC nanoseconds, and the time itself."""

    t: int
    today: int
    time: pd.Timestamp


class Part:
    """A modality's rows of one ticker (or of the whole market) indexed once per store.

    Parts whose preparation is costly keep it on disk through the context index: ``sources`` are the frames it is
    computed from (they key the cache file), :meth:`state` computes all of it and returns it, :meth:`restore` takes
    it back. :meth:`lines` are the rendered lines the index compiles for anonymization ahead of use.
    """

    sources: tuple[pd.DataFrame, ...] = ()

    def section(self, at: Instant, cfg: ContextConfig) -> Section:
        """The section at ``at``: only rows available at ``at.t`` may count (a ticker's part; a market-wide part
        may serve only its tickers' parts)."""
        raise NotImplementedError(f"{type(self).__name__} serves other parts, not a section")

    def state(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        """Take back what :meth:`state` returned (from the disk cache)."""

    def lines(self) -> list[tuple[str, tuple[str, ...] | None]]:
        """Rendered lines, each with its table's column names (or None), to compile for anonymization."""
        return []

    def prepare(self, instants: Iterable[Instant], cfg: ContextConfig) -> None:
        """Resolve the state of each of ``instants`` ahead of use (a market-wide part, once per session)."""


class Modality(ABC):
    """One section of a context: its tables, its text, its features and its index (see the module docstring)."""

    name: ClassVar[str]
    title: ClassVar[str]  # the section's heading
    order: ClassVar[int]  # where the section and its features stand in a context: lowest first
    tables: ClassVar[tuple[str, ...]]  # the store tables it reads
    features: ClassVar[tuple[str, ...]] = ()  # the names it adds to the feature vector, in this order

    @abstractmethod
    def reference(self, view: PointInTime, cfg: ContextConfig) -> Section:
        """The section of ``view``'s ticker at ``view.time``, selected with pandas (the plain builder)."""

    @abstractmethod
    def index(self, store: Store, ticker: str, market: Part | None) -> Part:
        """``ticker``'s rows of ``store`` indexed for :meth:`Part.section` (the fast builder); ``market`` is what
        :meth:`market` built for the store."""

    def market(self, store: Store) -> Part | None:
        """The market-wide part of ``store`` that every ticker's part shares (None: none)."""
        return None


_REGISTRY: list[Modality] = []


def register(modality: Modality) -> Modality:
    """Add ``modality`` to every context, in its ``order``; a name registered again replaces the old one."""
    unregister(modality.name)
    bisect.insort(_REGISTRY, modality, key=lambda m: m.order)
    return modality


def unregister(name: str) -> None:
    _REGISTRY[:] = [m for m in _REGISTRY if m.name != name]


def registered() -> tuple[Modality, ...]:
    """The registered modalities, in context order."""
    return tuple(_REGISTRY)


def fmt(x: float, digits: int = 2) -> str:
    """A number as contexts show it: thousands separated, trillions/billions/millions abbreviated, n/a if missing."""
    if x is None or not np.isfinite(x):
        return "n/a"
    ax = abs(x)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if ax >= div:
            return f"{x / div:,.{digits}f}{unit}"
    return f"{x:,.{digits}f}"


def ns(values) -> np.ndarray:
    """UTC instants (or naive dates) as int64 nanoseconds, for binary search."""
    return np.asarray(pd.DatetimeIndex(values).as_unit("ns").asi8 if len(values) else [], dtype=np.int64)


def rows(store: Store, table: str, key: str) -> pd.DataFrame:
    """Every row of ``table`` for ``key`` (a ticker, ``"*"`` for a market-wide table), sorted by availability."""
    return store.visible(table, key, END)

