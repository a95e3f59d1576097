"""Do an agent's calls carry information? Signal tests over all of its ticker x decision days.

The portfolio tests of :mod:`tr1_env.evaluation.stats` pool the tickers into one daily series; these use the
cross-section, which is where a small edge shows first. Input is one long table per agent, a row per ticker and decision
day (``date``, ``score`` -2..+2 from the call, ``fwd_1`` and ``fwd_h`` the asset's return over the next session and over
``h`` sessions, ``label`` the Trading-R1 class 0..4 fitted before the window or NaN); output is one row of numbers.
Days, not ticker-days, are the unit of resampling: the tickers of one day share the market.

* ``ic`` / ``ic_h``: mean over days of the daily Spearman correlation across the tickers decided that day (at
  least ``min_tickers``) between score and forward return, with a Newey-West (HAC) interval and two-sided p-value
  from statsmodels (lags at least h - 1, the overlap of the forward windows).
* ``accuracy`` / ``macro_f1`` against the labels, with percentile intervals from a stationary bootstrap of day
  blocks, beside what the class prior (``accuracy_prior``: a guess drawn from the label frequencies) and the
  majority class (``accuracy_majority``, ``macro_f1_majority``) score.
* ``hit_rate``: the share of directional calls whose sign matches the next session's return, with its interval.

The portfolio track scores weights the same way: :func:`weight_rows` makes the rows of a book, its score the
active weight (target minus the benchmark's), and :func:`ic_tests` gives the same IC columns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import statsmodels.api as sm

from tr1_env.core.actions import Action
from tr1_env.evaluation.metrics import hit_rate, seeded_counts

__all__ = ["SIGNAL_COLUMNS", "daily_rank_ic", "decision_rows", "hac_mean", "ic_tests", "signal_tests",
           "weight_rows"]

#: The columns :func:`signal_tests` returns, in order.
SIGNAL_COLUMNS = ("n_calls", "ic", "ic_lo", "ic_hi", "ic_p", "ic_h", "ic_h_lo", "ic_h_hi", "ic_h_p", "accuracy",
                  "accuracy_lo", "accuracy_hi", "accuracy_prior", "accuracy_majority", "macro_f1", "macro_f1_lo",
                  "macro_f1_hi", "macro_f1_majority", "hit_rate", "hit_rate_lo", "hit_rate_hi")
_CLASSES = 5


def decision_rows(actions: pd.Series, closes: pd.Series, horizon: int, labels: pd.Series | None = None
                  ) -> pd.DataFrame:
    """One ticker's ``date, score, fwd_1, fwd_h, label`` rows from its decisions (date -> action code 0..4 or
    name): the score is the action's place on -2..+2, ``fwd_k`` the close ``k`` sessions after the decision over
    the decision's close, minus 1 (NaN past the data's end), ``label`` the day's class (NaN without one)."""
    codes = np.array([int(Action.parse(a)) if isinstance(a, str) else int(a) for a in actions], dtype=int)
    where = closes.index.get_indexer(pd.DatetimeIndex(actions.index))
    if (where < 0).any():
        raise ValueError(f"decision on {actions.index[np.argmax(where < 0)]:%Y-%m-%d} is not a session of the closes")
    px = closes.to_numpy(dtype=float)

    def forward(k: int) -> np.ndarray:
        ahead = where + k
        return np.where(ahead < len(px), px[np.minimum(ahead, len(px) - 1)] / px[where] - 1, np.nan)

    label = (labels.reindex(actions.index).to_numpy(dtype=float, na_value=np.nan) if labels is not None
             else np.full(len(codes), np.nan))
    return pd.DataFrame({"date": pd.DatetimeIndex(actions.index), "score": codes - 2.0, "fwd_1": forward(1),
                         "fwd_h": forward(horizon), "label": label})


def daily_rank_ic(frame: pd.DataFrame, forward: str, min_tickers: int = 5) -> pd.Series:
    """Date -> Spearman correlation of ``score`` and ``forward`` across that day's tickers; days with fewer than
    ``min_tickers`` usable rows, or a constant score or return, are left out (no correlation is defined)."""
    rows = frame.dropna(subset=["score", forward])
    ranks = rows.groupby("date")[["score", forward]].rank()
    ranks["date"] = rows["date"]
    ranks["xy"] = ranks["score"] * ranks[forward]
    g = ranks.groupby("date")
    n = g.size()
    sx, sy = g["score"].sum(), g[forward].sum()
    vx = g["score"].var(ddof=0) * n
    vy = g[forward].var(ddof=0) * n
    cov = g["xy"].sum() - sx * sy / n
    with np.errstate(divide="ignore", invalid="ignore"):
        ic = cov / np.sqrt(vx * vy)
    return ic[(n >= min_tickers) & (vx > 0) & (vy > 0)].rename("ic")


