"""Market data: daily bars with stockstats indicators, the last ``window`` sessions as a table, market features.

Market features are columns over a daily history, computed from the first session of the history given (never a
trailing cut of it): every column is a trailing window or a recursion from the first row, so row ``t`` depends only
on rows ``<= t`` and is the same whatever follows it. The index keeps them per split epoch: the prices as known
between two split announcements are one fixed series, so a day's rows are a prefix of it and causal indicators over
the prefix equal the whole series' first rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from stockstats import wrap

from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.base import Instant, Modality, Part, Section, fmt, ns, register, rows
from tr1_env.data.store import PointInTime, Store, split_adjust

#: stockstats indicators shown in contexts (and kept in ``Observation.history``).
INDICATORS: tuple[str, ...] = ("close_10_sma", "close_50_sma", "close_200_sma", "macd", "macds", "macdh", "rsi_14",
                               "boll", "boll_ub", "boll_lb", "atr_14", "vwma_14")
OHLCV: tuple[str, ...] = ("date", "open", "high", "low", "close", "volume")
#: Per-session market features (scale-free; warm-up NaNs are 0). The Trading env observes these.
MARKET_FEATURES: tuple[str, ...] = ("ret_1d", "ret_5d", "ret_10d", "vol_20d", "rsi_14", "macdh_norm", "boll_pos",
                                    "sma10_gap", "sma50_gap", "sma200_gap", "volume_z")
#: The columns of the section's table.
MARKET_COLUMNS = ("date", "open", "high", "low", "close", "volume", "rsi_14", "macd", "macdh", "boll_ub", "boll_lb",
                  "atr_14", "close_10_sma", "close_50_sma", "vwma_14")


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


def market_rows(hist: pd.DataFrame) -> list[str]:
    """One markdown table row per session of an indicator frame."""
    out = []
    for r in hist[list(MARKET_COLUMNS)].itertuples(index=False):
        cells = [pd.Timestamp(r.date).strftime("%Y-%m-%d"), *map(fmt, r[1:5]), f"{r.volume:,.0f}", *map(fmt, r[6:])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def market_text(table: list[str], closes: np.ndarray, sma200: float) -> str | None:
    """The last ``table`` rows under a summary of the closes known so far."""
    if len(closes) < 2:
        return None
    head = ["| " + " | ".join(MARKET_COLUMNS) + " |", "|" + "---|" * len(MARKET_COLUMNS)]
    return "\n".join([f"Last close {fmt(closes[-1])}; 5-day change {_pct(closes, 5)}; 15-day change "
                      f"{_pct(closes, 15)}; 200-day SMA {fmt(sma200)}.", *head, *table])


def _pct(c: np.ndarray, n: int) -> str:
    return f"{(c[-1] / c[-1 - n] - 1) * 100:+.2f}%" if len(c) > n else "n/a"


@dataclass
class Epoch:
    """One ticker's prices as known between two split announcements, with indicators and formatted rows."""

    history: pd.DataFrame
    features: np.ndarray  # MARKET_FEATURES per row
    closes: np.ndarray
    sma200: np.ndarray
    rows: list[str]


class MarketPart(Part):
    """A ticker's indicator frames, features and table rows per split epoch (computed on first need)."""

    def __init__(self, store: Store, ticker: str):
        self.prices, self.splits = rows(store, "prices", ticker), rows(store, "splits", ticker)
        self.price_at = ns(self.prices["available_at"])
        self.split_at = ns(self.splits["available_at"])
        self.sources = (self.prices, self.splits)
        self.epochs: list[Epoch | None] = [None] * (len(self.splits) + 1)

    def epoch(self, e: int) -> Epoch:
        """Prices adjusted for the first ``e`` splits, with indicators from the first session."""
        if self.epochs[e] is None:
            history = indicators(split_adjust(self.prices, self.splits.iloc[:e]))
            features = market_features(history)[list(MARKET_FEATURES)].to_numpy()
            self.epochs[e] = Epoch(history, features, history["close"].to_numpy(),
                                   history["close_200_sma"].to_numpy(), market_rows(history))
        return self.epochs[e]

    def section(self, at: Instant, cfg: ContextConfig) -> Section:
        n = int(self.price_at.searchsorted(at.t, "right"))
        epoch = self.epoch(int(self.split_at.searchsorted(at.t, "right")))
        text = market_text(epoch.rows[max(0, n - cfg.window):n], epoch.closes[:n], epoch.sma200[n - 1])
        return Section(text, dict(zip(MARKET_FEATURES, epoch.features[n - 1].tolist())),
                       {"history": lambda: epoch.history.iloc[:n]})

    def state(self) -> list[Epoch]:
        return [self.epoch(e) for e in range(len(self.epochs))]

    def restore(self, state: list[Epoch]) -> None:
        self.epochs = state

    def lines(self) -> list[tuple[str, tuple[str, ...]]]:
        columns = tuple(c.strip().lower().replace(" ", "_") for c in MARKET_COLUMNS)
        return [(row, columns) for epoch in self.state() for row in epoch.rows]


class Market(Modality):
    name, title, order = "market", "Market data", 10
    tables = ("prices", "splits")
    features = MARKET_FEATURES

    def reference(self, view: PointInTime, cfg: ContextConfig) -> Section:
        hist = indicators(view.prices)
        text = market_text(market_rows(hist.tail(cfg.window)), hist["close"].to_numpy(), hist["close_200_sma"].iloc[-1])
        return Section(text, dict(market_features(hist)[list(MARKET_FEATURES)].iloc[-1]), {"history": hist})

    def index(self, store: Store, ticker: str, market: Part | None) -> Part:
        return MarketPart(store, ticker)


register(Market())
