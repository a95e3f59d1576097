"""Walk-forward windows: consecutive, never overlapping, each fit ending the day before its window."""

from __future__ import annotations

import pandas as pd
import pytest

from tr1_env.evaluation.windows import windows


def test_quarterly_windows_tile_the_span_without_overlap():
    ws = windows("quarterly", "2023-07-01", "2025-06-30")
    assert len(ws) == 8
    assert (ws[0].start, ws[0].end) == (pd.Timestamp("2023-07-01"), pd.Timestamp("2023-09-30"))
    assert (ws[-1].start, ws[-1].end) == (pd.Timestamp("2025-04-01"), pd.Timestamp("2025-06-30"))
    for a, b in zip(ws, ws[1:]):
        assert b.start == a.end + pd.Timedelta(days=1)  # consecutive, disjoint
    assert all(w.train_until == w.start - pd.Timedelta(days=1) for w in ws)


def test_monthly_and_single_and_partial_periods():
    ws = windows("monthly", "2024-01-15", "2024-03-10")
    assert [w.name for w in ws] == ["2024-01-15_2024-01-31", "2024-02-01_2024-02-29", "2024-03-01_2024-03-10"]
    (one,) = windows("single", "2024-06-01", "2024-08-31")
    assert one.name == "2024-06-01_2024-08-31" and one.train_until == pd.Timestamp("2024-05-31")


def test_explicit_windows_are_checked():
    ws = windows(["2024-01-01:2024-03-31", "2024-07-01:2024-09-30"])
    assert [w.train_until for w in ws] == [pd.Timestamp("2023-12-31"), pd.Timestamp("2024-06-30")]
    with pytest.raises(ValueError, match="overlap"):
        windows(["2024-01-01:2024-03-31", "2024-03-31:2024-06-30"])
    with pytest.raises(ValueError, match="START:END"):
        windows(["weekly"])
    with pytest.raises(ValueError, match="ends before"):
        windows(["2024-03-01:2024-01-01"])