def hac_mean(values: np.ndarray, lags: int, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """``(mean, lo, hi, p)``: the mean of a series with a Newey-West (Bartlett kernel, ``lags``) (1 - alpha)
    interval and two-sided p-value of mean 0 (statsmodels OLS on a constant, HAC covariance). NaN below 3 values."""
    y = np.asarray(values, dtype=float)
    if len(y) < 3 or not y.std() > 0:
        return (float(y.mean()) if len(y) else float("nan"),) + (float("nan"),) * 3
    fit = sm.OLS(y, np.ones((len(y), 1))).fit(cov_type="HAC", cov_kwds={"maxlags": max(lags, 0)})
    lo, hi = fit.conf_int(alpha)[0]
    return float(fit.params[0]), float(lo), float(hi), float(fit.pvalues[0])


def ic_tests(frame: pd.DataFrame, horizon: int, alpha: float = 0.05, min_tickers: int = 5) -> dict[str, float]:
    """``ic`` and ``ic_h`` with their HAC intervals and p-values (``_lo``, ``_hi``, ``_p``) of ``date, score,
    fwd_1, fwd_h`` rows: the mean daily rank IC, Newey-West lags by the rule of thumb and at least h - 1."""
    out = {}
    rule = math.floor(4 * (frame["date"].nunique() / 100) ** (2 / 9))  # Newey-West's rule of thumb
    for key, forward, lags in (("ic", "fwd_1", rule), ("ic_h", "fwd_h", max(horizon - 1, rule))):
        ic = daily_rank_ic(frame, forward, min_tickers)
        out[key], out[f"{key}_lo"], out[f"{key}_hi"], out[f"{key}_p"] = hac_mean(ic.to_numpy(), lags, alpha)
    return out


def weight_rows(weights: pd.DataFrame, benchmark: pd.DataFrame, held: pd.DataFrame, closes: pd.DataFrame,
                horizon: int) -> pd.DataFrame:
    """A book's ``date, score, fwd_1, fwd_h`` rows for :func:`ic_tests`: one per decision day and ticker that may be
    held, the score its active weight (the book's target minus ``benchmark``'s, both days x tickers), ``fwd_k`` the
    ticker's return from that close to the close ``k`` sessions later on ``closes``' calendar (NaN past its end)."""
    active = (weights - benchmark.reindex_like(weights).fillna(0.0)).where(held.reindex_like(weights).fillna(False))
    px = closes.reindex(columns=weights.columns).ffill()
    rows = active.stack().dropna().rename("score").rename_axis(["date", "ticker"]).reset_index()
    for name, k in (("fwd_1", 1), ("fwd_h", horizon)):
        fwd = (px.shift(-k) / px - 1).reindex(weights.index)
        rows[name] = fwd.stack().reindex(pd.MultiIndex.from_frame(rows[["date", "ticker"]])
                                                          ).to_numpy()
    return rows


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 of (..., C, C) confusion matrices (true rows, predicted columns) over the classes that occur."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    support = confusion.sum(axis=-1) + confusion.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support > 0, 2 * tp / support, np.nan)
    return np.nanmean(f1, axis=-1)


def _interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def signal_tests(frame: pd.DataFrame, horizon: int, alpha: float = 0.05, reps: int = 1000, block: float = 5.0,
                 seed: int = 0, min_tickers: int = 5) -> dict[str, float]:
    """The :data:`SIGNAL_COLUMNS` of one agent's ``date, score, fwd_1, fwd_h, label`` rows (see the module
    docstring); NaN where a test has nothing to work on (a constant score has no IC, no labels no accuracy)."""
    out = dict.fromkeys(SIGNAL_COLUMNS, float("nan"))
    out["n_calls"] = float(len(frame))
    if frame.empty:
        return out
    out.update(ic_tests(frame, horizon, alpha, min_tickers))

    days = np.sort(frame["date"].unique())
    day = np.searchsorted(days, frame["date"].to_numpy())
    counts = np.zeros((0, len(days)))
    if reps > 0 and len(days) > 1:
        counts = seeded_counts(len(days), reps, block, seed)

    labelled = frame["label"].notna().to_numpy()
    if labelled.any():
        true = frame["label"].to_numpy()[labelled].astype(int)
        pred = np.clip(np.rint(frame["score"].to_numpy()[labelled]).astype(int) + 2, 0, _CLASSES - 1)
        per_day = np.zeros((len(days), _CLASSES * _CLASSES))
        np.add.at(per_day, (day[labelled], true * _CLASSES + pred), 1.0)
        confusion = per_day.sum(axis=0).reshape(_CLASSES, _CLASSES)
        prior = confusion.sum(axis=1) / confusion.sum()
        out["accuracy"] = float(np.trace(confusion) / confusion.sum())
        out["macro_f1"] = float(_macro_f1(confusion))
        out["accuracy_prior"] = float(np.sum(prior ** 2))
        out["accuracy_majority"] = float(prior.max())
        out["macro_f1_majority"] = float(2 * prior.max() / (1 + prior.max()) / np.count_nonzero(prior))
        if len(counts):
            boot = (counts @ per_day).reshape(-1, _CLASSES, _CLASSES)
            with np.errstate(divide="ignore", invalid="ignore"):
                acc = np.trace(boot, axis1=1, axis2=2) / boot.sum(axis=(1, 2))
            out["accuracy_lo"], out["accuracy_hi"] = _interval(acc, alpha)
            out["macro_f1_lo"], out["macro_f1_hi"] = _interval(_macro_f1(boot), alpha)

    direction = np.sign(frame["score"].to_numpy())
    move = np.sign(frame["fwd_1"].to_numpy())
    calls = (direction != 0) & np.isfinite(move)
    if calls.any():
        hits = np.bincount(day[calls], weights=(direction[calls] == move[calls]).astype(float), minlength=len(days))
        made = np.bincount(day[calls], minlength=len(days)).astype(float)
        out["hit_rate"] = hit_rate(direction[calls], move[calls])
        if len(counts):
            with np.errstate(divide="ignore", invalid="ignore"):
                out["hit_rate_lo"], out["hit_rate_hi"] = _interval((counts @ hits) / (counts @ made), alpha)
    return out
