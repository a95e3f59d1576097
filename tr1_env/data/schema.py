"""Table names, the ticker universe and ticker spellings shared by importers, vendors and the store."""

from __future__ import annotations

#: The 15 tickers of the embedded store: Trading-R1's corpus of 14 large caps and ETFs, plus GOOGL.
TICKERS: tuple[str, ...] = ("NVDA", "AAPL", "MSFT", "AMZN", "META", "GOOGL", "TSLA", "BRK-B", "JPM", "LLY", "JNJ",
                            "XOM", "CVX", "SPY", "QQQ")
#: Trading-R1's corpus (the default training tickers).
PAPER_TICKERS: tuple[str, ...] = tuple(t for t in TICKERS if t != "GOOGL")

#: One Parquet file per table; every table has an ``available_at`` (UTC) column.
#: Tables with a ``ticker`` column are sliced per ticker by the point-in-time view.
TABLES: dict[str, str] = {
    "prices": "daily OHLCV as traded (not split-adjusted), available at the 16:00 ET close",
    "dividends": "cash dividends per share as paid, available at the ex-date open",
    "splits": "stock splits (ratio new shares per old), available at the ex-date open",
    "news": "company headlines (ticker) and market headlines (ticker MARKET), at publication",
    "fundamentals": "income/balance/cash-flow line items (long format), at filing or period end + lag",
    "profiles": "company name, sector and industry (static)",
    "earnings": "EPS estimate and actual per release, at the release time",
    "recommendations": "monthly analyst recommendation counts",
    "insider": "SEC Form 4 insider transactions, at the end of the filing day",
    "macro": "FRED series (long format), after their release lag",
    "fomc": "FOMC statements, projections and minutes",
}
MARKET_WIDE = frozenset({"macro", "fomc"})

_ALIASES = {"GOOG": "GOOGL", "BRK.B": "BRK-B", "BRK_B": "BRK-B", "BRKB": "BRK-B", "BRK-A": "BRK-B", "BRK.A": "BRK-B"}


def canonical_ticker(symbol: str) -> str:
    """One spelling per company: GOOG->GOOGL (Alphabet), BRK.B/BRK_B/BRK-A->BRK-B."""
    s = str(symbol).strip().upper()
    return _ALIASES.get(s, s)
