"""A synthetic store, deterministic by seed: for load tests at any size and for planted-signal tests.

Daily log returns follow a factor model, ``r = beta * market + loading * sector + idiosyncratic``, each factor a
GARCH(1, 1) with Student-t (5 degrees of freedom) shocks, so volatility clusters and tails are fat; yearly
volatility is about 16 % for the market, 10 % for a sector and 15-40 % idiosyncratic. Prices are stored as traded
(splits undone), with volumes, cash dividends and splits in the same tables and by the same availability rules as the
real store; headlines and quarterly statements are templated, stamped by those rules. With ``signal_ic`` > 0 each
headline published before a close carries a tone whose correlation with the next session's log return is
``signal_ic`` (the tone is shown as the headline's Positive / Neutral / Negative sentiment and its wording; the
label, a coarsened tone, keeps about 0.8 of it), so a test can check that the harness finds a signal it was given.

Nothing here can pass for market data: tickers are ``SYN0001``..., companies "Synthetic Company 0001", every
headline and statement says it is synthetic, and the manifest's ``synthetic`` entry makes every run report say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.data.build import empty_table, publish_store
from tr1_env.data.clock import vectorized_at_ny
from tr1_env.data.importers import MARKET
from tr1_env.data.schema import TABLES

__all__ = ["SynthConfig", "synth_store", "synth_tables"]

SECTORS = ("Technology", "Financials", "Health Care", "Energy", "Industrials", "Consumer", "Utilities", "Materials")
MODEL = ("log return = beta x market + loading x sector + idiosyncratic; each a GARCH(1,1) (alpha 0.08, beta 0.90) "
         "with Student-t(5) shocks; yearly vol market 16%, sector 10%, idiosyncratic 15-40%")
_TEMPLATES = {
    "Positive": ("{name} beats expectations as demand for its {product} grows",
                 "Analysts raise targets on {name} after strong {product} orders",
                 "{name} wins a large {product} contract"),
    "Neutral": ("{name} to present at an industry conference next month",
                "{name} names a new head of its {product} unit",
                "{name} reaffirms its {product} plans"),
    "Negative": ("{name} falls after a warning on {product} demand",
                 "Analysts cut estimates for {name} on weaker {product} sales",
                 "{name} delays its next {product} launch"),
}
_PRODUCTS = ("software", "chip", "cloud", "drug", "battery", "loan", "retail", "engine", "network", "energy")


@dataclass
class SynthConfig:
    """``tr1 data synth``: the store's size, seed and planted signal."""

    out: str = field(metadata={"help": "new store folder (new, empty, or a store to replace)"})
    tickers: int = field(default=15, metadata={"help": "number of tickers (SYN0001 ...)"})
    years: float = field(default=10.0, metadata={"help": "years of sessions (252 a year, weekdays)"})
    seed: int = field(default=0, metadata={"help": "random seed: the same seed writes the same store"})
    start: str = field(default="2015-01-02", metadata={"help": "first session (YYYY-MM-DD)"})
    signal_ic: float = field(default=0.0, metadata={
        "help": "planted signal: correlation of a pre-close headline's tone with the next session's log return "
                "(0: tone is noise)"})
    news_rate: float = field(default=0.3, metadata={"help": "share of ticker-sessions with a company headline"})


def _garch(rng: np.random.Generator, days: int, vol: np.ndarray) -> np.ndarray:
    """Days x len(vol) GARCH(1,1) series with Student-t(5) shocks and yearly volatility ``vol``."""
    a, b = 0.08, 0.90
    target = (vol / np.sqrt(252)) ** 2
    shocks = rng.standard_t(5, size=(days, len(vol))) / np.sqrt(5 / 3)
    var, out = target.copy(), np.empty((days, len(vol)))
    for t in range(days):
        out[t] = np.sqrt(var) * shocks[t]
        var = target * (1 - a - b) + a * out[t] ** 2 + b * var
    return out


