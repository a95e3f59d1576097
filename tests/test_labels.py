"""Trading-R1 labels: the formula, the published class shares, and that nothing leaks."""

import statistics

import numpy as np
import pandas as pd
import pytest

from tr1_env.cli import main as tr1
from tr1_env.core.actions import Action
from tr1_env.data.schema import PAPER_TICKERS
from tr1_env.scoring.labels import (
    LabelConfig,
    assign_labels,
    composite_signal,
    fit_thresholds,
    make_labels,
    warmup_sessions,
)


def step_series(jump_day: int = 40, n: int = 80) -> pd.Series:
    """100 until ``jump_day``, 110 from it on."""
    return pd.Series([100.0] * jump_day + [110.0] * (n - jump_day), index=pd.bdate_range("2024-01-01", periods=n))


def test_composite_signal_by_hand():
    """A step from 100 to 110 on day J, derived on paper (no pandas).

    EMA (span 3, alpha 1/2) is 100 before J and 110 - 10 * 2**-(k+1) on day J+k, so on day t = J-1-m
    r_h(t) = 0.1 * (1 - 2**(m-h)) for m < h and 0 for m >= h. On day J-1 (m = 0) each r_h is
    divided by the sample std of its 20 values r_h(J-20..J-1).
    """
    window = {h: [0.1 * (1 - 2.0 ** (m - h)) if m < h else 0.0 for m in range(20)] for h in (3, 7, 15)}
    s = {h: window[h][0] / statistics.stdev(window[h]) for h in (3, 7, 15)}
    assert s[3] == pytest.approx(0.0875 / 0.0266788281, rel=1e-8)  # r_3 = 0.0875 among 0.075, 0.05 and 17 zeros
    expected = 0.3 * s[3] + 0.5 * s[7] + 0.2 * s[15]
    assert expected == pytest.approx(2.5963192908)
    signal = composite_signal(step_series())
    assert signal.iloc[39] == pytest.approx(expected)
    assert signal.iloc[-15:].isna().all() and signal.iloc[-16:-15].notna().all()  # no label past the data end
    assert signal.iloc[:19].isna().all()  # no volatility yet
    label = assign_labels(signal.iloc[39:40], np.array([-2.0, -1.0, 1.0, 2.5]))
    assert label.iloc[0] == Action.STRONG_BUY


def test_zero_volatility_gives_no_signal():
    """Flat closes (or a forward-filled gap) have zero volatility: no signal, never +-inf."""
    flat = pd.Series(100.0, index=pd.bdate_range("2024-01-01", periods=80))
    for cfg in (LabelConfig(), LabelConfig(vol_basis="daily")):
        assert composite_signal(flat, cfg).isna().all()
    step = composite_signal(step_series(), LabelConfig(vol_basis="daily"))
    assert not np.isinf(step).any()
    assert step.iloc[:40].isna().all() and step.iloc[40:60].notna().all()  # daily returns are zero until the jump
    with pytest.raises(ValueError, match="fit window"):
        fit_thresholds(flat, "2024-01-01", "2024-04-30")


def test_daily_basis_is_the_old_definition():
    """``vol_basis='daily'``: every horizon over the std of daily returns (tr1 0.1's definition)."""
    close = pd.Series([100, 102, 101, 104, 103, 107, 105, 108, 110, 109] * 4, dtype=float,
                      index=pd.bdate_range("2024-01-01", periods=40))
    t = 25
    ema = [close.iloc[0]]
    for c in close.iloc[1:]:
        ema.append(0.5 * c + 0.5 * ema[-1])
    daily = [close.iloc[i] / close.iloc[i - 1] - 1 for i in range(t - 19, t + 1)]
    expected = sum(w * (ema[t + h] / ema[t] - 1) for h, w in ((3, 0.3), (7, 0.5))) / statistics.stdev(daily)
    cfg = LabelConfig(horizons=(3, 7), weights=(0.3, 0.5), vol_basis="daily")
    assert composite_signal(close, cfg).iloc[t] == pytest.approx(expected)


def _shares(labels: pd.Series) -> list[float]:
    return (labels.dropna().value_counts(normalize=True).sort_index() * 100).round(1).tolist()


def test_class_shares_in_and_out_of_sample(store):
    """The README's figures over the 14 paper tickers. In sample (fit and label 2024-01..2025-05) the
    cuts are the paper's 3/12/38/32/15 up to ties and rounding; out of sample (fit 2024-01..2024-05,
    label 2024-06..2025-05 from prices up to 2025-05-30) they drift: that drift is what a frozen
    threshold does on a new year."""
    ins = pd.concat([make_labels(store.closes(t), "2024-01-01", "2025-05-31", "2024-01-01", "2025-05-31")["label"]
                     for t in PAPER_TICKERS])
    oos = pd.concat([make_labels(store.closes(t).loc[:"2025-05-31"], "2024-01-01", "2024-05-31", "2024-06-01",
                                 "2025-05-31")["label"] for t in PAPER_TICKERS])
    assert _shares(ins) == [3.2, 11.6, 38.2, 32.3, 14.7]
    assert _shares(oos) == [7.0, 15.5, 42.9, 21.5, 13.1]


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
    assert (lines[1].startswith("2024-06-03,")
            and lines[1].split(",")[2] in {"STRONG_SELL", "SELL", "HOLD", "BUY", "STRONG_BUY"})


@pytest.mark.parametrize("args, message", [
    (["--start", "2024-06-14", "--end", "2024-06-03"], "ends before it starts"),
    (["--start", "2031-01-01", "--end", "2031-06-30", "--fit-start", "2024-01-01", "--fit-end", "2024-05-31"],
     "no session of NVDA"),
    (["--start", "2024-01-02", "--end", "2024-05-31", "--fit-start", "2024-06-03", "--fit-end", "2024-12-31"],
     "ends after the labelled window"),
])
def test_labels_cli_refuses_bad_windows(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        tr1(["labels", "--ticker", "NVDA", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
