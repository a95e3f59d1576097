"""A news-sentiment rule: the mean tone of recent headlines in ``Observation.news`` sets the action.

The vendor's ``sentiment`` label (Positive / Negative / Neutral) is used when present; otherwise a
headline is scored by a small finance lexicon, so tickers whose vendor gives no labels still count.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision, Observation
from tr1_env.data.clock import NY

VENDOR_SCORES = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
POSITIVE = frozenset("beat beats surge surges soar soars rally rallies record upgrade upgraded outperform growth gain "
                     "gains jump jumps strong bullish raise raises higher profit boost boosts tops rebound win".split())
NEGATIVE = frozenset("miss misses plunge plunges drop drops fall falls slump slumps downgrade downgraded underperform "
                     "weak bearish lawsuit probe cut cuts lower loss losses decline declines warning fears slowdown "
                     "selloff".split())
_WORD = re.compile(r"[a-z]+")


def lexicon_score(title: str) -> float:
    """(positive - negative) / matched words in a headline; 0 when no word matches."""
    words = _WORD.findall(str(title).lower())
    pos, neg = sum(w in POSITIVE for w in words), sum(w in NEGATIVE for w in words)
    return (pos - neg) / (pos + neg) if pos + neg else 0.0


def headline_scores(news: pd.DataFrame) -> np.ndarray:
    """One score in [-1, 1] per headline: the vendor label when it has one, else the lexicon."""
    vendor = news["sentiment"] if "sentiment" in news else pd.Series(None, index=news.index, dtype=object)
    labelled = vendor.astype("string").str.lower().map(VENDOR_SCORES)
    return labelled.fillna(news["title"].map(lexicon_score)).to_numpy(dtype=float)


class NewsSentiment(Agent):
    """Mean headline score over the last ``days`` days: beyond ``strong`` a strong call, beyond ``threshold`` a call."""

    name = "news_sentiment"

    def __init__(self, days: int = 3, threshold: float = 0.15, strong: float = 0.5, min_headlines: int = 3):
        self.days, self.threshold, self.strong, self.min_headlines = days, threshold, strong, min_headlines

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        return [self._decide(obs) for obs in observations]

    def _decide(self, obs: Observation) -> Decision:
        news = obs.news
        if len(news):
            day = news["available_at"].dt.tz_convert(NY).dt.tz_localize(None).dt.normalize()
            news = news[(pd.Timestamp(obs.date).normalize() - day).dt.days <= self.days]
        if len(news) < self.min_headlines:
            return Decision(Action.HOLD, meta={"headlines": len(news)})
        score = float(headline_scores(news).mean())
        if abs(score) < self.threshold:
            action = Action.HOLD
        elif score > 0:
            action = Action.STRONG_BUY if score >= self.strong else Action.BUY
        else:
            action = Action.STRONG_SELL if score <= -self.strong else Action.SELL
        return Decision(action, meta={"headlines": len(news), "score": score})
