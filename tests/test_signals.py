"""Signal tests against independent computations: scipy's Spearman per day, F1 by hand, forward returns by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tr1_env.evaluation import signals
from tr1_env.evaluation.metrics import hit_rate


def _panel(n_days: int, n_tickers: int, informed: float, seed: int) -> pd.DataFrame:
    """Ticker-days whose score carries ``informed`` of the next return's sign (ties in the scores on purpose)."""
    rng = np.random.default_rng(seed)
    days = np.repeat(pd.bdate_range("2024-01-02", periods=n_days), n_tickers)
    fwd = rng.normal(0, 0.02, len(days))
    score = np.where(rng.random(len(days)) < informed, 2 * np.sign(fwd), rng.integers(-2, 3, len(days)))
    label = np.clip(np.digitize(fwd, [-0.03, -0.01, 0.01, 0.03]), 0, 4).astype(float)
    return pd.DataFrame({"date": days, "score": score.astype(float), "fwd_1": fwd,
                         "fwd_h": fwd + rng.normal(0, 0.02, len(days)), "label": label})


def test_daily_rank_ic_is_scipys_spearman_per_day():
    frame = _panel(30, 8, 0.3, 0)
    frame.loc[frame.index[:5], "score"] = np.nan  # a day with 3 usable tickers is left out (min 5)
    ic = signals.daily_rank_ic(frame, "fwd_1")
    expected = {day: spearmanr(g["score"], g["fwd_1"])[0] for day, g in frame.dropna().groupby("date") if len(g) >= 5}
    assert list(ic.index) == list(expected) and ic.to_numpy() == pytest.approx(list(expected.values()))


def test_accuracy_macro_f1_and_hit_rate_by_hand():
    frame = _panel(40, 6, 0.5, 1)
    out = signals.signal_tests(frame, horizon=5, reps=200)
    pred, true = frame["score"].to_numpy().astype(int) + 2, frame["label"].to_numpy().astype(int)
    f1 = []
    for c in range(5):
        tp, fp = np.sum((pred == c) & (true == c)), np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    prior = np.bincount(true, minlength=5) / len(true)
    assert out["accuracy"] == pytest.approx(np.mean(pred == true)) and out["macro_f1"] == pytest.approx(np.mean(f1))
    assert out["accuracy_prior"] == pytest.approx(np.sum(prior ** 2)) and out["accuracy_majority"] == prior.max()
    assert out["hit_rate"] == pytest.approx(hit_rate(frame["score"], frame["fwd_1"]))
    for key in ("accuracy", "macro_f1", "hit_rate", "ic"):
        assert out[f"{key}_lo"] < out[key] < out[f"{key}_hi"]
    assert out["ic"] > 0.2 and out["ic_p"] < 1e-6 and out["n_calls"] == len(frame)


def test_uninformed_calls_are_not_significant_at_about_alpha():
    """Random calls: the IC's HAC p-value is below 0.05 in about 5% of 200 panels, not more."""
    rejected = sum(signals.signal_tests(_panel(60, 6, 0.0, seed), 5, reps=0)["ic_p"] < 0.05 for seed in range(200))
    assert rejected / 200 <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 200)  # 0.089


def test_overlapping_horizons_widen_the_hac_interval():
    """A 10-session forward return repeats most of the previous day's: lags h - 1 widen the interval."""
    rng = np.random.default_rng(3)
    overlapping = np.convolve(rng.normal(0, 1, 510), np.ones(10), "valid")[:500] / 10
    _, lo0, hi0, _ = signals.hac_mean(overlapping, 0)
    _, lo9, hi9, _ = signals.hac_mean(overlapping, 9)
    assert hi9 - lo9 > 2 * (hi0 - lo0)


def test_decision_rows_read_the_forward_closes():
    days = pd.bdate_range("2024-03-01", periods=6)
    closes = pd.Series([10.0, 11.0, 9.9, 9.9, 12.0, 13.2], index=days)
    rows = signals.decision_rows(pd.Series(["STRONG_BUY", "HOLD", "SELL"], index=days[[0, 1, 4]]), closes, 2,
                                 pd.Series([4, 2, 1], index=days[:3], dtype="Int8"))
    assert list(rows["score"]) == [2.0, 0.0, -1.0]
    assert rows["fwd_1"].to_numpy() == pytest.approx([0.1, -0.1, 0.1])
    assert rows["fwd_h"].to_numpy()[:2] == pytest.approx([-0.01, -0.1]) and np.isnan(rows["fwd_h"].iloc[2])
    assert rows["label"].iloc[:2].tolist() == [4.0, 2.0] and np.isnan(rows["label"].iloc[2])
    with pytest.raises(ValueError, match="2024-03-09"):
        signals.decision_rows(pd.Series(["HOLD"], index=[pd.Timestamp("2024-03-09")]), closes, 2)
