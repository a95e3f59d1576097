"""The fast path of :func:`tr1_env.context.reference.build_context`: a store indexed once, then ~0.5 ms a context.

What a context needs from a ticker-day is a prefix of each table (the rows with ``available_at``
at or before the decision time), so everything that does not depend on the day is computed once,
by each registered modality (:mod:`tr1_env.context.modalities`) for its own tables: a
:class:`~tr1_env.context.modalities.base.Part` per ticker (indicator frames per split epoch, news
lines, the fundamentals section at every instant it can change, insider and recommendation lines)
and one per store for market-wide tables (macro series and FOMC statements, market headlines).

A day then costs a few binary searches on ``available_at`` and string joins, rendered by the
same functions as :func:`~tr1_env.context.reference.build_context_reference` (tested equal on random
ticker-days). Costly parts are computed on first need, so a one-off store (a ``store.cut``) pays only
for what it uses; :meth:`ContextIndex.prepare` computes them all and keeps them on disk under
``$TR1_CACHE/contexts`` (default ``~/.cache/tr1``), keyed by a hash of the rows they come from, for
the next process. With ``levels``, it also compiles every news line of the store for
:mod:`tr1_env.context.anonymize` once (names found, templates built: a few ms a line) and keeps the templates on disk,
keyed by the lines and the anonymizer's own sources, so an anonymized context costs look-ups, not parsing.
"""

from __future__ import annotations

import hashlib
import pickle
import weakref
from functools import lru_cache
from pathlib import Path

import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.base import Instant, Part, ns, registered, rows
from tr1_env.context.record import Context, assemble, choose_modalities
from tr1_env.data.clock import NY, decision_time
from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store
from tr1_env.util.files import atomic_write, cache_root

#: Bump when what is cached on disk changes meaning (4: one state per modality part, classes in their modules).
_VERSION = 4
_UNREADABLE = (OSError, EOFError, ValueError, AttributeError, ImportError, KeyError, TypeError, pickle.UnpicklingError)


@lru_cache(maxsize=1)
def _anonymizer_digest() -> str:
    """What the compiled templates depend on besides the lines: the anonymizer's sources, aliases and word list."""
    from importlib.metadata import version

    from tr1_env.context import anonymize, entities

    h = hashlib.sha256(version("wordfreq").encode())
    for path in (anonymize.__file__, entities.__file__, anonymize.ALIASES):
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def _templates(lines: list[tuple[str, tuple[str, ...] | None]], level: str, path: Path) -> None:
    """Compile ``lines`` (each with its table's columns, or None) at ``level`` into
    :func:`tr1_env.context.anonymize.templates`, from the disk cache at ``path`` when it is there (else compiled and
    written)."""
    from tr1_env.context import anonymize

    memo = anonymize.templates()
    if path.exists():
        try:
            memo.update(pickle.loads(path.read_bytes()))
            return
        except _UNREADABLE:
            path.unlink(missing_ok=True)
    compiled = {(level, columns, line): anonymize.template(line, level, columns)
                for line, columns in dict.fromkeys(lines)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(compiled)))


