"""The anonymization audit: attacks an adversary would try on anonymized contexts, each rate with a 95 % interval.

``--anonymize`` is only worth what an attack on its output cannot recover, so the audit attacks it with what the
store itself gives away, over random ticker-days (every modality shown):

``entity``
    names the ticker from a per-ticker identifier lexicon **mined from the store's own news** (capitalised n-grams,
    cashtags, exchange codes at least 80 % of whose news items belong to one ticker, and that hold a word no
    dictionary has or a name's shape: people, products, places, organisations), mined on one period and scored
    on another, narrowed by the sector/industry line when one is shown; chance is one in the number of tickers.
``topic``
    the same with every mined term, dictionary words included ("EV", "Semiconductor", "Big Banks"): what the
    subject matter of the news gives away, which no anonymization of names removes.
``sector``
    the sector/industry line names exactly one ticker of the store.
``dates``
    an explicit date token (ISO, ``6/10/24``, ``10 June``, ``June 10``, ``June 2024``, ``'24``, ``2Q24``,
    ``Q3'24``, ``1H24``, ``FY24``, a bare year) is in the prompt.
``dating``
    the macro section, matched line by line against the section as the same level renders it on every session
    of the store, dates the context within a month (chance: a random session within a month).
``fomc``
    ten consecutive words of an FOMC statement are in the prompt.
``numbers``
    a number in news text lies within +-40 % of the day's real close or of the S&P 500 level (10 x SPY); chance:
    the same test against another sampled ticker-day's close and index level.

Each rate is a share of contexts, with a Wilson interval (``statsmodels``).

    tr1 audit --level strict --days 300
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from tr1_env.context.anonymize import LEVELS, Pseudonyms, anonymize
from tr1_env.context.entities import common
from tr1_env.context.index import ContextIndex
from tr1_env.context.record import Context
from tr1_env.data.store import Store

__all__ = ["ATTACKS", "AuditConfig", "Rate", "audit", "date_tokens", "format_audit", "is_name", "mine_lexicon"]

ATTACKS = ("entity", "topic", "sector", "dates", "dating", "fomc", "numbers")


@dataclass
class AuditConfig:
    """What the audit attacks and over which days; each field is also a flag of ``tr1 audit``."""

    level: str = field(default="strict", metadata={
        "choices": ("none", *LEVELS), "help": "anonymization level attacked ('none': plain contexts)"})
    days: int = field(default=300, metadata={"help": "random ticker-days attacked"})
    seed: int = field(default=0, metadata={"help": "seed of the ticker-days drawn and of the attacks' tie-breaks"})
    start: str = field(default="2024-02-01", metadata={"help": "first day scored"})
    end: str = field(default="2025-10-31", metadata={"help": "last day scored"})
    mine_start: str = field(default="2023-01-01", metadata={"help": "first day of the news the lexicon is mined from"})
    mine_end: str = field(default="2023-12-31", metadata={
        "help": "last day of the news the lexicon is mined from (before --start: mined on one period, scored on "
                "another)"})
    store: str | None = field(default=None, metadata={"help": "store folder (default: the embedded store)"})


@dataclass(frozen=True)
class Rate:
    """``hits`` of ``n`` contexts, against what guessing gets (``chance``)."""

    hits: int
    n: int
    chance: float

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(self.hits, self.n, alpha=0.05, method="wilson")
        return float(low), float(high)


# --- (a) the lexicon -------------------------------------------------------------------------------------------

_CAP = r"[A-Z][\w&'’.-]*[\w&]"
_GRAMS = re.compile(rf"(?<![\w$])(?=({_CAP}(?:\s+{_CAP}){{0,2}}))")
_CASHTAG = re.compile(r"(?<![\w$])\$[A-Za-z]{1,5}\b")
_EXCHANGE = re.compile(r"\b[A-Z]{2,7}\s?:\s?[A-Z][A-Z.]{0,6}\b")


def _terms(text: str) -> set[str]:
    """Capitalised 1- to 3-grams, cashtags (lower-cased) and exchange codes of one text."""
    out = {m.group(0).lower() for m in _CASHTAG.finditer(text)} | {m.group(0) for m in _EXCHANGE.finditer(text)}
    for m in _GRAMS.finditer(text):
        words = m.group(1).split()
        out.update(" ".join(words[:k]) for k in range(1, len(words) + 1))
    return out


def is_name(term: str) -> bool:
    """A term with a word no English dictionary has, or in a name's shape (``iPhone``, ``H100``, ``$aapl``)."""
    return bool(re.search(r"[a-z][A-Z]|[A-Za-z]\d|^\$|:", term)) or any(
        not common(w) for w in re.findall(r"[^\W\d_]{2,}", term))


