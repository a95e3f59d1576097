"""The TR1 store: one Parquet table per source and a point-in-time view over it.

``Store.asof(ticker, t)`` is the only door contexts, features and agents go through: it returns
rows whose ``available_at`` is at or before ``t``, so look-ahead is impossible by construction.
Every per-share figure it returns is on the split basis of ``t``: adjusted for the splits in
effect at ``t`` and no later one, so a price, an EPS and an insider's price compare on one basis
and none of them hints at a split to come.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.data.clock import NY, decision_time
from tr1_env.data.importers import import_splits
from tr1_env.data.schema import MARKET_WIDE, TABLES, canonical_ticker

DEFAULT_STORE = Path(__file__).parent / "default"

#: Vendor-adjusted per-share figures (EPS, estimates; share counts the other way round): the
#: fundamentals and earnings vendors restate them for every split up to their download.
PER_SHARE_ITEMS = frozenset({"Basic EPS", "Diluted EPS"})
SHARE_COUNT_ITEMS = frozenset({"Basic Average Shares", "Diluted Average Shares", "Ordinary Shares Number",
                               "Share Issued", "Treasury Shares Number"})


def split_factors(dates: pd.Series, splits: pd.DataFrame) -> np.ndarray:
    """Per date, the product of the ratios of the splits in ``splits`` after it."""
    factor = np.ones(len(dates))
    dates = dates.to_numpy()
    for day, ratio in zip(splits["date"].to_numpy(), splits["ratio"].to_numpy()):
        factor[dates < day] *= ratio
    return factor


def split_adjust(frame: pd.DataFrame, splits: pd.DataFrame, cols=("open", "high", "low", "close")) -> pd.DataFrame:
    """Back-adjust rows dated before each split in ``splits`` (price / ratio, volume * ratio)."""
    if splits.empty or frame.empty:
        return frame
    factor = split_factors(frame["date"], splits)
    if (factor == 1).all():
        return frame
    out = frame.copy()
    for c in cols:
        out[c] = out[c] / factor
    if "volume" in out:
        out["volume"] = (out["volume"] * factor).round().astype("int64")
    return out


def split_adjust_insider(frame: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Form 4 rows (filed as traded) with ``splits`` applied to trades before them: per-share prices
    divided, share counts multiplied, values unchanged."""
    if frame.empty or splits.empty:
        return frame
    factor = split_factors(frame["transaction_date"], splits)
    if (factor == 1).all():
        return frame
    return frame.assign(price=frame["price"] / factor, shares=frame["shares"] * factor,
                        shares_after=frame["shares_after"] * factor)


@cache
def vendor_split_times(ticker: str) -> tuple[pd.Timestamp, ...]:
    """Instants at which :func:`restatement_factor` of ``ticker`` changes."""
    return tuple(at for at, _ in _vendor_splits(ticker))


@cache
def _vendor_splits(ticker: str) -> tuple[tuple[pd.Timestamp, float], ...]:
    """``(effective at, ratio)`` of ``ticker``'s splits in the public record (``splits.csv``) that the
    vendors' per-share figures are restated for.

    It is read from the package, not from the store, so that a store cut at (or built until) a day
    undoes the same restatement as the whole store: the result at ``t`` is what was reported,
    adjusted for the splits known at ``t``, whichever store it comes from.
    """
    splits = import_splits()
    own = splits[splits["ticker"] == ticker]
    return tuple(zip(own["available_at"], own["ratio"].astype(float)))


def restatement_factor(ticker: str, t: pd.Timestamp) -> float:
    """Vendor figure x factor = figure on the split basis of ``t``: the product of the ratios of
    ``ticker``'s splits effective after ``t`` (1 when none)."""
    return math.prod(ratio for at, ratio in _vendor_splits(ticker) if at > t)


def _as_utc(t) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _instant(t) -> pd.Timestamp:
    """A bare date means that session's decision time (its close); anything else is taken as an instant."""
    ts = pd.Timestamp(t)
    return decision_time(ts) if ts.tzinfo is None and ts == ts.normalize() else _as_utc(ts)


