"""Trading-R1 labels: the formula, the published class shares, and that nothing leaks."""

import numpy as np
import pandas as pd
import pytest

from tr1_env.cli import main as tr1
from tr1_env.data.schema import PAPER_TICKERS
from tr1_env.labels import LabelConfig, assign_labels, composite_signal, fit_thresholds, make_labels, warmup_sessions


def test_composite_signal_by_hand():
    rng = np.random.default_rng(0)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 80))), index=pd.bdate_range("2024-01-01", periods=80))
    s = composite_signal(close)
    ema = close.ewm(span=3, adjust=False).mean()
    vol = close.pct_change().rolling(20).std()
    t = 40
    expected = sum(w * (ema.iloc[t + h] / ema.iloc[t] - 1) / vol.iloc[t] for h, w in [(3, 0.3), (7, 0.5), (15, 0.2)])
    assert s.iloc[t] == pytest.approx(expected)
    assert s.iloc[-15:].isna().all() and s.iloc[-16:-15].notna().all()  # no label past the data end
    assert s.iloc[:20].isna().all()  # no volatility yet


def test_paper_class_shares(store):
    """On 2024-01-01..2025-05-31 over the 14 paper tickers: 3/12/38/32/15 % (within rounding)."""
    labels = pd.concat([make_labels(store.closes(t), "2024-01-01", "2025-05-31", "2024-01-01", "2025-05-31")["label"]
                        for t in PAPER_TICKERS])
    shares = labels.value_counts(normalize=True).sort_index().to_numpy() * 100
    assert np.round(shares).tolist() == [3, 12, 38, 32, 15]
    assert np.abs(shares - [3, 12, 38, 32, 15]).max() < 0.6


def test_assign_labels_cut_points():
    signal = pd.Series([-5.0, -1.0, 0.0, 1.0, 5.0, np.nan])
    labels = assign_labels(signal, np.array([-2.0, -0.5, 0.5, 2.0]))
    assert labels.iloc[:5].tolist() == [0, 1, 2, 3, 4] and pd.isna(labels.iloc[5])


@pytest.mark.parametrize("seed", range(8))
def test_label_at_t_ignores_prices_after_t_plus_15(store, seed):
    rng = np.random.default_rng(seed)
    close = store.closes("MSFT").loc["2022-01-01":"2025-05-30"]
    t = int(rng.integers(300, len(close) - 40))
    shocked = close.copy()
    shocked.iloc[t + 16:] *= np.exp(rng.normal(0, 0.2, len(close) - t - 16))
    a = make_labels(close, "2022-01-01", close.index[t])
    b = make_labels(shocked, "2022-01-01", close.index[t])
    pd.testing.assert_frame_equal(a.loc[: close.index[t]], b.loc[: close.index[t]])


@pytest.mark.parametrize("seed", range(8))
def test_thresholds_depend_only_on_the_window(store, seed):
    rng = np.random.default_rng(seed)
    close = store.closes(PAPER_TICKERS[seed]).loc["2019-01-01":]
    start = int(rng.integers(100, 800))
    end = start + int(rng.integers(60, 400))
    fs, fe = close.index[start], close.index[end]
    shocked = close.copy()
    shocked.iloc[end + 1:] *= np.exp(rng.normal(0, 0.3, len(close) - end - 1))
    shocked.iloc[: start - warmup_sessions(LabelConfig())] *= 3.0
    np.testing.assert_array_equal(fit_thresholds(close, fs, fe), fit_thresholds(shocked, fs, fe))
    # and the window itself does matter
    inside = close.copy()
    inside.iloc[start + 5: end - 20] *= np.exp(rng.normal(0, 0.05, end - start - 25))
    assert not np.array_equal(fit_thresholds(close, fs, fe), fit_thresholds(inside, fs, fe))


def test_short_fit_window_is_an_error(store):
    with pytest.raises(ValueError, match="fit window"):
        fit_thresholds(store.closes("AAPL"), "2024-06-03", "2024-06-20")


def test_labels_cli(capsys):
    tr1(["labels", "--ticker", "NVDA", "--start", "2024-06-03", "--end", "2024-06-14",
         "--fit-start", "2024-01-01", "--fit-end", "2024-05-31"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "date,signal,label" and len(lines) == 11
    assert lines[1].startswith("2024-06-03,") and lines[1].split(",")[2] in {"STRONG_SELL", "SELL", "HOLD", "BUY", "STRONG_BUY"}
