"""Table names, the ticker universe and ticker spellings shared by importers, vendors and the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The 15 tickers of the embedded store: Trading-R1's corpus of 14 large caps and ETFs, plus GOOGL.
TICKERS: tuple[str, ...] = ("NVDA", "AAPL", "MSFT", "AMZN", "META", "GOOGL", "TSLA", "BRK-B", "JPM", "LLY", "JNJ",
                            "XOM", "CVX", "SPY", "QQQ")
#: Trading-R1's corpus (the default training tickers).
PAPER_TICKERS: tuple[str, ...] = tuple(t for t in TICKERS if t != "GOOGL")



@dataclass(frozen=True)
class Table:
    """One store table: what it holds and how a build cuts its history (its importer: ``importers.IMPORTERS``)."""

    description: str
    cut: str | None = None  # the column cut at the build's first day (None: the table is kept whole)
    since: Literal["prices", "news"] = "prices"  # which first day: --prices-since, or --news-since (bulky texts)
    market_wide: bool = False  # one slice for the whole market; otherwise sliced per ticker (a ``ticker`` column)


#: One Parquet file per table, in this order; every table has an ``available_at`` (UTC) column.
SCHEMA: dict[str, Table] = {
    "prices": Table("daily OHLCV as traded (not split-adjusted), available at the 16:00 ET close", "date"),
    "dividends": Table("cash dividends per share as paid, available at the ex-date open", "date"),
    "splits": Table("stock splits (ratio new shares per old), available at the ex-date open"),
    "news": Table("company headlines (ticker) and market headlines (ticker MARKET), at publication", "available_at",
                  "news"),
    "fundamentals": Table("income/balance/cash-flow line items (long format), at filing or period end + lag",
                          "period_end"),
    "profiles": Table("company name, sector and industry (static)"),
    "earnings": Table("EPS estimate and actual per release, at the release time", "release_at"),
    "recommendations": Table("monthly analyst recommendation counts"),
    "insider": Table("SEC Form 4 insider transactions, at the end of the filing day", "filing_date"),
    "macro": Table("FRED series (long format), after their release lag", "date", market_wide=True),
    "fomc": Table("FOMC statements, projections and minutes", "available_at", "news", market_wide=True),
}
#: Each table's description (what a store's manifest lists).
TABLES: dict[str, str] = {name: table.description for name, table in SCHEMA.items()}
MARKET_WIDE = frozenset(name for name, table in SCHEMA.items() if table.market_wide)

_ALIASES = {"GOOG": "GOOGL", "BRK.B": "BRK-B", "BRK_B": "BRK-B", "BRKB": "BRK-B", "BRK-A": "BRK-B", "BRK.A": "BRK-B"}


def canonical_ticker(symbol: str) -> str:
    """One spelling per company: GOOG->GOOGL (Alphabet), BRK.B/BRK_B/BRK-A->BRK-B."""
    s = str(symbol).strip().upper()
    return _ALIASES.get(s, s)