class Store:
    """A folder of ``<table>.parquet`` files (plus ``manifest.json``), loaded lazily.

    Tables are plain Parquet, so Spark, Ray Data or DuckDB read the same folder unchanged.
    """

    def __init__(self, path: str | Path | None = None, tables: dict[str, pd.DataFrame] | None = None):
        self.path = Path(path) if path is not None else DEFAULT_STORE
        self._tables: dict[str, pd.DataFrame] = dict(tables or {})
        self._index: dict[str, dict[str, tuple[pd.DataFrame, np.ndarray]]] = {}
        self._empty: dict[str, pd.DataFrame] = {}
        if tables is None and not (self.path / "prices.parquet").exists():
            raise FileNotFoundError(f"{self.path}: not a TR1 store (no prices.parquet); "
                                    "build one with `tr1 data build`")

    @cached_property
    def manifest(self) -> dict:
        f = self.path / "manifest.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def table(self, name: str) -> pd.DataFrame:
        """The whole table (all tickers, all times): for analysis, never for building a decision input."""
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables are {sorted(TABLES)}")
        if name not in self._tables:
            f = self.path / f"{name}.parquet"
            self._tables[name] = pd.read_parquet(f) if f.exists() else pd.DataFrame({"available_at": pd.Series(
                dtype="datetime64[ns, UTC]")})
        return self._tables[name]

    @cached_property
    def synthetic(self) -> dict | None:
        """The generator's settings when ``tr1 data synth`` made this store (its manifest says so), else None: a
        report built from it must say that its prices are simulated, never market data."""
        return self.manifest.get("synthetic") or None

    @cached_property
    def restated(self) -> bool:
        """Whether per-share statement figures are the vendors' (restated for every later split, undone here by the
        public split record) or, in an imported or synthetic store, as reported (used unchanged)."""
        return self.manifest.get("per_share", "restated") == "restated"

    def basis_changes(self, ticker: str) -> tuple[pd.Timestamp, ...]:
        """Instants at which per-share statement figures of ``ticker`` change basis: the vendors' restatement
        splits (see :attr:`restated`), or this store's own splits."""
        if self.restated:
            return vendor_split_times(ticker)
        return tuple(self.visible("splits", ticker, pd.Timestamp.max.tz_localize("UTC"))["available_at"])

    @cached_property
    def tickers(self) -> tuple[str, ...]:
        return tuple(sorted(self.table("prices")["ticker"].unique()))

    def _slices(self, name: str) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
        """Per-ticker frames sorted by availability, with the sorted stamps for binary search."""
        if name not in self._index:
            df = self.table(name).sort_values("available_at", kind="stable")
            groups = {"*": df} if name in MARKET_WIDE or "ticker" not in df else dict(tuple(df.groupby("ticker")))
            self._index[name] = {k: (g.reset_index(drop=True), g["available_at"].to_numpy("datetime64[ns]"))
                                 for k, g in groups.items()}
        return self._index[name]

    def visible(self, name: str, key: str, t) -> pd.DataFrame:
        """Rows of one table (one ticker, or ``"*"`` for market-wide tables) available at ``t``."""
        frame, stamps = self._slices(name).get(key, (None, None))
        if frame is None:
            return self.empty(name)
        return frame.iloc[:self.count_visible(name, key, t)]

    def empty(self, name: str) -> pd.DataFrame:
        """Table ``name`` with its columns and no rows, made once (shared, like every slice: never modify it)."""
        if name not in self._empty:
            self._empty[name] = self.table(name).iloc[0:0]
        return self._empty[name]

    def count_visible(self, name: str, key: str, t) -> int:
        """How many rows :meth:`visible` returns, without slicing a frame (a replay's hot path asks this daily)."""
        _, stamps = self._slices(name).get(key, (None, None))
        if stamps is None:
            return 0
        return int(np.searchsorted(stamps, _as_utc(t).tz_localize(None).to_datetime64(), side="right"))

    def asof(self, ticker: str, t) -> "PointInTime":
        """Everything known about ``ticker`` (and the market) at instant ``t``; a date means its close."""
        return PointInTime(self, canonical_ticker(ticker), _instant(t))

    def cut(self, until) -> "Store":
        """A copy holding only rows available at or before ``until`` (a date means its close)."""
        when = _instant(until)
        return Store(self.path, {n: self.table(n)[self.table(n)["available_at"] <= when] for n in TABLES})

    def trading_days(self, ticker: str, start=None, end=None) -> pd.DatetimeIndex:
        """Sessions with a close for ``ticker`` between ``start`` and ``end`` inclusive."""
        frame, _ = self._slices("prices").get(canonical_ticker(ticker), (None, None))
        if frame is None:
            raise KeyError(f"no prices for ticker {ticker!r} in store {self.path}; tickers: {self.tickers}")
        days = pd.DatetimeIndex(frame["date"])
        lo = pd.Timestamp(start) if start is not None else days[0]
        hi = pd.Timestamp(end) if end is not None else days[-1]
        return days[(days >= lo) & (days <= hi)]

    def closes(self, ticker: str, column: str = "close") -> pd.Series:
        """Closes (or ``column="open"``, ``"volume"``) adjusted for every split in this store (labels and accounting:
        both look forward on purpose)."""
        frame, _ = self._slices("prices").get(canonical_ticker(ticker), (None, None))
        if frame is None:
            raise KeyError(f"no prices for ticker {ticker!r} in store {self.path}; tickers: {self.tickers}")
        splits = self.visible("splits", canonical_ticker(ticker), frame["available_at"].iloc[-1])
        prices = () if column == "volume" else (column,)  # volumes are multiplied by the ratio, never divided
        return split_adjust(frame, splits, prices).set_index("date")[column].rename(ticker)

    def dividends(self, ticker: str) -> pd.Series:
        """Cash dividends per share on the same split basis as :meth:`closes`, indexed by ex-date."""
        frame, _ = self._slices("dividends").get(canonical_ticker(ticker), (None, None))
        if frame is None:
            return pd.Series(dtype=float, name=ticker)
        last = self._slices("prices")[canonical_ticker(ticker)][0]["available_at"].iloc[-1]
        splits = self.visible("splits", canonical_ticker(ticker), last)
        return split_adjust(frame, splits, ("amount",)).set_index("date")["amount"].rename(ticker)


