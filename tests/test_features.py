"""The one feature table: hand-derived values, causality, and both consumers reading the same numbers."""

import math

import numpy as np
import pandas as pd
import pytest

from tr1_env.context.features import EVENT_FEATURES, FEATURE_NAMES, feature_vector
from tr1_env.context.modalities.market import MARKET_FEATURES, indicators, market_features
from tr1_env.context.modalities.sentiment import analyst_score, insider_net
from tr1_env.context.reference import build_context
from tr1_env.envs import TradingEnv

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


def _prices(closes) -> pd.DataFrame:
    closes = np.asarray(closes, float)
    return pd.DataFrame({"date": pd.bdate_range("2020-01-01", periods=len(closes)), "open": closes,
                         "high": closes * 1.01, "low": closes * 0.99, "close": closes, "volume": 1_000_000})


def test_names_are_one_table():
    assert FEATURE_NAMES == (*MARKET_FEATURES, *EVENT_FEATURES) and len(set(FEATURE_NAMES)) == 26


def test_hand_derived_market_features():
    """A steady 1 %/day rise: every return is ln(1.01), RSI is 100 (centred: +0.5), volume never moves."""
    features = market_features(indicators(_prices(100 * 1.01 ** np.arange(30)))).iloc[-1]
    assert features["ret_1d"] == pytest.approx(math.log(1.01))
    assert features["ret_5d"] == pytest.approx(5 * math.log(1.01))
    assert features["ret_10d"] == pytest.approx(10 * math.log(1.01))
    assert features["vol_20d"] == pytest.approx(0, abs=1e-9)
    assert features["rsi_14"] == pytest.approx(0.5)
    assert features["volume_z"] == pytest.approx(0)
    # the 10-day SMA of a geometric series lags the close by a known ratio
    sma10 = 100 * 1.01 ** np.arange(20, 30)
    assert features["sma10_gap"] == pytest.approx(100 * 1.01 ** 29 / sma10.mean() - 1)


def test_market_features_do_not_depend_on_later_rows():
    prices = _prices(100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 400)))
    whole = market_features(indicators(prices))
    for n in (2, 15, 61, 250):
        pd.testing.assert_frame_equal(market_features(indicators(prices.iloc[:n])), whole.iloc[:n])


def test_event_feature_maths():
    assert analyst_score(10, 0, 0, 0, 0) == 2 and analyst_score(0, 1, 1, 0, 0) == 0.5
    assert analyst_score(0, 0, 0, 0, 0) == 0
    assert insider_net(0, math.e - 1) == pytest.approx(-1)
    vector = feature_vector({"ret_1d": 0.1, "vix": float("nan"), "dgs10": float("inf")})
    assert vector.dtype == np.float32 and vector[0] == np.float32(0.1) and not vector[1:].any()


def test_context_and_trading_env_share_market_features(store):
    """The market part of a context's vector is the Trading env's observation of that session."""
    env = TradingEnv(store, "MSFT", "2021-03-01", "2021-03-31")
    for day in ("2021-03-01", "2021-03-15", "2021-03-30"):
        ctx = build_context(store, "MSFT", day)
        expected = env.features.loc[pd.Timestamp(day), list(MARKET_FEATURES)].to_numpy(np.float32)
        np.testing.assert_array_equal(ctx.features[:len(MARKET_FEATURES)], expected)
