"""Importers: one function per raw source, each returning a store table stamped with ``available_at``.

Every rule here is conservative: when the true publication time is unknown, the row becomes
visible later, never earlier. The vendors' known traps are handled where they occur, each named.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.data.clock import NY, vectorized_at_ny
from tr1_env.data.schema import canonical_ticker

MARKET = "MARKET"  # pseudo-ticker for market-wide headlines
BOILERPLATE_REPEATS = 20  # a summary seen this often is a vendor template, not news

#: FRED series kept, with the file they sit in, their frequency and the release lag after the
#: observation date (monthly values are dated at the start of their month).
MACRO_SERIES: dict[str, tuple[str, str, pd.DateOffset, int]] = {
    # name: (file, freq, lag, release hour ET)
    "DFF": ("rates/rates.csv", "daily", pd.DateOffset(days=1), 18),
    "DGS3MO": ("rates/rates.csv", "daily", pd.DateOffset(days=1), 18),
    "DGS2": ("rates/rates.csv", "daily", pd.DateOffset(days=1), 18),
    "DGS10": ("rates/rates.csv", "daily", pd.DateOffset(days=1), 18),
    "FEDFUNDS": ("rates/rates.csv", "monthly", pd.DateOffset(months=1, days=1), 9),
    "CPI": ("inflation/inflation.csv", "monthly", pd.DateOffset(months=1, days=15), 9),
    "CORE_CPI": ("inflation/inflation.csv", "monthly", pd.DateOffset(months=1, days=15), 9),
    "T10YIE": ("inflation/inflation.csv", "daily", pd.DateOffset(days=1), 18),
    "UNRATE": ("labor/labor.csv", "monthly", pd.DateOffset(months=1, days=7), 9),
    "PAYEMS": ("labor/labor.csv", "monthly", pd.DateOffset(months=1, days=7), 9),
    "VIX": ("volatility/volatility.csv", "daily", pd.DateOffset(days=1), 18),
    "HY_OAS": ("volatility/volatility.csv", "daily", pd.DateOffset(days=1), 18),
    "UMCSENT": ("sentiment/sentiment.csv", "monthly", pd.DateOffset(months=1), 10),
}

#: Known-wrong earnings stamps: CVX's 2023-07-23 is a Sunday; it reported 07-28 before the open.
EARNINGS_CORRECTIONS = {("CVX", "2023-07-23"): "2023-07-28 07:00:00"}

#: FOMC text kinds and when each became public: statements and projections at 14:00 ET on the
#: meeting day, minutes three weeks later.
FOMC_DELAY = {"statement": pd.Timedelta(0), "sep": pd.Timedelta(0), "minutes": pd.Timedelta(days=21)}


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except FileNotFoundError:
        raise
    except Exception as exc:  # name the file in every parse error
        raise ValueError(f"{path}: cannot parse ({exc})") from exc


def _require(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


SPLITS_FILE = Path(__file__).with_name("splits.csv")


def import_splits(path: Path = SPLITS_FILE) -> pd.DataFrame:
    """Stock splits since 2015 (ex-dates), public record; the raw price files carry them only implicitly."""
    df = _read_csv(path)
    _require(df, ["ticker", "date", "ratio"], path)
    out = pd.DataFrame({"ticker": df["ticker"].map(canonical_ticker), "date": pd.to_datetime(df["date"]),
                        "ratio": df["ratio"].astype(float)})
    out["available_at"] = vectorized_at_ny(out["date"], 9, 30)  # effective at the ex-date open
    return out


def _later_splits(splits: pd.DataFrame, ticker: str, dates: pd.Series) -> np.ndarray:
    """Product of the ratios of ``ticker``'s splits after each date: adjusted -> as-traded factor."""
    own = splits[splits["ticker"] == ticker]
    factor = np.ones(len(dates))
    for day, ratio in zip(own["date"], own["ratio"]):
        factor[(dates < day).to_numpy()] *= ratio
    return factor