def mine_lexicon(store: Store, start: str, end: str, min_count: int = 5, share: float = 0.8) -> dict[str, str]:
    """Term -> ticker: terms in at least ``min_count`` of a ticker's news items (title and summary) in
    ``start``..``end``, at least ``share`` of whose items (market news included) belong to that ticker."""
    news = store.table("news")
    t = news["available_at"].dt.tz_convert("America/New_York").dt.tz_localize(None)
    news = news[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end) + pd.Timedelta(days=1))]
    counts: dict[str, Counter] = defaultdict(Counter)
    for ticker, title, summary in zip(news["ticker"], news["title"], news["summary"].fillna("")):
        for term in _terms(f"{title}\n{summary}"):
            counts[term][ticker] += 1
    tickers = set(store.tickers)
    out = {}
    for term, per in counts.items():
        ticker, top = per.most_common(1)[0]
        if ticker in tickers and top >= min_count and top >= share * sum(per.values()):
            out[term] = ticker
    return out


@lru_cache(maxsize=4)
def _matcher(lexicon: tuple[tuple[str, str], ...]) -> re.Pattern:
    words = sorted((t for t, _ in lexicon if not t.startswith("$")), key=len, reverse=True)
    return re.compile(r"(?<![\w$])(?:" + "|".join(map(re.escape, words)) + r")(?![\w])")


def lexicon_hits(text: str, lexicon: dict[str, str]) -> Counter:
    """Ticker -> how many distinct lexicon terms of it ``text`` contains."""
    found = set(_matcher(tuple(sorted(lexicon.items()))).findall(text))
    found |= {m.group(0).lower() for m in _CASHTAG.finditer(text) if m.group(0).lower() in lexicon}
    return Counter(lexicon[t] for t in found)


# --- (b) the profile line, (c) dates, (e) FOMC, (f) numbers --------------------------------------------------

_PROFILE = re.compile(r"^.+ \([^()\n]+\): ([^/\n]+?) / ([^\n]+?)\.$", re.MULTILINE)
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?")
_DATE_TOKENS = re.compile("|".join([
    r"(?<!\d)(?:19|20)\d{2}-\d{2}(?:-\d{2})?(?!\d)",  # 2024-06-10, 2024-06
    r"(?<![\d/])\d{1,2}[/.]\d{1,2}[/.](?:\d{4}|\d{2})(?![\d/])",  # 6/10/24, 10.06.2024
    rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b",  # June 10
    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?!\w)",  # 10 June
    rf"\b{_MONTH},?\s+(?:19|20)\d{{2}}\b",  # June 2024
    r"(?<![\w'’])['’]\d{2}\b",  # '24
    r"\b[1-4]Q\s?['’]?\d{2}\b|\bQ[1-4]\s?['’]?\d{2}(?:\d{2})?\b",  # 2Q24, Q3'24, Q3 2024
    r"\b[12]H\s?['’]?\d{2}\b|\bH[12]\s?['’]?\d{2}(?:\d{2})?\b",  # 1H24, H1 2024
    r"\b(?:FY|CY)\s?['’]?\d{2}(?:\d{2})?\b",  # FY24, FY2025
    r"(?<![\w,.$-])(?<!Russell )(?:19[5-9]\d|20[0-4]\d)(?![\w,]|\.\d)",  # a bare year
]), re.IGNORECASE)
_WORDS = re.compile(r"[a-z0-9]+")
_SHINGLE = 10
_NUMBER = re.compile(r"(?<![\w.,])\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d%]|\s?%|\s?percent)")


def date_tokens(text: str) -> list[str]:
    """The explicit date tokens of ``text`` (``[date]``, ``D-3`` and pseudonyms such as ``Entity 34`` are none)."""
    return [m.group(0) for m in _DATE_TOKENS.finditer(_PSEUDONYM.sub("_", text))]


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i:i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


def _news_numbers(text: str) -> list[float]:
    lines = _PSEUDONYM.sub("_", "\n".join(line for line in text.split("\n") if line.lstrip().startswith("- [")))
    return [float(m.group(1).replace(",", "")) for m in _NUMBER.finditer(lines)]


def _near(numbers: list[float], targets: tuple[float, ...]) -> bool:
    return any(0.6 * t <= x <= 1.4 * t for x in numbers for t in targets if t > 0)


# --- (d) dating by the macro section --------------------------------------------------------------------------

_PSEUDONYM = re.compile(r"\b(?:Company|Product|Executive|Entity|Insider|Fund|Index) [A-Z]*\d*\b|TKR-[A-Z]+")


def _lines(section: str | None) -> set[str]:
    return {_PSEUDONYM.sub("_", line) for line in (section or "").split("\n") if line.strip()}


def _macro_candidates(store: Store, level: str, days: pd.DatetimeIndex) -> list[set[str]]:
    """The macro section's lines as ``level`` renders them on each of ``days`` (what the attacker compares)."""
    index = ContextIndex.of(store)
    out = []
    for day in days:
        ctx = index.build("SPY", day, modalities=("macro",))
        out.append(_lines(_render(ctx, level, 0).sections.get("macro")))
    return out


