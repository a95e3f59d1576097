"""A user's own universe as a store: prices (and news, statements, dividends, splits, profiles, a membership file)
in one documented column schema, checked row by row, written as a store the whole package reads unchanged.

Every file is checked whole before anything is written, and the first defect is one line naming the file, the row
(``line N`` of a CSV, header = line 1; ``row N`` of a Parquet file, from 1) and the column. ``available_at`` may be
given per row; otherwise it is derived by the store's own rules (``RULES``, written into the manifest). Times
without a UTC offset are New York wall-clock times: read that way a UTC stamp becomes visible 4-5 hours late, never
early.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.data.build import empty_table, publish_store
from tr1_env.data.clock import NY, vectorized_at_ny
from tr1_env.data.importers import MARKET
from tr1_env.data.schema import TABLES, canonical_ticker
from tr1_env.data.universe import load_universe

__all__ = ["COLUMNS", "RULES", "ImportConfig", "RefusedInput", "import_store", "read_tables"]


class RefusedInput(ValueError):
    """A user file the store cannot use: the message is one line naming the file, the row and the column."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "text", "date" (a session), "instant" (a moment; a bare date allowed), "number", "positive"
    required: bool = True
    doc: str = ""


#: The documented schema, per file: its columns in order (``available_at``, optional everywhere, is added).
COLUMNS: dict[str, tuple[Column, ...]] = {
    "prices": (Column("ticker", "text"), Column("date", "date", doc="session (YYYY-MM-DD)"),
               Column("open", "positive", False, "default: close"), Column("high", "positive", False, "default: close"),
               Column("low", "positive", False, "default: close"), Column("close", "positive", doc="as traded"),
               Column("volume", "number", False, "shares; default 0")),
    "dividends": (Column("ticker", "text"), Column("date", "date", doc="ex-date"),
                  Column("amount", "positive", doc="cash per share as paid")),
    "splits": (Column("ticker", "text"), Column("date", "date", doc="ex-date"),
               Column("ratio", "positive", doc="new shares per old (2 for 2:1)")),
    "news": (Column("ticker", "text", doc="or MARKET for market-wide headlines"),
             Column("published_at", "instant", doc="publication time (a bare date: that day, time unknown)"),
             Column("title", "text"), Column("summary", "text", False), Column("source", "text", False),
             Column("url", "text", False), Column("sentiment", "text", False, "Positive, Negative or Neutral")),
    "fundamentals": (Column("ticker", "text"), Column("period_end", "date"), Column("item", "text",
                     doc="e.g. Total Revenue, Net Income, Diluted EPS (as reported)"), Column("value", "number"),
                     Column("statement", "text", False, "income, balance or cashflow; default income"),
                     Column("freq", "text", False, "quarterly or annual; default quarterly"),
                     Column("filed_at", "instant", False, "filing time (a bare date: the end of that day)"),
                     Column("vendor", "text", False, "where the figures come from (rows of two vendors may share a "
                                                     "period and item); default user")),
    "profiles": (Column("ticker", "text"), Column("name", "text"), Column("sector", "text", False),
                 Column("industry", "text", False)),
}

#: How ``available_at`` is derived when a file has none (and the event it may never precede when it has one).
RULES: dict[str, str] = {
    "prices": "the session's 16:00 ET close (date)",
    "dividends": "the ex-date's 09:30 ET open",
    "splits": "the ex-date's 09:30 ET open",
    "news": "published_at; a bare date at 23:59 ET of that day (visible from the next session)",
    "fundamentals": "filed_at (a bare date at 23:59 ET); without it period_end + 45 days (quarterly) or + 60 days "
                    "(annual) at 23:59 ET; never before the end of period_end",
    "profiles": "always (static descriptors)",
}
_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")
_BARE_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")


@dataclass
class ImportConfig:
    """``tr1 data import``: the user's files (each in :data:`COLUMNS`' schema) and the store to write."""

    prices: str = field(metadata={"help": "prices file, CSV or Parquet: ticker, date, [open, high, low,] close, "
                                          "[volume, available_at] (docs/data.md)"})
    out: str = field(metadata={"help": "new store folder (new, empty, or a store to replace)"})
    news: str | None = field(default=None, metadata={
        "help": "news file: ticker, published_at, title, [summary, source, url, sentiment, available_at]"})
    fundamentals: str | None = field(default=None, metadata={
        "help": "statements file (long format): ticker, period_end, item, value, [statement, freq, filed_at, vendor, "
                "available_at]"})
    dividends: str | None = field(default=None, metadata={"help": "dividends file: ticker, date, amount"})
    splits: str | None = field(default=None, metadata={
        "help": "splits file: ticker, date, ratio (prices are as traded; leave out when they are split-adjusted)"})
    profiles: str | None = field(default=None, metadata={"help": "profiles file: ticker, name, [sector, industry]"})
    universe: str | None = field(default=None, metadata={
        "help": "membership CSV (ticker, from, to): copied into the store as universe.csv for --universe"})