def import_prices(raw: Path, splits: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """OHLCV and cash dividends as traded on the day.

    The raw files are split-adjusted to 2026, which would tell a 2024 context about a split to come
    (NVDA at 115 in the week before its 10:1 split, beside news quoting 1,200): the store undoes every
    later split, and the point-in-time view re-applies only the splits known at the decision time.
    Float32 noise is rounded away (4 decimals).
    """
    prices, dividends = [], []
    folder = raw / "backtester39_yahoo_chart"
    for path in sorted(folder.glob("*.csv")):
        if path.stem.endswith("_dividends"):
            df = _read_csv(path)
            _require(df, ["Date", "Dividend"], path)
            ticker = canonical_ticker(path.stem[: -len("_dividends")])
            df = pd.DataFrame({"ticker": ticker, "date": pd.to_datetime(df["Date"]),
                               "amount": df["Dividend"].astype(float)})
            df["amount"] = (df["amount"] * _later_splits(splits, ticker, df["date"])).round(6)
            df["available_at"] = vectorized_at_ny(df["date"], 9, 30)  # known by the ex-date open
            dividends.append(df)
            continue
        df = _read_csv(path)
        _require(df, ["Date", "Open", "High", "Low", "Close", "Volume"], path)
        ohlc = df[["Open", "High", "Low", "Close"]]
        bad = (ohlc.isna() | (ohlc <= 0)).any(axis=1)  # any price may be filled at or logged (next-open fills)
        if bad.any():
            raise ValueError(f"{path}: row {int(np.flatnonzero(bad)[0]) + 2}: missing or non-positive price")
        ticker = canonical_ticker(path.stem)
        date = pd.to_datetime(df["Date"])
        factor = _later_splits(splits, ticker, date)
        out = pd.DataFrame({
            "ticker": ticker, "date": date,
            **{c.lower(): (df[c].astype(float) * factor).round(4) for c in ["Open", "High", "Low", "Close"]},
            "volume": (df["Volume"] / factor).round().astype("int64"),
        })
        if out["date"].duplicated().any():
            raise ValueError(f"{path}: duplicate dates "
                             f"{out.loc[out['date'].duplicated(), 'date'].dt.date.tolist()[:3]}")
        out["available_at"] = vectorized_at_ny(out["date"], 16, 0)
        prices.append(out)
    if not prices:
        raise FileNotFoundError(f"{folder}: no price files")
    return pd.concat(prices, ignore_index=True), pd.concat(dividends, ignore_index=True)


def _news_frame(ticker, published_at, available_at, title, summary, source, url, sentiment, vendor) -> pd.DataFrame:
    df = pd.DataFrame({"published_at": published_at, "available_at": available_at, "title": title})
    df = df.reset_index(drop=True).assign(summary=summary, source=source, url=url, sentiment=sentiment, vendor=vendor)
    df.insert(0, "ticker", ticker if isinstance(ticker, str) else pd.Series(ticker).values)
    for col in ("title", "summary", "source", "url"):
        df[col] = df[col].fillna("").astype(str).str.strip()
    return df[["ticker", "published_at", "available_at", "title", "summary", "source", "url", "sentiment", "vendor"]]


def import_news(raw: Path) -> pd.DataFrame:
    """Company and market headlines from four vendors, de-duplicated, stamped at publication."""
    frames = []
    for path in sorted((raw / "stocknewsapi_alexzhou77" / "news_data").glob("*_news_*.csv")):
        df = _read_csv(path)
        _require(df, ["news_url", "title", "text", "source_name", "date", "sentiment"], path)
        ts = pd.to_datetime(df["date"], format="%a, %d %b %Y %H:%M:%S %z", utc=True, errors="coerce")
        if ts.isna().any():
            row = int(np.flatnonzero(ts.isna())[0]) + 2
            raise ValueError(f"{path}: row {row}: unparseable date {df['date'].iloc[row - 2]!r}")
        frames.append(_news_frame(canonical_ticker(path.name.split("_news_")[0]), ts, ts, df["title"], df["text"],
                                  df["source_name"], df["news_url"], df["sentiment"], "stocknewsapi"))

    path = raw / "finnhub_news_pwang1092" / "XOM_news.json"
    if path.exists():
        items = json.loads(path.read_text())
        _require(pd.DataFrame(items[:1]), ["datetime", "headline", "summary", "source", "url", "related"], path)
        frames.append(finnhub_news(items))

    path = raw / "gnews_meta_vagmi20" / "META_news_2023.csv"
    if path.exists():
        df = _read_csv(path)
        _require(df, ["title", "description", "published date", "url", "publisher"], path)
        day = pd.to_datetime(df["published date"])
        publisher = df["publisher"].map(lambda s: ast.literal_eval(s).get("title", "") if isinstance(s, str) else "")
        title = df["title"].str.rsplit(" - ", n=1).str[0]  # GNews appends " - Publisher"
        # Date-only (a UTC date): visible from the next session, never the same day.
        frames.append(_news_frame("META", day.dt.tz_localize("UTC"), vectorized_at_ny(day, 23, 59), title, "",
                                  publisher, df["url"], None, "gnews"))

    path = raw / "sp500_headlines_shrutiapunjabi" / "sp500_headlines_2023-01_2024-03.csv"
    if path.exists():
        df = _read_csv(path)  # the CP column is that day's S&P close: look-ahead, dropped
        _require(df, ["Title", "Date"], path)
        day = pd.to_datetime(df["Date"])
        frames.append(_news_frame(MARKET, day.dt.tz_localize("UTC"), vectorized_at_ny(day, 23, 59), df["Title"], "",
                                  "", "", None, "sp500_headlines"))

    news = pd.concat(frames, ignore_index=True)
    news = news[news["title"].str.len() > 0]
    # Vendor boilerplate ("Looking for stock market analysis ... Zacks.com ...") repeats verbatim: not a summary.
    counts = news["summary"].map(news["summary"].value_counts())
    news.loc[(counts >= BOILERPLATE_REPEATS) & (news["summary"].str.len() > 0), "summary"] = ""
    news["url"] = news["url"].fillna("")
    # Repeated URLs (StockNewsAPI) and syndicated/re-posted headlines (Finnhub, GNews): keep the earliest.
    news = news.sort_values("available_at", kind="stable")
    has_url = news["url"].str.len() > 0
    dup_url = has_url & news.duplicated(["ticker", "url"])
    same_day = news.assign(day=news["available_at"].dt.tz_convert(NY).dt.date).duplicated(["ticker", "title", "day"])
    reposted = news["vendor"].isin(["finnhub", "gnews"]) & news.duplicated(["ticker", "title"])
    return news[~(dup_url | same_day | reposted)].reset_index(drop=True)


def _long_statement(ticker: str, statement: str, freq: str, data: dict, vendor: str, lag: pd.Timedelta) -> pd.DataFrame:
    rows = [(period, item, value) for period, items in (data or {}).items() for item, value in items.items()
            if value is not None and not (isinstance(value, float) and np.isnan(value))]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows, columns=["period_end", "item", "value"])
    df["period_end"] = pd.to_datetime(df["period_end"]).dt.tz_localize(None).dt.normalize()
    df.insert(0, "ticker", ticker)
    df.insert(1, "statement", statement)
    df.insert(2, "freq", freq)
    df["value"] = df["value"].astype(float)
    df["vendor"] = vendor
    df["available_at"] = vectorized_at_ny(df["period_end"] + lag, 23, 59)
    return df


