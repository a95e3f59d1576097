"""Volatility-aware, multi-horizon, asymmetric-quantile labels (Trading-R1's five classes).

Pure functions of a close series. The composite signal of day t looks forward to t + max(h) on
purpose (it is the target), so thresholds are fitted on a training window using only prices
inside that window and then frozen: a label never encodes the future's distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tr1_env.core.actions import Action

#: The default held-out replay window (``benchmarks/run.py``'s default): no training window may
#: overlap it, whether it feeds a dataset or the Thesis env.
HELDOUT_WINDOW: tuple[str, str] = ("2024-06-01", "2024-08-31")


def check_training_window(start, end, heldout: tuple[str, str] | None = HELDOUT_WINDOW) -> None:
    """Refuse a training window that is empty or overlaps the held-out window (``None``: no held-out window).

    Labels of a training window read no price after its end (the callers cut the closes there), so
    a window that ends before the held-out one starts never sees a held-out price.
    """
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if lo > hi:
        raise ValueError(f"training window {start}..{end} is empty")
    if heldout is not None and lo <= pd.Timestamp(heldout[1]) and hi >= pd.Timestamp(heldout[0]):
        raise ValueError(f"training window {start}..{end} overlaps the evaluation window {heldout[0]}..{heldout[1]}; "
                         "move the training window out of it")


@dataclass(frozen=True)
class LabelConfig:
    ema_span: int = field(default=3, metadata={"help": "span of the EMA smoothing the close"})
    horizons: tuple[int, ...] = field(default=(3, 7, 15), metadata={"help": "forward horizons in trading days"})
    weights: tuple[float, ...] = field(default=(0.3, 0.5, 0.2), metadata={"help": "weight of each horizon"})
    vol_window: int = field(default=20, metadata={"help": "rolling window (days) of the volatility normaliser"})
    vol_basis: str = field(default="horizon", metadata={
        "help": "'horizon': each forward-return series over its own rolling std (the paper); 'daily': every "
                "horizon over the rolling std of daily returns (tr1 0.1's definition)",
        "choices": ("horizon", "daily")})
    quantiles: tuple[float, ...] = field(default=(0.03, 0.15, 0.53, 0.85), metadata={
        "help": "composite-signal quantiles separating SS|S|H|B|SB"})

    def __post_init__(self):
        if len(self.horizons) != len(self.weights):
            raise ValueError(f"horizons {self.horizons} and weights {self.weights} differ in length")
        if len(self.quantiles) != 4 or list(self.quantiles) != sorted(self.quantiles):
            raise ValueError(f"quantiles must be 4 increasing cut points, got {self.quantiles}")
        if self.vol_basis not in ("horizon", "daily"):
            raise ValueError(f"vol_basis must be 'horizon' or 'daily', got {self.vol_basis!r}")


def composite_signal(close: pd.Series, cfg: LabelConfig = LabelConfig()) -> pd.Series:
    """s(t) = sum_h w_h * r_h(t) / vol_h(t), r_h(t) = EMA(t+h)/EMA(t) - 1 and vol_h(t) the std of
    r_h over t-19..t (``vol_basis='daily'``: of daily returns). NaN where a forward window passes
    the data end, and where a volatility is zero (flat or forward-filled closes carry no signal)."""
    close = close.astype(float)
    ema = close.ewm(span=cfg.ema_span, adjust=False).mean()
    daily = _volatility(close.pct_change(), cfg.vol_window)
    parts = []
    for h, w in zip(cfg.horizons, cfg.weights):
        r = ema.shift(-h) / ema - 1.0
        parts.append(w * r / (_volatility(r, cfg.vol_window) if cfg.vol_basis == "horizon" else daily))
    return sum(parts).rename("signal")


def _volatility(returns: pd.Series, window: int) -> pd.Series:
    """Rolling std, NaN where it is zero (up to rounding: a flat window's std comes out ~1e-17)."""
    vol = returns.rolling(window).std()
    return vol.where(vol > 1e-12)


def fit_thresholds(close: pd.Series, start, end, cfg: LabelConfig = LabelConfig()) -> np.ndarray:
    """The four cut points, from the signals of days in [start, end], using no price after ``end``.

    Days whose forward window runs past ``end`` are left out of the fit. Before ``start`` only a
    fixed warm-up of ``warmup_sessions(cfg)`` sessions is read (volatility window and EMA settling),
    so the thresholds depend on nothing outside [start - warm-up, end].
    """
    close = close.loc[: pd.Timestamp(end)]
    first = int(close.index.searchsorted(pd.Timestamp(start)))
    window = close.iloc[max(0, first - warmup_sessions(cfg)):]
    signal = composite_signal(window, cfg).loc[pd.Timestamp(start):].dropna()
    if len(signal) < 20:
        raise ValueError(f"fit window {start}..{end} leaves {len(signal)} labelled days for "
                         f"{close.name or 'series'}; it must span more than {max(cfg.horizons)} trading days")
    return np.quantile(signal.to_numpy(), cfg.quantiles)


def warmup_sessions(cfg: LabelConfig) -> int:
    """History read before a fit window: the volatility window plus ten EMA spans (weight < 1e-3 beyond)."""
    return cfg.vol_window + 10 * cfg.ema_span


def assign_labels(signal: pd.Series, thresholds: np.ndarray) -> pd.Series:
    """Action codes 0..4 (nullable Int8; <NA> where the signal is undefined)."""
    codes = np.searchsorted(np.asarray(thresholds), signal.to_numpy(), side="right")
    out = pd.Series(codes, index=signal.index, dtype="Int8")
    return out.mask(signal.isna()).rename("label")


def make_labels(close: pd.Series, fit_start, fit_end, start=None, end=None,
                cfg: LabelConfig = LabelConfig()) -> pd.DataFrame:
    """``date, signal, label`` over [start, end] with thresholds fitted on [fit_start, fit_end].

    Refuses an empty window, a window outside the data, and a fit window ending after the labelled
    one (thresholds fitted on later prices would tell each label where the future lies).
    """
    name = close.name or "series"
    lo = pd.Timestamp(start) if start is not None else close.index[0]
    hi = pd.Timestamp(end) if end is not None else close.index[-1]
    if lo > hi:
        raise ValueError(f"labelled window {lo:%Y-%m-%d}..{hi:%Y-%m-%d} ends before it starts")
    if pd.Timestamp(fit_start) > pd.Timestamp(fit_end):
        raise ValueError(f"fit window {fit_start}..{fit_end} ends before it starts")
    if pd.Timestamp(fit_end) > hi:
        raise ValueError(f"fit window {fit_start}..{fit_end} ends after the labelled window {lo:%Y-%m-%d}.."
                         f"{hi:%Y-%m-%d}: thresholds may only use prices up to its end")
    if close.loc[lo:hi].empty:
        raise ValueError(f"no session of {name} in {lo:%Y-%m-%d}..{hi:%Y-%m-%d}; its data run "
                         f"{close.index[0]:%Y-%m-%d}..{close.index[-1]:%Y-%m-%d}")
    thresholds = fit_thresholds(close, fit_start, fit_end, cfg)
    signal = composite_signal(close, cfg)
    frame = pd.DataFrame({"signal": signal, "label": assign_labels(signal, thresholds)}).loc[lo:hi]
    frame.index.name = "date"
    return frame


def label_name(code) -> str | None:
    return None if pd.isna(code) else Action(int(code)).name
