"""The numeric features: one definition of each, shared by the contexts and the Trading env.

Market features are columns over a daily history, computed from the first session of the history
given (never a trailing cut of it): every column is a trailing window or a recursion from the first
row, so row ``t`` depends only on rows ``<= t`` and is the same whatever follows it. The context
features add the news, earnings, statements, insider, analyst and macro values of one ticker-day;
they are pure functions of numbers the context builders select point-in-time.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from stockstats import wrap

#: stockstats indicators shown in contexts (and kept in ``Observation.history``).
INDICATORS: tuple[str, ...] = ("close_10_sma", "close_50_sma", "close_200_sma", "macd", "macds", "macdh", "rsi_14",
                               "boll", "boll_ub", "boll_lb", "atr_14", "vwma_14")
OHLCV: tuple[str, ...] = ("date", "open", "high", "low", "close", "volume")

#: Per-session market features (scale-free; warm-up NaNs are 0). The Trading env observes these.
MARKET_FEATURES: tuple[str, ...] = ("ret_1d", "ret_5d", "ret_10d", "vol_20d", "rsi_14", "macdh_norm", "boll_pos",
                                    "sma10_gap", "sma50_gap", "sma200_gap", "volume_z")
#: One ticker-day's features beyond the market: what a context's numeric vector adds.
EVENT_FEATURES: tuple[str, ...] = ("news_3d", "news_10d", "news_sentiment", "eps_surprise", "days_since_earnings",
                                   "rev_growth_yoy", "net_margin", "insider_net", "analyst_score", "fedfunds",
                                   "dgs10", "term_spread", "cpi_yoy", "unrate", "vix")
#: A context's numeric vector (``Context.features``, ``Observation.features``), in this order.
FEATURE_NAMES: tuple[str, ...] = (*MARKET_FEATURES, *EVENT_FEATURES)

SENTIMENT_SCORES = {"Positive": 1.0, "Negative": -1.0, "Neutral": 0.0}


def indicators(prices: pd.DataFrame) -> pd.DataFrame:
    """OHLCV plus the stockstats ``INDICATORS`` of a daily history, one row per session (RangeIndex)."""
    if prices.empty:
        return pd.DataFrame(columns=[*OHLCV, *INDICATORS])
    frame = wrap(prices[list(OHLCV)].set_index("date"))  # indexed already: stockstats' own set_index is deprecated
    return pd.DataFrame(frame[[*OHLCV[1:], *INDICATORS]]).reset_index()  # a plain frame, not stockstats' subclass


def market_features(history: pd.DataFrame) -> pd.DataFrame:
    """``MARKET_FEATURES`` plus ``close`` for each row of an :func:`indicators` frame, indexed by date."""
    close = history["close"].astype(float)
    log_close = np.log(close)
    ret_1d = log_close.diff()
    log_volume = np.log1p(history["volume"].astype(float))
    volume_mean = log_volume.rolling(60, min_periods=2).mean()
    volume_std = log_volume.rolling(60, min_periods=2).std(ddof=0)
    band = (history["boll_ub"] - history["boll_lb"]).clip(lower=1e-9)
    out = pd.DataFrame({
        "ret_1d": ret_1d,
        "ret_5d": log_close.diff(5),
        "ret_10d": log_close.diff(10),
        "vol_20d": ret_1d.rolling(20).std() * math.sqrt(252),
        "rsi_14": history["rsi_14"] / 100 - 0.5,
        "macdh_norm": history["macdh"] / close * 100,
        "boll_pos": (close - history["boll_lb"]) / band - 0.5,
        "sma10_gap": close / history["close_10_sma"] - 1,
        "sma50_gap": close / history["close_50_sma"] - 1,
        "sma200_gap": close / history["close_200_sma"] - 1,
        "volume_z": (log_volume - volume_mean) / (volume_std + 1e-9),
    }).fillna(0.0)
    out["close"] = close
    out.index = pd.DatetimeIndex(history["date"].to_numpy(), name="date")
    return out


def news_features(age_days: np.ndarray, sentiment: np.ndarray) -> dict[str, float]:
    """Headline counts (log1p) of the last 3 and 10 days and mean vendor sentiment (+1/0/-1, NaN if unrated)."""
    if not len(age_days):
        return {}
    rated = sentiment[~np.isnan(sentiment)]
    return {"news_3d": math.log1p(int((age_days <= 3).sum())), "news_10d": math.log1p(int((age_days <= 10).sum())),
            "news_sentiment": float(rated.mean()) if len(rated) else np.nan}


def earnings_features(surprise_pct: float, days_since: int) -> dict[str, float]:
    """The last release's EPS surprise (fraction) and its age in quarters (90 days)."""
    return {"eps_surprise": surprise_pct / 100, "days_since_earnings": days_since / 90}


def statement_features(revenue: float | None, net_income: float | None,
                       revenue_year_ago: float | None) -> dict[str, float]:
    """Net margin and year-over-year revenue growth of the latest quarterly income statement."""
    out = {}
    if revenue and net_income is not None:
        out["net_margin"] = net_income / revenue
    if revenue and revenue_year_ago is not None:
        out["rev_growth_yoy"] = revenue / revenue_year_ago - 1
    return out


def insider_net(purchases: float, sales: float) -> float:
    """Net open-market insider buying in USD, as a signed log1p."""
    net = purchases - sales
    return float(np.sign(net) * math.log1p(abs(net)))


def analyst_score(strong_buy: int, buy: int, hold: int, sell: int, strong_sell: int) -> float:
    """Consensus in [-2, 2]: strong buy 2, buy 1, hold 0, sell -1, strong sell -2, averaged over analysts."""
    n = strong_buy + buy + hold + sell + strong_sell
    return (2 * strong_buy + buy - sell - 2 * strong_sell) / max(n, 1)


def macro_features(latest: dict[str, float], cpi_yoy: float | None) -> dict[str, float]:
    """Rates, spread, unemployment and VIX from the latest FRED values (percent points scaled to ~1)."""
    get = lambda s: latest.get(s, np.nan)  # noqa: E731
    out = {"fedfunds": get("DFF") / 10, "dgs10": get("DGS10") / 10, "term_spread": get("DGS10") - get("DGS2"),
           "unrate": get("UNRATE") / 10, "vix": get("VIX") / 100}
    if cpi_yoy is not None:
        out["cpi_yoy"] = cpi_yoy / 10
    return out


def feature_vector(values: dict[str, float]) -> np.ndarray:
    """``FEATURE_NAMES`` in order as float32; absent, NaN and infinite values are 0."""
    row = np.array([values.get(k, np.nan) for k in FEATURE_NAMES], dtype=np.float32)
    row[~np.isfinite(row)] = 0.0
    return row