SIMFIN_META = ["Ticker", "SimFinId", "Currency", "Fiscal Year", "Fiscal Period", "Report Date", "Publish Date",
               "Restated Date"]


def import_fundamentals(raw: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Financial statements (long format) and company profiles.

    Annual yfinance statements have no filing date: visible at fiscal year end + 60 days.
    Quarterly yfinance income: period end + 45 days. SimFin quarterly income: its filing (Publish) date.
    The 2026 snapshot fields (targets, ratios, recommendation) are never imported.
    """
    frames, profiles = [], []
    for path in sorted((raw / "richelieu_yfinance_snapshot" / "fundamentals").glob("*.json")):
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from exc
        ticker = canonical_ticker(d.get("ticker") or path.stem)
        profiles.append({"ticker": ticker, "name": d.get("name") or ticker, "sector": d.get("sector") or "",
                         "industry": d.get("industry") or ""})
        for key, statement in [("income_stmt", "income"), ("balance_sheet", "balance"), ("cashflow", "cashflow")]:
            frames.append(_long_statement(ticker, statement, "annual", d.get(key), "yfinance", pd.Timedelta(days=60)))
        frames.append(_long_statement(ticker, "income", "quarterly", d.get("quarterly_income"), "yfinance",
                                      pd.Timedelta(days=45)))

    for name in ["us-income-quarterly.csv", "us-income-banks-quarterly.csv"]:
        path = raw / "simfin_adrinc6" / name
        if not path.exists():
            continue
        df = _read_csv(path, sep=";")
        _require(df, SIMFIN_META, path)
        df["ticker"] = df["Ticker"].map(canonical_ticker)
        report = pd.to_datetime(df["Report Date"])
        publish = pd.to_datetime(df["Publish Date"])
        # JNJ 2020Q1 is "published" before its period ended: fall back to the 45-day rule.
        publish = publish.where(publish > report, report + pd.Timedelta(days=45))
        items = [c for c in df.columns if c not in SIMFIN_META + ["ticker", "Shares (Basic)", "Shares (Diluted)"]]
        long = df.assign(period_end=report, available_at=vectorized_at_ny(publish, 23, 59)).melt(
            id_vars=["ticker", "period_end", "available_at", "Ticker"], value_vars=items, var_name="item")
        long = long.dropna(subset=["value"])
        # BRK-A rows are internally inconsistent: keep only Net Income.
        long = long[(long["Ticker"] != "BRK-A") | (long["item"] == "Net Income")]
        long = long.assign(statement="income", freq="quarterly", vendor="simfin", value=long["value"].astype(float))
        frames.append(long[["ticker", "statement", "freq", "period_end", "item", "value", "vendor", "available_at"]])

    fundamentals = pd.concat([f for f in frames if len(f)], ignore_index=True)
    profile = pd.DataFrame(profiles)
    profile["available_at"] = pd.Timestamp("1990-01-01", tz="UTC")  # static descriptors only
    return fundamentals, profile


def import_earnings(raw: Path) -> pd.DataFrame:
    """EPS estimate/actual per release, timed by the EDGAR 8-K acceptance where we have it."""
    path = raw / "yfinance_eps_nicolelee1012" / "earnings_surprises_ourtickers.csv"
    df = _read_csv(path)
    _require(df, ["ticker", "earnings_date", "eps_estimate", "reported_eps", "surprise_pct"], path)
    df = df[df["ticker"] != "GOOG"].copy()  # GOOGL rows carry the same releases
    df["ticker"] = df["ticker"].map(canonical_ticker)
    for (ticker, day), fixed in EARNINGS_CORRECTIONS.items():
        hit = (df["ticker"] == ticker) & df["earnings_date"].str.startswith(day)
        df.loc[hit, "earnings_date"] = fixed
    stamp = pd.to_datetime(df["earnings_date"])
    df["day"] = stamp.dt.normalize()
    df = df.drop_duplicates(["ticker", "day"], keep="first")

    path = raw / "edgar_earnings_moneypuff" / "earnings_dates_edgar_ourtickers.csv"
    if path.exists():
        ed = _read_csv(path)
        _require(ed, ["ticker", "report_date", "accept_et"], path)
        ed = ed[ed["ticker"] != "GOOG"].assign(ticker=lambda x: x["ticker"].map(canonical_ticker))
        ed["day"] = pd.to_datetime(ed["report_date"])
        ed["accept"] = pd.to_datetime(ed["accept_et"].str.replace(" ET", "", regex=False))
        df = df.merge(ed[["ticker", "day", "accept"]], on=["ticker", "day"], how="left")
    else:
        df["accept"] = pd.NaT
    # yfinance clock times are unreliable: without an EDGAR time, use the end of that day.
    local = df["accept"].fillna(df["day"] + pd.Timedelta(hours=23, minutes=59))
    out = pd.DataFrame({
        "ticker": df["ticker"],
        "release_at": local.dt.tz_localize(NY).dt.tz_convert("UTC"),
        "eps_estimate": df["eps_estimate"].astype(float),
        "reported_eps": df["reported_eps"].astype(float),
        "surprise_pct": df["surprise_pct"].astype(float),
    })
    out["available_at"] = out["release_at"]
    return out.sort_values(["ticker", "release_at"]).reset_index(drop=True)


def finnhub_news(items: list[dict], ticker: str | None = None) -> pd.DataFrame:
    """Finnhub /company-news items as news rows (the raw XOM file is such a response).

    Only Yahoo items carry trustworthy times; other syndicators run ~5 h early: +6 h.
    """
    df = pd.DataFrame(items)
    ts = pd.to_datetime(df["datetime"], unit="s", utc=True)
    avail = ts.where(df["source"].eq("Yahoo"), ts + pd.Timedelta(hours=6))
    tickers = canonical_ticker(ticker) if ticker else df["related"].map(canonical_ticker)
    return _news_frame(tickers, ts, avail, df["headline"], df["summary"], df["source"], df["url"], None, "finnhub")


def finnhub_recommendations(df: pd.DataFrame) -> pd.DataFrame:
    """Finnhub /stock/recommendation rows; a month's counts are taken as known three days into the month."""
    period = pd.to_datetime(df["period"])
    return pd.DataFrame({
        "ticker": df["symbol"].map(canonical_ticker), "period": period,
        "strong_buy": df["strongBuy"], "buy": df["buy"], "hold": df["hold"], "sell": df["sell"],
        "strong_sell": df["strongSell"], "available_at": vectorized_at_ny(period + pd.Timedelta(days=3), 0, 0),
    }).sort_values(["ticker", "period"]).reset_index(drop=True)


def import_recommendations(raw: Path) -> pd.DataFrame:
    """The stored Finnhub recommendation trends (2022-09..2023-07)."""
    path = raw / "finnhub_rectrends_geoffpatton" / "recommendation_trends_ourtickers.csv"
    df = _read_csv(path)
    _require(df, ["symbol", "period", "strongBuy", "buy", "hold", "sell", "strongSell"], path)
    return finnhub_recommendations(df)


def import_insider(raw: Path) -> pd.DataFrame:
    """SEC Form 4 transactions, visible at the end of their filing day; impossible rows dropped."""
    frames = []
    for path in sorted((raw / "market_base" / "insider").glob("*.csv")):
        df = _read_csv(path)
        _require(df, ["filing_date", "transaction_date", "insider_name", "title", "code", "shares", "price",
                      "value", "shares_after", "accession"], path)
        df.insert(0, "ticker", canonical_ticker(path.stem))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True).rename(columns={"insider_name": "insider"})
    df["filing_date"] = pd.to_datetime(df["filing_date"])
    df["transaction_date"] = pd.to_datetime(df["transaction_date"], errors="coerce")
    # A trade cannot be reported before it happens (GOOG's 2027-01-25 row is a data error).
    df = df[~(df["transaction_date"] > df["filing_date"])].copy()
    df["available_at"] = vectorized_at_ny(df["filing_date"], 23, 59)
    return df.drop_duplicates().sort_values(["ticker", "filing_date"]).reset_index(drop=True)