@dataclass(frozen=True)
class PointInTime:
    """What was knowable about one ticker at one instant. Every accessor filters by ``available_at``."""

    store: Store
    ticker: str
    time: pd.Timestamp

    def rows(self, name: str) -> pd.DataFrame:
        """Rows of table ``name`` (this ticker's, or the market's for a market-wide table) available at ``time``, as
        stored: the properties below put per-share figures on the split basis of ``time``."""
        return self.store.visible(name, "*" if name in MARKET_WIDE else self.ticker, self.time)

    def _per_share(self, frame: pd.DataFrame) -> float | np.ndarray:
        """Per row of ``frame``, the multiplier that puts its per-share figures on the split basis of ``time`` (share
        counts divide by it): the vendors' restatement undone (the embedded store), or, for figures as reported
        (imported and synthetic stores), the splits known at ``time`` after each row became available."""
        if self.store.restated or frame.empty:
            return restatement_factor(self.ticker, self.time) if self.store.restated else 1.0
        splits = self.rows("splits")
        if splits.empty:
            return 1.0
        return 1 / split_factors(frame["available_at"].dt.tz_convert(NY).dt.tz_localize(None).dt.normalize(), splits)

    @property
    def prices(self) -> pd.DataFrame:
        """Daily bars adjusted for the splits known at ``time`` (so the levels match that day's news)."""
        return split_adjust(self.rows("prices"), self.rows("splits"))

    @property
    def dividends(self) -> pd.DataFrame:
        """Cash dividends per share on the split basis of ``time`` (stored as paid)."""
        return split_adjust(self.rows("dividends"), self.rows("splits"), ("amount",))

    @property
    def news(self) -> pd.DataFrame:
        return self.rows("news")

    @property
    def market_news(self) -> pd.DataFrame:
        return self.store.visible("news", "MARKET", self.time)

    @property
    def fundamentals(self) -> pd.DataFrame:
        """Statement line items; EPS and share counts on the split basis of ``time``."""
        frame = self.rows("fundamentals")
        factor = self._per_share(frame)
        if np.all(factor == 1):
            return frame
        value = frame["value"].where(~frame["item"].isin(PER_SHARE_ITEMS), frame["value"] * factor)
        return frame.assign(value=value.where(~frame["item"].isin(SHARE_COUNT_ITEMS), frame["value"] / factor))

    @property
    def profile(self) -> dict:
        p = self.rows("profiles")
        return p.iloc[-1].to_dict() if len(p) else {}

    @property
    def earnings(self) -> pd.DataFrame:
        """EPS estimate and actual per release on the split basis of ``time`` (the surprise is a ratio)."""
        frame = self.rows("earnings")
        factor = self._per_share(frame)
        if np.all(factor == 1):
            return frame
        return frame.assign(eps_estimate=frame["eps_estimate"] * factor, reported_eps=frame["reported_eps"] * factor)

    @property
    def recommendations(self) -> pd.DataFrame:
        return self.rows("recommendations")

    @property
    def insider(self) -> pd.DataFrame:
        """Form 4 transactions (filed as traded) on the split basis of ``time``, like :attr:`prices`."""
        return split_adjust_insider(self.rows("insider"), self.rows("splits"))

    @property
    def macro(self) -> pd.DataFrame:
        return self.rows("macro")

    @property
    def fomc(self) -> pd.DataFrame:
        return self.rows("fomc")