def _later_splits(days: pd.DatetimeIndex, split_day: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Days x tickers: product of the ratios of each ticker's split after the day (1 where none)."""
    before = days.to_numpy()[:, None] < split_day[None, :]
    return np.where(before, ratio[None, :], 1.0)


def synth_tables(cfg: SynthConfig) -> dict[str, pd.DataFrame]:
    """Every table of the store, simulated (see the module's docstring)."""
    if cfg.tickers < 1 or cfg.tickers > 9999 or cfg.years <= 0:
        raise ValueError(f"--tickers {cfg.tickers} --years {cfg.years:g}: need 1..9999 tickers and years > 0")
    if not 0 <= cfg.signal_ic < 1 or not 0 < cfg.news_rate <= 1:
        raise ValueError(f"--signal-ic {cfg.signal_ic:g} --news-rate {cfg.news_rate:g}: "
                         "need 0 <= ic < 1 and 0 < rate <= 1")
    rng = np.random.default_rng(cfg.seed)
    n, days = cfg.tickers, pd.bdate_range(cfg.start, periods=max(2, round(252 * cfg.years)))
    T = len(days)
    tickers = np.array([f"SYN{i + 1:04d}" for i in range(n)])
    sector = rng.integers(len(SECTORS), size=n)
    beta = np.clip(rng.normal(1.0, 0.25, n), 0.3, 1.8)
    loading = rng.uniform(0.5, 1.5, n)
    idio_vol = rng.uniform(0.15, 0.40, n)
    market = _garch(rng, T, np.array([0.16]))[:, 0] + 0.0003
    sectors = _garch(rng, T, np.full(len(SECTORS), 0.10))
    idio = _garch(rng, T, idio_vol)
    returns = beta * market[:, None] + loading * sectors[:, sector] + idio  # total log returns, T x n

    # headlines: tone z per ticker-session; pre-close ones move the next session by a * z (correlation signal_ic)
    has_news = rng.random((T, n)) < cfg.news_rate
    tone = rng.standard_normal((T, n))
    after_close = rng.random((T, n)) < 0.1
    sd = np.sqrt((beta * 0.16) ** 2 + (loading * 0.10) ** 2 + idio_vol ** 2) / np.sqrt(252)
    a = cfg.signal_ic * sd / np.sqrt(1 - cfg.signal_ic ** 2)
    planted = np.where(has_news & ~after_close, tone, 0.0) * a
    returns[1:] += planted[:-1]

    # dividends: half the tickers pay quarterly; the price falls by the payout on the ex-date
    payer = rng.random(n) < 0.5
    dividend_yield = rng.uniform(0.01, 0.04, n) * payer
    ex = (np.arange(T)[:, None] % 63 == rng.integers(20, 63, n)[None, :]) & payer
    price_returns = returns + np.where(ex, np.log1p(-dividend_yield / 4), 0.0)
    # splits: a quarter of the tickers split once after their first year
    splits_at = rng.random(n) < 0.25
    split_ratio = np.where(splits_at, rng.choice([2.0, 3.0, 4.0, 10.0], n), 1.0)
    split_index = rng.integers(min(252, T - 1), T, n)
    split_day = np.where(splits_at, days.to_numpy()[split_index], np.datetime64("NaT"))
    never = days.to_numpy()[-1] + np.timedelta64(1, "D")
    split_or_never = np.where(splits_at, split_day, never)
    factor = _later_splits(days, split_or_never, split_ratio)
    start_traded = np.exp(rng.uniform(np.log(20), np.log(300), n))
    close = start_traded / factor[0] * np.exp(np.cumsum(price_returns, axis=0) - price_returns[0])  # final basis
    overnight = 0.4 * price_returns + rng.normal(0, 0.1, (T, n)) * sd
    opening = np.vstack([close[:1], close[:-1]]) * np.exp(overnight)
    opening[0] = close[0]
    spread = np.abs(rng.normal(0, 0.5, (T, n))) * sd
    high = np.maximum(opening, close) * np.exp(spread)
    low = np.minimum(opening, close) * np.exp(-np.abs(rng.normal(0, 0.5, (T, n))) * sd)
    base_volume = np.exp(rng.uniform(np.log(2e5), np.log(2e7), n))
    volume = base_volume * np.exp(0.4 * rng.standard_normal((T, n)) + 0.3 * np.abs(returns) / sd)

    flat = {"ticker": np.tile(tickers, T), "date": np.repeat(days.to_numpy(), n)}
    f = factor.ravel()
    prices = pd.DataFrame({**flat, **{k: (v.ravel() * f).round(4) for k, v in
                                      (("open", opening), ("high", high), ("low", low), ("close", close))},
                           "volume": (volume.ravel() / f).round().astype("int64")})
    prices["available_at"] = vectorized_at_ny(prices["date"], 16, 0)

    row, col = np.nonzero(ex)
    prev_close = close[np.maximum(row - 1, 0), col]
    dividends = pd.DataFrame({"ticker": tickers[col], "date": days[row],
                              "amount": (dividend_yield[col] / 4 * prev_close * factor[row, col]).round(4)})
    dividends["available_at"] = vectorized_at_ny(dividends["date"], 9, 30)
    splits = pd.DataFrame({"ticker": tickers[splits_at], "date": pd.to_datetime(split_day[splits_at]),
                           "ratio": split_ratio[splits_at]})
    splits["available_at"] = vectorized_at_ny(splits["date"], 9, 30)

    names = np.char.add("Synthetic Company ", np.char.zfill(np.arange(1, n + 1).astype(str), 4))
    news = _news(rng, days, tickers, names, has_news, tone, after_close, market)
    fundamentals, earnings = _statements(rng, days, tickers, split_or_never, split_ratio, base_volume)
    profiles = pd.DataFrame({"ticker": tickers, "name": names, "sector": [f"{SECTORS[s]} (synthetic)" for s in sector],
                             "industry": "synthetic", "available_at": pd.Timestamp("1990-01-01", tz="UTC")})
    made = {"prices": prices, "dividends": dividends, "splits": splits, "news": news, "fundamentals": fundamentals,
            "profiles": profiles, "earnings": earnings}
    out = {}
    for name in TABLES:
        empty = empty_table(name)
        frame = made.get(name)
        out[name] = empty if frame is None else frame[list(empty.columns)].astype(empty.dtypes.to_dict())
    return out


def _news(rng: np.random.Generator, days: pd.DatetimeIndex, tickers: np.ndarray, names: np.ndarray,
          has_news: np.ndarray, tone: np.ndarray, after_close: np.ndarray, market: np.ndarray
          ) -> pd.DataFrame:
    """Company headlines (09:35-15:55 ET, or 16:05-20:00 ET for the after-close tenth) and one market headline after
    each close; the sentiment label is the tone's tercile."""
    row, col = np.nonzero(has_news)
    z = tone[row, col]
    label = np.where(z > 0.43, "Positive", np.where(z < -0.43, "Negative", "Neutral"))
    minutes = np.where(after_close[row, col], rng.integers(16 * 60 + 5, 20 * 60, len(row)),
                       rng.integers(9 * 60 + 35, 15 * 60 + 55, len(row)))
    published = vectorized_at_ny(pd.Series(days[row]), 0, 0) + pd.to_timedelta(minutes, "min")
    pick = rng.integers(3, size=len(row))
    product = np.array(_PRODUCTS)[rng.integers(len(_PRODUCTS), size=len(row))]
    titles = [_TEMPLATES[lab][k].format(name=nm, product=p)
              for lab, k, nm, p in zip(label, pick, names[col], product)]
    company = pd.DataFrame({"ticker": tickers[col], "published_at": published.to_numpy(), "title": titles,
                            "sentiment": label})
    moves = np.where(market >= 0, "rise", "fall")
    market_news = pd.DataFrame({
        "ticker": MARKET, "published_at": vectorized_at_ny(pd.Series(days), 17, 0).to_numpy(),
        "title": [f"Synthetic market: stocks {m} {abs(r) * 100:.1f}% in the session" for m, r in zip(moves, market)],
        "sentiment": np.where(market >= 0, "Positive", "Negative")})
    news = pd.concat([company, market_news], ignore_index=True).sort_values(["published_at", "ticker"], kind="stable")
    news["available_at"] = news["published_at"]
    return news.assign(summary="Synthetic headline (tr1 data synth); not market news.",
                       source="tr1 synth", url="", vendor="synthetic").reset_index(drop=True)


def _statements(rng: np.random.Generator, days: pd.DatetimeIndex, tickers: np.ndarray, split_day: np.ndarray,
                split_ratio: np.ndarray, base_volume: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quarterly income statements (available period end + 45 days at 23:59 ET, the store's quarterly rule) and
    earnings releases (16:05 ET, 20-40 days after the period), figures as reported on the day's share basis."""
    n = len(tickers)
    quarters = pd.date_range(days[0], days[-1], freq="QE")
    if not len(quarters):
        return empty_table("fundamentals"), empty_table("earnings")
    q = len(quarters)
    shares = base_volume * 200  # shares outstanding on the final basis
    revenue = np.exp(rng.normal(np.log(shares * 2), 0.5, n))[None, :] * np.exp(
        np.cumsum(rng.normal(0.015, 0.05, (q, n)), axis=0))
    net_income = revenue * (rng.uniform(0.05, 0.25, n)[None, :] + rng.normal(0, 0.03, (q, n)))
    release = np.busday_offset((quarters.to_numpy()[:, None] + rng.integers(20, 41, (q, n)).astype("timedelta64[D]")
                                ).astype("datetime64[D]"), 0, roll="forward").astype("datetime64[ns]")
    # shares on the traded basis of the release day: the final count over the later splits' product
    traded_shares = shares[None, :] / np.where(release < split_day[None, :], split_ratio[None, :], 1.0)
    eps = net_income / traded_shares
    items = {"Total Revenue": revenue, "Net Income": net_income, "Diluted EPS": eps,
             "Diluted Average Shares": traded_shares}
    period = np.repeat(quarters.to_numpy(), n)
    frames = [pd.DataFrame({"ticker": np.tile(tickers, q), "statement": "income", "freq": "quarterly",
                            "period_end": period, "item": item, "value": values.ravel().round(4),
                            "vendor": "synthetic"}) for item, values in items.items()]
    fundamentals = pd.concat(frames, ignore_index=True)
    fundamentals["available_at"] = vectorized_at_ny(fundamentals["period_end"] + pd.Timedelta(days=45), 23, 59)
    estimate = eps * (1 + rng.normal(0, 0.05, (q, n)))
    earnings = pd.DataFrame({"ticker": np.tile(tickers, q),
                             "release_at": vectorized_at_ny(pd.Series(release.ravel()), 16, 5).to_numpy(),
                             "eps_estimate": estimate.ravel().round(4), "reported_eps": eps.ravel().round(4),
                             "surprise_pct": (100 * (eps - estimate) / np.abs(estimate)).ravel().round(2)})
    earnings["available_at"] = earnings["release_at"]
    keep = earnings["release_at"] <= vectorized_at_ny(pd.Series([days[-1]]), 16, 0).iloc[0]
    return fundamentals, earnings[keep].sort_values(["ticker", "release_at"]).reset_index(drop=True)


def synth_store(cfg: SynthConfig) -> dict[str, int]:
    """Simulate and write the store at once (``publish_store``); returns rows per table."""
    tables = synth_tables(cfg)
    manifest = {
        "source": "synthetic",
        "synthetic": {**{k: v for k, v in asdict(cfg).items() if k != "out"}, "model": MODEL},
        "per_share": "as_reported",
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "available_at": {"prices": "16:00 ET close", "dividends": "ex-date 09:30 ET", "splits": "ex-date 09:30 ET",
                         "news": "publication", "fundamentals": "period end + 45 days, 23:59 ET",
                         "earnings": "release, 16:05 ET"},
        "notes": ["SYNTHETIC DATA from tr1 data synth: simulated prices, headlines and statements, not market data."],
    }
    return publish_store(Path(cfg.out), tables, manifest)
