"""Universe membership by date: which tickers a portfolio may hold on which sessions.

A ticker is a member from its first session in the store to its last (it never exists before its data does); a
universe file (CSV with columns ``ticker, from, to``; an empty ``to`` means open-ended) narrows that further, so a
survivorship-free membership list gives survivorship-free books. A ticker may have several rows (it left and came
back). Membership is per decision day: a weight decided at the close of ``d`` is held to the next session's close,
so the ticker must be a member on both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store

__all__ = ["UNIVERSE_COLUMNS", "load_universe", "membership", "universe"]

UNIVERSE_COLUMNS = ("ticker", "from", "to")


def load_universe(path: str | Path) -> pd.DataFrame:
    """A universe file as a frame ``ticker, from, to`` (Timestamps; ``to`` NaT when open); a ValueError names the
    file, the row and the field of anything it cannot use."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: not a readable universe CSV ({exc})") from None
    missing = [c for c in UNIVERSE_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; a universe file has "
                         f"{', '.join(UNIVERSE_COLUMNS)}")
    rows = []
    for i, r in enumerate(raw.to_dict("records"), start=2):  # line 1 is the header
        if not r["ticker"].strip():
            raise ValueError(f"{path}, line {i}: field 'ticker' is empty")
        dates = {}
        for name in ("from", "to"):
            text = r[name].strip()
            if not text and name == "from":
                raise ValueError(f"{path}, line {i}: field 'from' is empty")
            try:
                dates[name] = pd.Timestamp(text) if text else pd.NaT
            except ValueError:
                raise ValueError(f"{path}, line {i}: field {name!r} is no date: {text!r}") from None
        if dates["to"] is not pd.NaT and dates["to"] < dates["from"]:
            raise ValueError(f"{path}, line {i}: 'to' {r['to']} is before 'from' {r['from']}")
        rows.append({"ticker": canonical_ticker(r["ticker"].strip()), **dates})
    return pd.DataFrame(rows, columns=list(UNIVERSE_COLUMNS))


def universe(store: Store, tickers: tuple[str, ...] | None = None, file: pd.DataFrame | None = None) -> pd.DataFrame:
    """Membership spans ``ticker, from, to`` of ``tickers`` (default: the file's, else the store's): each clipped to
    the ticker's first and last session in the store; a file ticker the store lacks is a ValueError."""
    if file is None:
        names = tickers or store.tickers
        spans = pd.DataFrame({"ticker": [canonical_ticker(t) for t in names], "from": pd.NaT, "to": pd.NaT})
    else:
        spans = file if tickers is None else file[file["ticker"].isin([canonical_ticker(t) for t in tickers])]
    unknown = sorted(set(spans["ticker"]) - set(store.tickers))
    if unknown:
        raise ValueError(f"universe ticker(s) {', '.join(unknown)} not in the store; it has {', '.join(store.tickers)}")
    out = []
    for r in spans.itertuples(index=False):
        days = store.trading_days(r.ticker)
        lo = days[0] if pd.isna(r[1]) else max(days[0], r[1])
        hi = days[-1] if pd.isna(r[2]) else min(days[-1], r[2])
        if lo <= hi:
            out.append({"ticker": r.ticker, "from": lo, "to": hi})
    return pd.DataFrame(out, columns=list(UNIVERSE_COLUMNS))


def membership(spans: pd.DataFrame, tickers: tuple[str, ...], days: pd.DatetimeIndex) -> np.ndarray:
    """Days x tickers booleans: may ``tickers[j]`` be held from the close of ``days[i]`` to that of ``days[i + 1]``
    (a member on both; never on the last day)."""
    held = np.zeros((len(days), len(tickers)), bool)
    for j, t in enumerate(tickers):
        for r in spans[spans["ticker"] == t].itertuples(index=False):
            held[:-1, j] |= np.asarray((days[:-1] >= r[1]) & (days[1:] <= r[2]))
    return held