def _where(path: Path, i: int) -> str:
    """Row ``i`` (0-based data row) as the user sees it: a CSV's line (header = line 1) or a Parquet row (from 1)."""
    return f"line {i + 2}" if path.suffix.lower() != ".parquet" else f"row {i + 1}"


def _refuse(path: Path, i: int, column: str, what: str) -> RefusedInput:
    return RefusedInput(f"{path}, {_where(path, i)}, column {column!r}: {what}")


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise RefusedInput(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is one line naming the file
        raise RefusedInput(f"{path}: not a readable {'Parquet' if path.suffix == '.parquet' else 'CSV'} file "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _blank(s: pd.Series) -> np.ndarray:
    return (s.isna() | s.astype(str).str.strip().eq("")).to_numpy()


def _parse_time(s: pd.Series, path: Path, col: str, kind: str) -> tuple[pd.Series, np.ndarray]:
    """A date column as naive sessions, or an instant column as UTC; with a mask of bare dates (no clock time)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        tz = getattr(s.dtype, "tz", None)
        bare = np.zeros(len(s), bool) if tz is not None else (s == s.dt.normalize()).to_numpy()
        if kind == "date":
            return (s.dt.tz_convert(NY).dt.tz_localize(None) if tz else s).dt.normalize(), bare
        return (s.dt.tz_convert("UTC") if tz else s.dt.tz_localize(NY, ambiguous=False,
                                                                  nonexistent="shift_forward").dt.tz_convert("UTC")
                ), bare
    text = s.astype(str).str.strip()
    bare = text.str.match(_BARE_DATE).to_numpy()
    if kind == "date":
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if parsed.notna().all() and (parsed != parsed.dt.normalize()).any():
            i = int(np.flatnonzero((parsed != parsed.dt.normalize()).to_numpy())[0])
            raise _refuse(path, i, col, f"{text.iloc[i]!r} is a time, a session date (YYYY-MM-DD) is expected")
    else:
        aware = text.str.contains(_OFFSET).to_numpy()
        parsed = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
        if aware.any():
            parsed[aware] = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
        if (~aware).any():
            local = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce")
            parsed[~aware] = local.dt.tz_localize(NY, ambiguous=False, nonexistent="shift_forward").dt.tz_convert("UTC")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _refuse(path, i, col, f"unparseable date {text.iloc[i]!r} (ISO 8601 expected: YYYY-MM-DD, "
                                    "YYYY-MM-DD HH:MM[:SS][+HH:MM])")
    return parsed, bare


def _check_columns(df: pd.DataFrame, path: Path, table: str) -> None:
    spec = COLUMNS[table]
    missing = [c.name for c in spec if c.required and c.name not in df.columns]
    if missing:
        raise RefusedInput(f"{path}, line 1, column {missing[0]!r}: missing (a {table} file has "
                           f"{', '.join(c.name if c.required else f'[{c.name}]' for c in spec)}, [available_at])")
    for c in spec:
        if c.name in df.columns and c.required and c.kind == "text" and (bad := _blank(df[c.name])).any():
            raise _refuse(path, int(np.flatnonzero(bad)[0]), c.name, "empty")


def _numbers(df: pd.DataFrame, path: Path, col: str, positive: bool) -> pd.Series:
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce") if raw.dtype == object or str(raw.dtype).startswith("str") else raw
    values = values.astype(float)
    bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _refuse(path, i, col, f"not a number: {raw.iloc[i]!r}")
    low = (values <= 0) if positive else (values < 0) if col == "volume" else pd.Series(False, index=values.index)
    if low.any():
        i = int(np.flatnonzero(low.to_numpy())[0])
        raise _refuse(path, i, col, f"{'non-positive' if positive else 'negative'} value {values.iloc[i]:g}")
    return values


def _table(path: Path, table: str) -> tuple[pd.DataFrame, str]:
    """One user file as the store's table (columns, types, ``available_at``), and the rule that stamped it."""
    df = _read(path)
    _check_columns(df, path, table)
    out = pd.DataFrame(index=df.index)
    bare: dict[str, np.ndarray] = {}
    for c in COLUMNS[table]:
        present = c.name in df.columns
        if not present:
            continue
        if c.kind in ("date", "instant"):
            blank = _blank(df[c.name]) if not pd.api.types.is_datetime64_any_dtype(df[c.name]) else \
                df[c.name].isna().to_numpy()
            if blank.any() and c.required:
                raise _refuse(path, int(np.flatnonzero(blank)[0]), c.name, "empty")
            if blank.any():  # an optional instant (filed_at) may be left empty row by row
                parsed, bare[c.name] = _parse_time(df[c.name].where(~blank, "1970-01-01"), path, c.name, c.kind)
                out[c.name] = parsed.where(~blank)
            else:
                out[c.name], bare[c.name] = _parse_time(df[c.name], path, c.name, c.kind)
        elif c.kind in ("number", "positive"):
            out[c.name] = _numbers(df, path, c.name, c.kind == "positive")
        else:
            out[c.name] = df[c.name].fillna("").astype(str).str.strip()
    if "ticker" in out:
        out["ticker"] = out["ticker"].map(canonical_ticker)
    derived, event = _derive(out, table, bare, path)
    rule = RULES[table]
    if "available_at" in df.columns:
        given, _ = _parse_time(df["available_at"], path, "available_at", "instant")
        early = (given < event).to_numpy()
        if early.any():
            i = int(np.flatnonzero(early)[0])
            raise _refuse(path, i, "available_at", f"{given.iloc[i]} is before the event it stamps "
                                                   f"({_event(table)}: {event.iloc[i]})")
        derived, rule = given, "given in the file (checked: never before " + _event(table) + ")"
    out["available_at"] = derived
    return out, rule


def _event(table: str) -> str:
    return {"prices": "the session's close", "dividends": "the ex-date's open", "splits": "the ex-date's open",
            "news": "publication", "fundamentals": "the end of the period (or its filing)",
            "profiles": "-"}[table]


def _derive(t: pd.DataFrame, table: str, bare: dict[str, np.ndarray], path: Path) -> tuple[pd.Series, pd.Series]:
    """``available_at`` by :data:`RULES`, and the event it stamps (a given ``available_at`` may not precede it)."""
    if table == "prices":
        close = vectorized_at_ny(t["date"], 16, 0)
        return close, close
    if table in ("dividends", "splits"):
        opening = vectorized_at_ny(t["date"], 9, 30)
        return opening, opening
    if table == "news":
        day_end = vectorized_at_ny(t["published_at"].dt.tz_convert(NY).dt.tz_localize(None), 23, 59)
        return t["published_at"].where(~bare["published_at"], day_end), t["published_at"]
    if table == "fundamentals":
        quarterly = t.get("freq", pd.Series("quarterly", index=t.index)).replace("", "quarterly") != "annual"
        lagged = vectorized_at_ny(t["period_end"] + pd.to_timedelta(np.where(quarterly, 45, 60), "D"), 23, 59)
        period_end = vectorized_at_ny(t["period_end"], 23, 59)
        if "filed_at" not in t:
            return lagged, period_end
        filed = t["filed_at"]
        filed = filed.where(~bare["filed_at"], vectorized_at_ny(filed.dt.tz_convert(NY).dt.tz_localize(None), 23, 59))
        early = (filed < period_end).to_numpy()
        if early.any():
            i = int(np.flatnonzero(early)[0])
            raise _refuse(path, i, "filed_at", f"{filed.iloc[i]} is before the end of its period "
                                               f"{t['period_end'].iloc[i]:%Y-%m-%d}")
        return filed.where(filed.notna(), lagged), filed.where(filed.notna(), period_end)
    static = pd.Series(pd.Timestamp("1990-01-01", tz="UTC"), index=t.index)
    return static, static


def _no_duplicates(t: pd.DataFrame, path: Path, keys: list[str]) -> None:
    dup = t.duplicated(keys).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(t.duplicated(keys, keep=False).to_numpy()
                                   & (t[keys] == t[keys].iloc[i]).all(axis=1).to_numpy())[0])
        raise _refuse(path, i, keys[-1], f"duplicate ({', '.join(keys)}) {tuple(str(v) for v in t[keys].iloc[i])} "
                                         f"(first at {_where(path, first)})")


def _known_tickers(t: pd.DataFrame, path: Path, tickers: set[str], extra: frozenset[str] = frozenset()) -> None:
    unknown = ~t["ticker"].isin(tickers | extra).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise _refuse(path, i, "ticker", f"{t['ticker'].iloc[i]!r} has no prices in the prices file")


def read_tables(cfg: ImportConfig) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Every table of the store from the user's files (absent sources empty), and the rule that stamped each; the
    first defect is a :class:`RefusedInput`."""
    files = {name: Path(p) for name in COLUMNS if (p := getattr(cfg, name))}
    tables, rules = {}, {}
    for name, path in files.items():
        tables[name], rules[name] = _table(path, name)
    prices = tables["prices"]
    _no_duplicates(prices, files["prices"], ["ticker", "date"])
    for col in ("open", "high", "low"):
        if col not in prices:
            prices[col] = prices["close"]
    prices["volume"] = prices["volume"].round().astype("int64") if "volume" in prices else 0
    tickers = set(prices["ticker"])
    last = prices.groupby("ticker")["available_at"].max()
    for name in ("dividends", "splits"):
        if name in tables:
            _known_tickers(tables[name], files[name], tickers)
            _no_duplicates(tables[name], files[name], ["ticker", "date"])
    if "news" in tables:
        news = tables["news"]
        _known_tickers(news, files["news"], tickers, frozenset({MARKET}))
        limit = news["ticker"].map(last).fillna(last.max())
        late = (news["available_at"] > limit).to_numpy()
        if late.any():
            i = int(np.flatnonzero(late)[0])
            column = "available_at" if rules["news"].startswith("given") else "published_at"
            raise _refuse(files["news"], i, column, f"stamped {news['available_at'].iloc[i]}, after the last price of "
                          f"{news['ticker'].iloc[i]} ({limit.iloc[i]}): no decision could ever see it")
        for col in ("summary", "source", "url", "sentiment"):
            news[col] = news[col] if col in news else ""
        news["vendor"] = "user"
    if "fundamentals" in tables:
        f = tables["fundamentals"]
        _known_tickers(f, files["fundamentals"], tickers)
        f["statement"] = f["statement"].replace("", "income") if "statement" in f else "income"
        f["freq"] = f["freq"].replace("", "quarterly") if "freq" in f else "quarterly"
        f["vendor"] = f["vendor"].replace("", "user") if "vendor" in f else "user"
        _no_duplicates(f, files["fundamentals"], ["ticker", "vendor", "statement", "freq", "period_end", "item"])
    if "profiles" in tables:
        _known_tickers(tables["profiles"], files["profiles"], tickers)
        _no_duplicates(tables["profiles"], files["profiles"], ["ticker"])
        for col in ("sector", "industry"):
            tables["profiles"][col] = tables["profiles"][col] if col in tables["profiles"] else ""
    full = {}
    for name in TABLES:
        empty = empty_table(name)
        frame = tables.get(name)
        full[name] = empty if frame is None else frame[list(empty.columns)].astype(empty.dtypes.to_dict())
    return full, rules


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_store(cfg: ImportConfig) -> dict[str, int]:
    """Check every file, then write the store at once (``publish_store``); returns rows per table."""
    tables, rules = read_tables(cfg)
    universe = None
    if cfg.universe:
        path = Path(cfg.universe)
        try:
            universe = load_universe(path)
        except ValueError as exc:
            raise RefusedInput(str(exc)) from None
        _known_tickers(universe, path, set(tables["prices"]["ticker"]))
    files = {name: Path(p) for name in (*COLUMNS, "universe") if (p := getattr(cfg, name))}
    manifest = {
        "source": "imported",
        "per_share": "as_reported",
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "files": {name: {"name": p.name, "sha256": _sha256(p)} for name, p in files.items()},
        "available_at": rules,
        "notes": ["Imported from the user's files (tr1 data import); times without a UTC offset read as New York "
                  "time; per-share statement figures used as reported."],
    }
    extra = {}
    if universe is not None:  # written beside the tables, inside the same atomic publish
        manifest["universe"] = "universe.csv"
        extra["universe.csv"] = Path(cfg.universe)
    return publish_store(Path(cfg.out), tables, manifest, extra)