def import_macro(raw: Path) -> pd.DataFrame:
    """FRED series (latest vintage: revisions are already applied), lagged by their release delay."""
    frames, cache = [], {}
    for series, (file, freq, lag, hour) in MACRO_SERIES.items():
        path = raw / "market_base" / "fred" / file
        if file not in cache:
            cache[file] = _read_csv(path, parse_dates=["date"])
        df = cache[file]
        _require(df, ["date", series], path)
        s = df[["date", series]].dropna()
        out = pd.DataFrame({"series": series, "freq": freq, "date": s["date"].values,
                            "value": s[series].astype(float).values})
        out["available_at"] = vectorized_at_ny(out["date"] + lag, hour, 0)
        frames.append(out)
    return pd.concat(frames, ignore_index=True)


def import_fomc(raw: Path) -> pd.DataFrame:
    """FOMC statements (14:00 ET on the meeting day) and minutes (three weeks after the meeting)."""
    path = raw / "market_base" / "fed" / "statements.csv"
    df = _read_csv(path, dtype={"date": str})
    _require(df, ["id", "date", "title", "url", "body", "kind"], path)
    meeting = pd.to_datetime(df["date"], format="%Y%m%d")
    delay = df["kind"].map(FOMC_DELAY)
    avail = vectorized_at_ny(meeting, 14, 0) + delay.fillna(pd.Timedelta(hours=10)).values
    return pd.DataFrame({"id": df["id"], "meeting_date": meeting, "kind": df["kind"], "title": df["title"],
                         "body": df["body"].fillna(""), "url": df["url"], "available_at": avail}
                        ).sort_values("available_at").reset_index(drop=True)



#: Each importer with the tables it fills, in order: an importer reads the raw folder and the tables filled before
#: it. A new table's importer is added here, its table to ``schema.SCHEMA``.
IMPORTERS: dict[tuple[str, ...], Callable[[Path, dict[str, pd.DataFrame]], pd.DataFrame | tuple[pd.DataFrame, ...]]] = {
    ("splits",): lambda raw, tables: import_splits(),
    ("prices", "dividends"): lambda raw, tables: import_prices(raw, tables["splits"]),
    ("news",): lambda raw, tables: import_news(raw),
    ("fundamentals", "profiles"): lambda raw, tables: import_fundamentals(raw),
    ("earnings",): lambda raw, tables: import_earnings(raw),
    ("recommendations",): lambda raw, tables: import_recommendations(raw),
    ("insider",): lambda raw, tables: import_insider(raw),
    ("macro",): lambda raw, tables: import_macro(raw),
    ("fomc",): lambda raw, tables: import_fomc(raw),
}