def _render(ctx: Context, level: str, seed: int) -> Context:
    return ctx if level == "none" else anonymize(ctx, Pseudonyms.for_episode(ctx.ticker, seed), level)


# --- the audit ---------------------------------------------------------------------------------------------------

def audit(cfg: AuditConfig = AuditConfig(), store: Store | None = None,
          transform: Callable[[Context, int], Context] | None = None) -> dict[str, Rate]:
    """Every attack over ``cfg.days`` random ticker-days; ``transform(context, seed)`` replaces the level's
    anonymization (what a test plants a leak with)."""
    store = store or Store(cfg.store)
    transform = transform or (lambda ctx, seed: _render(ctx, cfg.level, seed))
    rng = np.random.default_rng(cfg.seed)
    index = ContextIndex.of(store)
    tickers = store.tickers
    topics = mine_lexicon(store, cfg.mine_start, cfg.mine_end)
    lexicon = {t: k for t, k in topics.items() if is_name(t)}
    profiles = store.table("profiles").drop_duplicates("ticker", keep="last")
    sector_of = dict(zip(profiles["ticker"], zip(profiles["sector"], profiles["industry"])))
    sectors = Counter(sector_of.values())
    statements = store.table("fomc")
    fomc = set().union(*(_shingles(b) for b in statements.loc[statements["kind"] == "statement", "body"]))
    sessions = pd.DatetimeIndex(store.trading_days("SPY", cfg.start, cfg.end))
    spy = store.closes("SPY")
    candidates = _macro_candidates(store, cfg.level, sessions)

    sample = []  # drawn before any attack runs, so that every level is attacked on the same ticker-days
    for _ in range(cfg.days):
        ticker = tickers[rng.integers(len(tickers))]
        days = store.trading_days(ticker, cfg.start, cfg.end)
        sample.append((ticker, pd.Timestamp(days[rng.integers(len(days))]), int(rng.integers(1 << 30))))
    hits = Counter()
    targets, numbers, chance_dating = [], [], []
    for ticker, day, seed in sample:
        plain = index.build(ticker, day)
        anon = transform(plain, seed)
        text = anon.prompt
        # (a) + (b): the lexicon's votes among the tickers the profile line allows
        shown = _PROFILE.search(anon.sections.get("fundamentals") or "")
        line = shown.groups() if shown else None
        allowed = [t for t in tickers if line is None or sector_of.get(t) == line] or list(tickers)
        for attack, terms in (("entity", lexicon), ("topic", topics)):
            votes = lexicon_hits(text, terms)
            best = max(votes.get(t, 0) for t in allowed)
            guess = [t for t in allowed if votes.get(t, 0) == best]
            hits[attack] += guess[rng.integers(len(guess))] == ticker
        hits["sector"] += line is not None and sectors.get(line, 0) == 1
        hits["dates"] += bool(date_tokens(text))
        hits["fomc"] += bool(_shingles(text) & fomc)
        # (d): the sessions whose macro section shares the most lines with this one
        observed = _lines(anon.sections.get("macro"))
        shared = np.array([len(observed & c) for c in candidates])
        pick = np.flatnonzero(shared == shared.max())
        guessed = sessions[pick[rng.integers(len(pick))]]
        hits["dating"] += abs((guessed - day).days) <= 31
        chance_dating.append(float(np.mean(np.abs((sessions - day).days) <= 31)))
        # (f): real levels of this day, and of another day for chance
        close = float(plain.history["close"].iloc[-1])
        targets.append((close, 10 * float(spy.asof(day))))
        numbers.append(_news_numbers(text))
    other = np.random.default_rng([cfg.seed, 1]).permutation(len(targets))  # the same pairs at every level
    near = sum(_near(n, t) for n, t in zip(numbers, targets))
    by_chance = np.mean([_near(n, targets[j]) for n, j in zip(numbers, other)])
    n = cfg.days
    return {"entity": Rate(hits["entity"], n, 1 / len(tickers)), "topic": Rate(hits["topic"], n, 1 / len(tickers)),
            "sector": Rate(hits["sector"], n, 0.0),
            "dates": Rate(hits["dates"], n, 0.0), "dating": Rate(hits["dating"], n, float(np.mean(chance_dating))),
            "fomc": Rate(hits["fomc"], n, 0.0), "numbers": Rate(near, n, float(by_chance))}


def format_audit(rates: dict[str, Rate], cfg: AuditConfig) -> str:
    """The audit as a markdown table."""
    lines = [f"Anonymization audit: level {cfg.level}, {cfg.days} ticker-days {cfg.start}..{cfg.end} (seed "
             f"{cfg.seed}); lexicon mined on {cfg.mine_start}..{cfg.mine_end}", "",
             "| attack | rate | 95% CI | chance |", "|---|---|---|---|"]
    for name, r in rates.items():
        low, high = r.interval
        lines.append(f"| {name} | {r.rate:.1%} ({r.hits}/{r.n}) | {low:.1%}-{high:.1%} | {r.chance:.1%} |")
    return "\n".join(lines)