def _digest(*frames: pd.DataFrame, tag: str = "") -> str:
    h = hashlib.sha256(f"{_VERSION}{tag}".encode())
    for frame in frames:
        h.update(str(list(frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:24]


class _TickerIndex:
    """One ticker's sessions and each registered modality's part of its rows (market-wide parts shared)."""

    def __init__(self, store: Store, ticker: str, market: dict[str, Part | None], cache_dir: Path):
        self.ticker = ticker
        prices = rows(store, "prices", ticker)
        self.price_at = ns(prices["available_at"])
        self.dates = prices["date"].to_numpy("datetime64[ns]")
        self.parts = {m.name: m.index(store, ticker, market[m.name]) for m in registered()}
        #: The ticker's own parts (not the market-wide ones): what the disk caches hold.
        self.own = {name: part for name, part in self.parts.items() if part is not market[name]}
        self._cache_dir = cache_dir
        # per-share statement figures read differently in a store whose figures are as reported (Store.restated)
        tag = str(list(self.own)) + ("" if store.restated else " as reported")
        key = _digest(*(frame for part in self.own.values() for frame in part.sources), tag=tag)
        self.path = cache_dir / f"{ticker}-{key}.pkl"
        if self.path.exists():
            try:
                for name, state in pickle.loads(self.path.read_bytes()).items():
                    self.own[name].restore(state)
            except _UNREADABLE:
                self.path.unlink(missing_ok=True)  # unreadable: computed again and rewritten by save()

    def compile(self, level: str) -> None:
        """Every line of the ticker's parts compiled for anonymization at ``level`` (from or to the disk cache)."""
        lines = [line for part in self.own.values() for line in part.lines()]
        key = _digest(pd.DataFrame({"line": [line for line, _ in lines], "columns": [str(c) for _, c in lines]}))
        _templates(lines, level, self._cache_dir / f"{self.ticker}-anon-{level}-{key}-{_anonymizer_digest()}.pkl")

    def save(self) -> None:
        """Compute every part's state and keep them on disk for the next process."""
        states = {name: state for name, part in self.own.items() if (state := part.state()) is not None}
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda tmp: tmp.write_bytes(pickle.dumps(states)))


class ContextIndex:
    """One store's tables prepared for point-in-time context builds; one instance per store (:meth:`of`)."""

    _instances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, store: Store, cache_dir: str | Path | None = None):
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "contexts"
        self._modalities: tuple = ()
        self._tickers: dict[str, _TickerIndex] = {}
        self._market: dict[str, Part | None] = {}
        self._days: dict[pd.Timestamp, Instant] = {}

    @classmethod
    def of(cls, store: Store) -> "ContextIndex":
        """The index of ``store``, built on first use and kept as long as the store lives."""
        if store not in cls._instances:
            cls._instances[store] = cls(store)
        return cls._instances[store]

    def prepare(self, tickers=None, cfg: ContextConfig = ContextConfig(), levels: tuple[str, ...] = ()
                ) -> "ContextIndex":
        """Index ``tickers`` (default: all) now rather than on first use, reading or writing the disk cache,
        and resolve every session's market-wide state; compile their lines (and the market-wide ones) for
        anonymization at each of ``levels``."""
        sessions = set()
        for ticker in map(canonical_ticker, tickers or self.store.tickers):
            self.ticker(ticker).save()
            for level in levels:
                self.ticker(ticker).compile(level)
            sessions.update(self.store.trading_days(ticker))
        market = [part for part in self.market.values() if part is not None]
        for level in levels:
            lines = [line for part in market for line in part.lines()]
            key = _digest(pd.DataFrame({"line": [line for line, _ in lines]}))
            _templates(lines, level, self.cache_dir / f"MARKET-anon-{level}-{key}-{_anonymizer_digest()}.pkl")
        instants = [self.instant(day) for day in sorted(sessions)]
        for part in market:
            part.prepare(instants, cfg)
        return self

    def _current(self) -> None:
        """Forget what was indexed for another set of modalities (one registered or removed since)."""
        if self._modalities != registered():
            self._modalities, self._tickers, self._market = registered(), {}, {}

    def ticker(self, ticker: str) -> _TickerIndex:
        self._current()
        if ticker not in self._tickers:
            self._tickers[ticker] = _TickerIndex(self.store, ticker, self.market, self.cache_dir)
        return self._tickers[ticker]

    @property
    def market(self) -> dict[str, Part | None]:
        """Each registered modality's market-wide part (None: it has none)."""
        self._current()
        if not self._market:
            self._market = {m.name: m.market(self.store) for m in registered()}
        return self._market

    def instant(self, day: pd.Timestamp) -> Instant:
        """The decision instant of ``day`` and its New-York midnight (memoised)."""
        if day not in self._days:
            time = decision_time(day)
            self._days[day] = Instant(time.value, time.tz_convert(NY).normalize().value, time)
        return self._days[day]

    def build(self, ticker: str, date, modalities: tuple[str, ...] | None = None, seed: int | None = None,
              cfg: ContextConfig = ContextConfig()) -> Context:
        day = pd.Timestamp(date).normalize()
        modalities = choose_modalities(modalities, seed, cfg)
        ticker = canonical_ticker(ticker)
        x = self.ticker(ticker)
        at = self.instant(day)
        n = int(x.price_at.searchsorted(at.t, "right"))
        if not n or x.dates[n - 1] != day.to_datetime64():
            raise ValueError(f"{ticker} has no session on {day:%Y-%m-%d} in store {self.store.path}")
        return assemble(ticker, day, modalities, {name: part.section(at, cfg) for name, part in x.parts.items()}, cfg)
