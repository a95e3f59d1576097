"""Live Finnhub vendor (finnhub-python): fetches into the same tables, with the same ``available_at`` rules.

The key comes from ``FINNHUB_API_KEY`` only; it is never stored, logged or put in a table, and since
finnhub-python sends it as ``?token=`` (so it sits in every failed request's URL), a failed call is
re-raised as a one-line :class:`FinnhubError` with the key scrubbed and the original chain dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tr1_env.data.clock import NY, vectorized_at_ny
from tr1_env.data.importers import finnhub_news, finnhub_recommendations
from tr1_env.data.schema import TABLES, canonical_ticker
from tr1_env.util.redact import scrub

KEY_ENV = "FINNHUB_API_KEY"

#: Finnhub's own spellings where they differ from ours.
FINNHUB_SYMBOL = {"BRK-B": "BRK.B"}

#: When an earnings release with a session flag becomes public (ET): before the open, after the close.
RELEASE_HOUR = {"bmo": (8, 0), "amc": (16, 30), "dmh": (13, 0)}


class FinnhubError(RuntimeError):
    """A Finnhub call that failed (network, HTTP status, bad payload), its message free of the key."""


def make_client(api_key: str | None = None):
    import finnhub

    key = api_key or os.environ.get(KEY_ENV)
    if not key:
        raise RuntimeError(f"Finnhub needs an API key: set the {KEY_ENV} environment variable")
    return finnhub.Client(api_key=key)


def news_frame(items: list[dict], ticker: str) -> pd.DataFrame:
    """/company-news -> news rows, by the importer's rules; repeated URLs and headlines dropped."""
    if not items:
        return pd.DataFrame()
    out = finnhub_news(items, ticker)
    out = out[out["title"].str.len() > 0]
    return out.drop_duplicates("url").drop_duplicates("title")


def recommendation_frame(items: list[dict]) -> pd.DataFrame:
    """/stock/recommendation -> monthly counts, by the importer's rules."""
    return finnhub_recommendations(pd.DataFrame(items)) if items else pd.DataFrame()


def insider_frame(payload: dict) -> pd.DataFrame:
    """/stock/insider-transactions -> Form 4 rows at the end of their filing day."""
    df = pd.DataFrame(payload.get("data", []))
    if df.empty:
        return df
    out = pd.DataFrame({
        "ticker": df["symbol"].map(canonical_ticker), "filing_date": pd.to_datetime(df["filingDate"]),
        "transaction_date": pd.to_datetime(df["transactionDate"], errors="coerce"), "insider": df["name"],
        "title": "", "code": df["transactionCode"], "shares": df["change"].abs().astype(float),
        "price": df["transactionPrice"].astype(float),
        "value": (df["change"].abs() * df["transactionPrice"]).astype(float), "shares_after": df["share"].astype(float),
        "accession": df.get("id", pd.Series([""] * len(df))).astype(str),
    })
    out = out[~(out["transaction_date"] > out["filing_date"])]
    return out.assign(available_at=vectorized_at_ny(out["filing_date"], 23, 59))


def earnings_frame(payload: dict) -> pd.DataFrame:
    """/calendar/earnings -> releases with a reported EPS, timed by their session flag."""
    df = pd.DataFrame(payload.get("earningsCalendar", []))
    if df.empty:
        return df
    df = df[df["epsActual"].notna()]
    day = pd.to_datetime(df["date"])
    hm = df["hour"].map(RELEASE_HOUR).fillna({i: (23, 59) for i in df.index})  # unknown session: end of day
    local = day + pd.to_timedelta([h * 60 + m for h, m in hm], unit="min")
    release = local.dt.tz_localize(NY).dt.tz_convert("UTC")
    est, act = df["epsEstimate"].astype(float), df["epsActual"].astype(float)
    return pd.DataFrame({
        "ticker": df["symbol"].map(canonical_ticker), "release_at": release, "eps_estimate": est,
        "reported_eps": act, "surprise_pct": ((act - est) / est.abs() * 100).round(2), "available_at": release,
    })


def candles_frame(payload: dict, ticker: str) -> pd.DataFrame:
    """/stock/candle (daily) -> price rows at each session's close."""
    if payload.get("s") == "no_data":
        return pd.DataFrame()
    if payload.get("s") != "ok":
        raise ValueError(f"Finnhub candles for {ticker}: status {payload.get('s')!r}")
    date = pd.to_datetime(pd.Series(payload["t"]), unit="s").dt.normalize()  # daily bars are stamped 00:00 UTC
    out = pd.DataFrame({"ticker": canonical_ticker(ticker), "date": date,
                        **{k: pd.Series(payload[c], dtype=float).round(4) for k, c in
                           [("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")]},
                        "volume": pd.Series(payload["v"]).astype("int64")})
    return out.assign(available_at=vectorized_at_ny(out["date"], 16, 0))


