"""Market clock: every timestamp in the store is UTC; decisions happen at the New York close."""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

NY = "America/New_York"


def at_ny(day, hour: int = 16, minute: int = 0) -> pd.Timestamp:
    """A New-York wall-clock time on ``day`` as a UTC timestamp (DST handled by tz_localize)."""
    ts = pd.Timestamp(day).normalize()
    if ts.tzinfo is not None:
        ts = ts.tz_localize(None)
    return (ts + pd.Timedelta(hours=hour, minutes=minute)).tz_localize(NY).tz_convert("UTC")


@lru_cache(maxsize=1 << 16)
def decision_time(day) -> pd.Timestamp:
    """The decision for trading day ``day`` is taken at its 16:00 ET close: nothing later may be seen (remembered:
    a replay asks for each session's close once per ticker and agent, and the time zone arithmetic is slow)."""
    return at_ny(day, 16, 0)


def vectorized_at_ny(days: pd.Series, hour: int = 16, minute: int = 0) -> pd.Series:
    """Vector form of :func:`at_ny` for whole columns."""
    d = pd.to_datetime(days).dt.tz_localize(None).dt.normalize() + pd.Timedelta(hours=hour, minutes=minute)
    return d.dt.tz_localize(NY, ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")


def next_open(day) -> pd.Timestamp:
    """The 09:30 ET open of the next weekday after ``day``: the earliest a next-open order can fill. Exchange
    holidays are not skipped, so a deadline taken from it is never later than the real open."""
    return at_ny(pd.Timestamp(day).normalize() + pd.offsets.BDay(1), 9, 30)


class Clock:
    """The time a live run believes it is (UTC). Forward runs take one instead of reading the wall clock, so a
    test can walk them through two weeks of sessions in a second."""

    def now(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC")


class SimulatedClock(Clock):
    """A clock that stands still until it is set (``set``) or moved (``advance``)."""

    def __init__(self, t):
        self.set(t)

    def set(self, t) -> None:
        ts = pd.Timestamp(t)
        self.t = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    def advance(self, delta) -> None:
        self.t = self.t + pd.Timedelta(delta)

    def now(self) -> pd.Timestamp:
        return self.t
