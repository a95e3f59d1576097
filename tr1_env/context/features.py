"""A context's numeric vector: the registered modalities' features, in context order, one definition of each
(in its modality's module); the Trading env observes the market's alone."""

from __future__ import annotations

import numpy as np

from tr1_env.context.modalities.base import registered
from tr1_env.context.modalities.market import MARKET_FEATURES


def feature_names() -> tuple[str, ...]:
    """The names of the feature vector of every context built now, in order."""
    return tuple(name for modality in registered() for name in modality.features)


#: A context's numeric vector (``Context.features``, ``Observation.features``), in this order.
FEATURE_NAMES: tuple[str, ...] = feature_names()
#: One ticker-day's features beyond the market: what a context's numeric vector adds.
EVENT_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in MARKET_FEATURES)


def feature_vector(values: dict[str, float]) -> np.ndarray:
    """:func:`feature_names` in order as float32; absent, NaN and infinite values are 0."""
    row = np.array([values.get(k, np.nan) for k in feature_names()], dtype=np.float32)
    row[~np.isfinite(row)] = 0.0
    return row