def quote_frame(payload: dict, ticker: str, now) -> pd.DataFrame:
    """/quote -> the session's bar, only once that session has closed at ``now`` (a quote during the session is
    no close); no volume on this endpoint (0). Free plans have no daily candles: this is their daily close."""
    if not payload.get("t"):
        return pd.DataFrame()
    day = pd.Timestamp(payload["t"], unit="s", tz="UTC").tz_convert(NY).tz_localize(None).normalize()
    close = vectorized_at_ny(pd.Series([day]), 16, 0).iloc[0]
    if pd.Timestamp(now) < close:
        return pd.DataFrame()
    return pd.DataFrame({"ticker": [canonical_ticker(ticker)], "date": [day],
                         **{k: [round(float(payload[c]), 4)] for k, c in
                            [("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")]},
                         "volume": pd.Series([0], dtype="int64"), "available_at": [close]})


def symbol(ticker: str) -> str:
    """Finnhub's spelling of a ticker."""
    return FINNHUB_SYMBOL.get(canonical_ticker(ticker), canonical_ticker(ticker))


def call_endpoint(client, endpoint: str, sym: str, *args, **kwargs):
    """``client.<endpoint>(...)``; any failure re-raised as a one-line FinnhubError without the key."""
    try:
        return getattr(client, endpoint)(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - requests, finnhub and JSON errors all carry the URL
        key = getattr(client, "api_key", None) or os.environ.get(KEY_ENV)
        detail = scrub(" ".join(str(exc).split())[:300], key)
        raise FinnhubError(f"Finnhub {endpoint} for {sym} failed: {type(exc).__name__}: {detail}") from None


@dataclass
class FinnhubUpdate:
    store: str = field(metadata={"help": "store folder to update in place"})
    tickers: tuple[str, ...] = field(metadata={"help": "tickers to fetch"})
    start: str = field(metadata={"help": "first day (YYYY-MM-DD)"})
    end: str = field(metadata={"help": "last day (YYYY-MM-DD)"})
    prices: bool = field(default=False, metadata={"help": "also fetch daily candles (a paid Finnhub endpoint)"})


def fetch(client, cfg: FinnhubUpdate) -> dict[str, pd.DataFrame]:
    """Every supported endpoint for every ticker, as store tables (not yet merged)."""
    frames: dict[str, list[pd.DataFrame]] = {"news": [], "recommendations": [], "insider": [], "earnings": [],
                                              "prices": []}
    lo, hi = pd.Timestamp(cfg.start), pd.Timestamp(cfg.end)
    for ticker in cfg.tickers:
        sym = symbol(ticker)

        def call(endpoint: str, *args, **kwargs):
            return call_endpoint(client, endpoint, sym, *args, **kwargs)

        frames["news"].append(news_frame(call("company_news", sym, _from=cfg.start, to=cfg.end), ticker))
        frames["recommendations"].append(recommendation_frame(call("recommendation_trends", sym)))
        frames["insider"].append(insider_frame(call("stock_insider_transactions", sym, cfg.start, cfg.end)))
        frames["earnings"].append(earnings_frame(call("earnings_calendar", _from=cfg.start, to=cfg.end, symbol=sym)))
        if cfg.prices:
            t0, t1 = (int(lo.tz_localize("UTC").timestamp()),
                      int((hi + pd.Timedelta(days=1)).tz_localize("UTC").timestamp()))
            frames["prices"].append(candles_frame(call("stock_candles", sym, "D", t0, t1), ticker))
    return {k: pd.concat([f for f in v if len(f)], ignore_index=True)
            for k, v in frames.items() if any(len(f) for f in v)}


DEDUP_KEYS = {"news": ["ticker", "url", "title"], "recommendations": ["ticker", "period"],
              "insider": ["ticker", "filing_date", "insider", "code", "shares", "price"],
              "earnings": ["ticker", "release_at"], "prices": ["ticker", "date"]}


def merge_into_store(store_path: str | Path, new: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Append fetched rows to the store's Parquet tables; rows already present win (no silent revisions)."""
    store_path = Path(store_path)
    added = {}
    for name, df in new.items():
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}")
        f = store_path / f"{name}.parquet"
        old = pd.read_parquet(f) if f.exists() else df.iloc[0:0]
        dtypes = {c: old[c].dtype for c in df.columns if c in old and len(old)}
        both = pd.concat([old, df.astype(dtypes, errors="ignore")], ignore_index=True)
        keys = [k for k in DEDUP_KEYS[name] if k in both]
        merged = both.drop_duplicates(keys, keep="first").sort_values("available_at", kind="stable")
        merged.reset_index(drop=True).to_parquet(f, index=False, compression="zstd")
        added[name] = len(merged) - len(old)
    return added


def update_store(cfg: FinnhubUpdate, client=None) -> dict[str, int]:
    """Fetch from Finnhub and merge into ``cfg.store``; returns rows added per table."""
    return merge_into_store(cfg.store, fetch(client or make_client(), cfg))
