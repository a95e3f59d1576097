"""The fast path of :func:`tr1_env.context.reference.build_context`: a store's tables indexed once, then ~0.5 ms a context.

What a context needs from a ticker-day is a prefix of each table (the rows with ``available_at``
at or before the decision time), so everything that does not depend on the day is computed once:

- indicator frames and market features per ticker and per split epoch (the prices as known
  between two split announcements are one fixed series, so a day's rows are a prefix of it and
  causal indicators over the prefix equal the whole series' first rows), with their table rows
  formatted;
- news lines, their New-York day and vendor sentiment per ticker; macro lines per series;
- the fundamentals section and statement features at every instant those tables change
  (computed by the plain builder's own functions at each change);
- insider, recommendation and FOMC lines.

A day then costs a few binary searches on ``available_at`` and string joins, rendered by the
same functions as :func:`~tr1_env.context.reference.build_context_reference` (tested equal on random
ticker-days). Epochs and fundamentals states are computed on first need, so a one-off store (a
``store.cut``) pays only for what it uses; :meth:`ContextIndex.prepare` computes them all and keeps
them on disk under ``$TR1_CACHE/contexts`` (default ``~/.cache/tr1``), keyed by a hash of the rows
they come from, for the next process. With ``levels``, it also compiles every news line of the store for
:mod:`tr1_env.context.anonymize` once (names found, templates built: a few ms a line) and keeps the templates on disk,
keyed by the lines and the anonymizer's own sources, so an anonymized context costs look-ups, not parsing.
"""

from __future__ import annotations

import hashlib
import pickle
import weakref
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.context import sections as S  # the renderers both builders share
from tr1_env.util.files import atomic_write, cache_root
from tr1_env.data.clock import NY, decision_time
from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store, split_adjust, split_adjust_insider, vendor_split_times
from tr1_env.context.features import (MARKET_FEATURES, SENTIMENT_SCORES, analyst_score, earnings_features, indicators,
                              insider_net, macro_features, market_features, news_features)

DAY_NS = 86_400 * 10**9
_END = pd.Timestamp("2262-01-01", tz="UTC")  # after every row: whole tables through the point-in-time door
_VERSION = 3  # bump when what is cached on disk changes meaning


def _ns(values) -> np.ndarray:
    """UTC instants (or naive dates) as int64 nanoseconds, for binary search."""
    return np.asarray(pd.DatetimeIndex(values).as_unit("ns").asi8 if len(values) else [], dtype=np.int64)


@lru_cache(maxsize=1)
def _anonymizer_digest() -> str:
    """What the compiled templates depend on besides the lines: the anonymizer's sources, aliases and word list."""
    from importlib.metadata import version

    from tr1_env.context import anonymize, entities

    h = hashlib.sha256(version("wordfreq").encode())
    for path in (anonymize.__file__, entities.__file__, anonymize.ALIASES):
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def _templates(lines: list[tuple[str, tuple[str, ...] | None]], level: str, path: Path) -> None:
    """Compile ``lines`` (each with its table's columns, or None) at ``level`` into
    :func:`tr1_env.context.anonymize.templates`, from the disk cache at ``path`` when it is there (else compiled and
    written)."""
    from tr1_env.context import anonymize

    memo = anonymize.templates()
    if path.exists():
        try:
            memo.update(pickle.loads(path.read_bytes()))
            return
        except (OSError, EOFError, ValueError, AttributeError, ImportError, pickle.UnpicklingError):
            path.unlink(missing_ok=True)
    compiled = {(level, columns, line): anonymize.template(line, level, columns)
                for line, columns in dict.fromkeys(lines)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(compiled)))


def _digest(*frames: pd.DataFrame) -> str:
    h = hashlib.sha256(str(_VERSION).encode())
    for frame in frames:
        h.update(str(list(frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:24]


@dataclass
class _Epoch:
    """One ticker's prices as known between two split announcements, with indicators and formatted rows."""

    history: pd.DataFrame
    features: np.ndarray  # MARKET_FEATURES per row
    closes: np.ndarray
    sma200: np.ndarray
    rows: list[str]


class _TickerIndex:
    def __init__(self, store: Store, ticker: str, cache_dir: Path):
        self.ticker = ticker
        full = lambda name: store.visible(name, ticker, _END)  # noqa: E731
        prices, self._splits = full("prices"), full("splits")
        self.price_at = _ns(prices["available_at"])
        self.dates = prices["date"].to_numpy("datetime64[ns]")
        self.split_at = _ns(self._splits["available_at"])
        self._prices = prices

        news = full("news")
        self.news = news
        self.news_at = _ns(news["available_at"])
        self.news_day = _ns(news["available_at"].dt.tz_convert(NY).dt.normalize())
        self.news_lines = S._news_lines(news)
        self._news_key = _digest(pd.DataFrame({"line": self.news_lines}))
        self._cache_dir = cache_dir
        self.news_sentiment = news["sentiment"].map(SENTIMENT_SCORES).to_numpy(float)

        earnings = full("earnings")
        self.earnings_at = _ns(earnings["available_at"])
        self.release_at = _ns(earnings["release_at"])
        self.surprise = earnings["surprise_pct"].to_numpy(float)

        insider = full("insider")
        self.insider_at = _ns(insider["available_at"])
        self.filing = _ns(insider["filing_date"])
        self.insider_codes = insider["code"].to_numpy(object)
        self.insider_values = insider["value"].to_numpy(float)
        self._insider = insider
        self._insider_lines: dict[int, list[str]] = {}

        rec = full("recommendations")
        self.rec_at = _ns(rec["available_at"])
        self.rec_lines = S._recommendation_lines(rec)
        self.rec_scores = [analyst_score(r.strong_buy, r.buy, r.hold, r.sell, r.strong_sell)
                           for r in rec.itertuples(index=False)]

        self._store = store
        restated = pd.DataFrame({"available_at": pd.to_datetime(list(vendor_split_times(ticker)), utc=True)})
        stamps = pd.concat([full("fundamentals")["available_at"], full("profiles")["available_at"],
                            earnings["available_at"], restated["available_at"]])
        #: Instants at which the fundamentals section can change (new rows, or a split that changes the basis of
        #: per-share figures); state ``i`` holds after the ``i``-th.
        self.state_at = np.unique(_ns(stamps))
        self.states: list[tuple[str | None, dict[str, float]] | None] = [None] * (len(self.state_at) + 1)
        self.epochs: list[_Epoch | None] = [None] * (len(self._splits) + 1)
        key = _digest(prices, self._splits, full("fundamentals"), full("profiles"), earnings, restated)
        self.path = cache_dir / f"{ticker}-{key}.pkl"
        if self.path.exists():
            try:
                self.epochs, self.states = pickle.loads(self.path.read_bytes())
            except (OSError, EOFError, ValueError, AttributeError, ImportError, pickle.UnpicklingError):
                self.path.unlink(missing_ok=True)  # unreadable: computed again and rewritten by save()

    def epoch(self, e: int) -> _Epoch:
        """Prices adjusted for the first ``e`` splits, with indicators from the first session."""
        if self.epochs[e] is None:
            history = indicators(split_adjust(self._prices, self._splits.iloc[:e]))
            features = market_features(history)[list(MARKET_FEATURES)].to_numpy()
            self.epochs[e] = _Epoch(history, features, history["close"].to_numpy(),
                                    history["close_200_sma"].to_numpy(), S._market_rows(history))
        return self.epochs[e]

    def insider_lines(self, e: int) -> list[str]:
        """Insider lines on the split basis of epoch ``e`` (the first ``e`` splits known)."""
        if e not in self._insider_lines:
            self._insider_lines[e] = S._insider_lines(split_adjust_insider(self._insider, self._splits.iloc[:e]))
        return self._insider_lines[e]

    def state(self, i: int) -> tuple[str | None, dict[str, float]]:
        """The fundamentals section and statement features after the ``i``-th change (plain builder's code)."""
        if self.states[i] is None:
            t = self.state_at[i - 1] if i else (self.state_at[0] - 1 if len(self.state_at) else 0)
            view = self._store.asof(self.ticker, pd.Timestamp(int(t), tz="UTC"))
            self.states[i] = S._fundamentals(view), S._statement_features(view)
        return self.states[i]

    def compile(self, level: str) -> None:
        """Every news line and market-table row compiled for anonymization at ``level`` (from or to the disk
        cache)."""
        prices = self.path.stem.rsplit("-", 1)[1]
        name = f"{self.ticker}-anon-{level}-{self._news_key}-{prices}-{_anonymizer_digest()}.pkl"
        columns = tuple(c.strip().lower().replace(" ", "_") for c in S.MARKET_COLUMNS)
        rows = [(row, columns) for e in range(len(self.epochs)) for row in self.epoch(e).rows]
        _templates([(line, None) for line in self.news_lines] + rows, level, self._cache_dir / name)

    def save(self) -> None:
        """Compute every epoch and state and keep them on disk for the next process."""
        for e in range(len(self.epochs)):
            self.epoch(e)
        for i in range(len(self.states)):
            self.state(i)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda tmp: tmp.write_bytes(pickle.dumps((self.epochs, self.states))))


class _MarketIndex:
    """Market-wide tables: macro series, FOMC statements and market headlines."""

    def __init__(self, store: Store):
        macro = store.visible("macro", "*", _END)
        self.macro_at = _ns(macro["available_at"])
        self.macro_lines = S._macro_lines(macro)
        series = macro["series"].to_numpy(object)
        self.values = macro["value"].to_numpy(float)
        self.positions = {s: np.flatnonzero(series == s) for s in dict.fromkeys(series)}
        self.cpi = self.positions.get("CPI", np.zeros(0, np.int64))
        fomc = store.visible("fomc", "*", _END)
        self.fomc_at = _ns(fomc["available_at"])
        self.statements = np.flatnonzero(fomc["kind"].to_numpy(object) == "statement")
        self.statement_lines = S._fomc_lines(fomc.iloc[self.statements])
        self.statement_texts = list(fomc["body"].iloc[self.statements])
        headlines = store.visible("news", "MARKET", _END)
        self.headline_at = _ns(headlines["available_at"])
        self.headline_lines = S._headline_lines(headlines)
        self._memo: dict[tuple[int, int], tuple[str | None, dict[str, float]]] = {}

    def _state(self, t: int) -> tuple[int, int]:
        return int(self.macro_at.searchsorted(t, "right")), int(self.fomc_at.searchsorted(t, "right"))

    def relative(self, t: int) -> str:
        """The macro section as strict anonymization shows it at instant ``t`` (``Context.macro_relative``)."""
        s = int(self.statements.searchsorted(self._state(t)[1]))
        return S._macro_relative_text(self.statement_texts[s - 1] if s else None)

    def macro(self, t: int) -> tuple[str | None, dict[str, float]]:
        n, n_fomc = self._state(t)
        if (n, n_fomc) not in self._memo:
            last = sorted(int(p[k - 1]) for p in self.positions.values() if (k := p.searchsorted(n)))
            k = int(self.cpi.searchsorted(n))
            yoy = float(self.values[self.cpi[k - 1]] / self.values[self.cpi[k - 13]] - 1) * 100 if k >= 13 else None
            s = int(self.statements.searchsorted(n_fomc))
            text = S._macro_text([self.macro_lines[i] for i in last], yoy, self.statement_lines[s - 1] if s else None)
            latest = {series: self.values[p[k - 1]] for series, p in self.positions.items()
                      if (k := p.searchsorted(n))}
            self._memo[n, n_fomc] = text, macro_features(latest, yoy)
        return self._memo[n, n_fomc]


class ContextIndex:
    """One store's tables prepared for point-in-time context builds; one instance per store (:meth:`of`)."""

    _instances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, store: Store, cache_dir: str | Path | None = None):
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "contexts"
        self._tickers: dict[str, _TickerIndex] = {}
        self._market: _MarketIndex | None = None
        self._days: dict[tuple[pd.Timestamp, int], tuple[int, int, int]] = {}

    @classmethod
    def of(cls, store: Store) -> "ContextIndex":
        """The index of ``store``, built on first use and kept as long as the store lives."""
        if store not in cls._instances:
            cls._instances[store] = cls(store)
        return cls._instances[store]

    def prepare(self, tickers=None, cfg: S.ContextConfig = S.ContextConfig(), levels: tuple[str, ...] = ()
                ) -> "ContextIndex":
        """Index ``tickers`` (default: all) now rather than on first use, reading or writing the disk cache,
        and resolve every session's clock and macro state; compile their news (and the market headlines) for
        anonymization at each of ``levels``."""
        sessions = set()
        for ticker in map(canonical_ticker, tickers or self.store.tickers):
            self.ticker(ticker).save()
            for level in levels:
                self.ticker(ticker).compile(level)
            sessions.update(self.store.trading_days(ticker))
        for level in levels:
            market = self.market
            key = _digest(pd.DataFrame({"line": market.headline_lines}))
            _templates([(line, None) for line in market.headline_lines], level,
                       self.cache_dir / f"MARKET-anon-{level}-{key}-{_anonymizer_digest()}.pkl")
        for day in sorted(sessions):
            self.market.macro(self._clock(day, cfg)[0])
        return self

    def ticker(self, ticker: str) -> _TickerIndex:
        if ticker not in self._tickers:
            self._tickers[ticker] = _TickerIndex(self.store, ticker, self.cache_dir)
        return self._tickers[ticker]

    @property
    def market(self) -> _MarketIndex:
        if self._market is None:
            self._market = _MarketIndex(self.store)
        return self._market

    def _clock(self, day: pd.Timestamp, cfg: S.ContextConfig) -> tuple[int, int, int]:
        """Decision instant, New-York midnight of the day and the insider cut-off, as int64 ns (memoised)."""
        key = day, cfg.insider_days
        if key not in self._days:
            time = decision_time(day)
            self._days[key] = time.value, time.tz_convert(NY).normalize().value, S.insider_cutoff(time, cfg).value
        return self._days[key]

    def build(self, ticker: str, date, modalities: tuple[str, ...] | None = None, seed: int | None = None,
              cfg: S.ContextConfig = S.ContextConfig()) -> S.Context:
        day = pd.Timestamp(date).normalize()
        modalities = S._modalities(modalities, seed, cfg)
        ticker = canonical_ticker(ticker)
        x = self.ticker(ticker)
        t, today, cutoff = self._clock(day, cfg)
        n = int(x.price_at.searchsorted(t, "right"))
        if not n or x.dates[n - 1] != day.to_datetime64():
            raise ValueError(f"{ticker} has no session on {day:%Y-%m-%d} in store {self.store.path}")
        n_splits = int(x.split_at.searchsorted(t, "right"))
        epoch = x.epoch(n_splits)
        f = dict(zip(MARKET_FEATURES, epoch.features[n - 1].tolist()))
        market = S._market_text(epoch.rows[max(0, n - cfg.window):n], epoch.closes[:n], epoch.sma200[n - 1])

        # news: rows visible at t whose New-York day is lo..hi days before today's, newest first
        n_news = int(x.news_at.searchsorted(t, "right"))
        buckets, shown = [], []
        if n_news:
            for lo, hi, cap in cfg.news_buckets:
                start = int(x.news_day[:n_news].searchsorted(today - (hi + 1) * DAY_NS, "right"))
                end = int(x.news_day[:n_news].searchsorted(today - lo * DAY_NS, "right"))
                rows = range(end - 1, max(start, end - cap) - 1, -1)
                buckets.append((S._bucket_title(lo, hi), [x.news_lines[i] for i in rows]))
                shown += rows
        m = self.market
        h_end = int(m.headline_at.searchsorted(t, "right"))
        h_start = int(m.headline_at.searchsorted(t - 3 * DAY_NS, "left"))
        headlines = [m.headline_lines[i] for i in range(h_end - 1, max(h_start, h_end - cfg.market_headlines) - 1, -1)]
        shown = np.asarray(shown, dtype=np.int64)
        f.update(news_features((t - x.news_at[shown]) // DAY_NS, x.news_sentiment[shown]))

        k = int(x.earnings_at.searchsorted(t, "right"))
        if k:
            f.update(earnings_features(x.surprise[k - 1], int((t - x.release_at[k - 1]) // DAY_NS)))
        fundamentals, statement_features = x.state(int(x.state_at.searchsorted(t, "right")))
        f.update(statement_features)

        n_ins = int(x.insider_at.searchsorted(t, "right"))
        recent = np.flatnonzero(x.filing[:n_ins] >= cutoff)
        totals = S._insider_totals(x.insider_codes[recent], x.insider_values[recent])
        f["insider_net"] = insider_net(totals[1], totals[3])
        r = int(x.rec_at.searchsorted(t, "right"))
        recommendation = None
        if r and (t - x.rec_at[r - 1]) // DAY_NS <= cfg.stale_days:
            recommendation = x.rec_lines[r - 1]
            f["analyst_score"] = x.rec_scores[r - 1]
        sentiment = S._sentiment_text(len(recent), totals, [x.insider_lines(n_splits)[i] for i in recent[::-1][:5]],
                                      recommendation, cfg)
        macro, macro_f = m.macro(t)
        f.update(macro_f)
        bodies = {"market": market, "news": S._news_text(buckets, headlines), "fundamentals": fundamentals,
                  "sentiment": sentiment, "macro": macro}
        news = (lambda: x.news.iloc[shown].reset_index(drop=True)) if len(shown) else (lambda: x.news.iloc[0:0])
        return S._assemble(ticker, day, modalities, bodies, f, lambda: epoch.history.iloc[:n], news, cfg,
                           lambda: m.relative(t))
