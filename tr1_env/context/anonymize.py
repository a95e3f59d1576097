"""Anonymized contexts: take out of a built context what a model could recognise from its training data.

A model trained after the test period may know how a company's stock moved on a given day. To
measure how much its calls lean on that memory, :func:`anonymize` rewrites a built
:class:`~tr1_env.context.record.Context` (it builds nothing itself), at one of two :data:`LEVELS`:

``names``
    companies, tickers, products and executives (``data/aliases.csv``, matched whole-word and
    case-aware: "meta-analysis" and "robotaxis" stay) and insiders named by the data become
    pseudonyms (``Company A``, ``TKR-A``, ``Product A2``, ``Executive A1``, ``Insider 3``), the same
    within an episode (one :class:`Pseudonyms`); the subject is always ``A``, the other companies get
    seeded random letters, so a letter never says which company it is; calendar dates become relative
    to the decision day (``D``, ``D-1``, ... in calendar days) and dates and years inside headlines are
    masked; price levels are rebased so the first session shown closes at 100 (volumes likewise),
    statement amounts so the first one shown is 100; EPS and insider prices move with the prices, so
    P/E and every return, ratio and percentage are unchanged; index levels and CPI/payroll levels are
    masked.
``strict`` (the default wherever anonymization is on)
    all of ``names``, and: every other name in news text (people, organisations, products, places:
    :func:`tr1_env.context.entities.names`, a rule rather than a list) becomes ``Entity QXVB``; every date form
    (``'24``, ``2Q24``, ``Q3'24``, ``1H24``, ``6/10/24``, ``10 June``, ``2023-2024``, month names) is
    masked; money amounts, share counts and other numbers of 10 or more in news text become ``[n]``
    (percentages and spans such as "50-day" stay); the company profile is withheld; the macro section
    shows the latest FOMC statement's stance without its wording or date and withholds the series, whose
    paths date a context as surely as their levels (``Context.macro_relative``).

The numeric features are scale-free and stay as they are. Each line is compiled once per level into a
template (literal text and holes for what depends on the episode or the day: pseudonyms, relative dates,
rebased prices), memoised by its text, so an anonymized context costs a few dictionary look-ups and joins
per line; :meth:`tr1_env.context.index.ContextIndex.prepare` compiles the store's news once and keeps the
templates on disk. The same pass serves the Trading env's prompt (:func:`anonymize_text`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.context.entities import everyday
from tr1_env.context.entities import names as entity_names
from tr1_env.context.modalities.base import fmt
from tr1_env.context.modalities.macro import MACRO_LABELS, fomc_stance
from tr1_env.context.prompt import render_prompt
from tr1_env.context.record import Context, titles

__all__ = ["ALIASES", "DEFAULT_LEVEL", "LABEL_SUFFIX", "LEVELS", "NOTES", "Pseudonyms", "Rebase", "anonymize",
           "anonymize_text", "level_of", "load_aliases"]

ALIASES = Path(__file__).parents[1] / "data" / "aliases.csv"
KINDS = ("ticker", "company", "fund", "index", "product", "person")
#: Anonymization levels, weakest first; ``strict`` is what ``anonymize=True`` / a bare ``--anonymize`` means.
LEVELS = ("names", "strict")
DEFAULT_LEVEL = "strict"
#: What an agent that reads anonymized contexts appends to its label (``smollm2+anon``), in every report.
LABEL_SUFFIX = "+anon"
_COMMON_NOTE = ("D is the decision day and D-k the day k calendar days before it; prices and volumes are rebased so "
                "the first session shown is 100, statement amounts so the first amount shown is 100; returns, ratios "
                "and percentages are unchanged.")
NOTES = {"names": "Anonymized context: companies, tickers, products and people are pseudonyms; " + _COMMON_NOTE,
         "strict": "Anonymized context (strict): companies, tickers, products, people, organisations and places are "
                   "pseudonyms (Company A is the subject, Entity QXVB other names); " + _COMMON_NOTE + " Dates and "
                   "years in the text are masked, as are amounts, share counts and other numbers of 10 or more in news "
                   "text ([n]); the company profile and the macro series are withheld, the FOMC statement shows its "
                   "stance instead of its wording."}

#: Market-table columns in price units (rebased with the closes); ``volume`` is rebased on its own.
PRICE_COLUMNS = frozenset({"open", "high", "low", "close", "boll", "boll_ub", "boll_lb", "atr_14", "close_10_sma",
                           "close_50_sma", "close_200_sma", "vwma_14", "macd", "macds", "macdh"})
_LABEL = {"company": "Company", "fund": "Fund", "index": "Index", "product": "Product", "person": "Executive"}
_HOLE = 0xE000  # holes are private-use characters while a line compiles: no pattern below matches them
_HOLES = "\ue000-\uf8ff"
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_AMOUNT = re.compile(rf"({_NUM})([TBM]?)$")
_ISO = re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d])")
_YEAR_MONTH = re.compile(r"(?<![\d-])((?:19|20)\d{2})-(0[1-9]|1[0-2])(?![\d-])")
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)")
_YEAR = r"(?:19|20)\d{2}"
_YY = r"['’]?\d{2}(?!\d)"
_DATE_FORMS = [  # (pattern, replacement), both levels
    (re.compile(r"(?<![\d/.])\d{1,2}([/.-])\d{1,2}\1(?:\d{4}|\d{2})(?![\d/])"), "[date]"),  # 6/10/24, 10/06/2024
    (re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+{_YEAR}\b)?", re.IGNORECASE), "[date]"),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+{_YEAR}\b", re.IGNORECASE), "[date]"),
    (re.compile(rf"\b{_MONTH}\.?,?\s+(?:of\s+)?{_YEAR}\b", re.IGNORECASE), "[date]"),
    (re.compile(r"\bFY\s?'?(?:\d{4}|\d{2})\b", re.IGNORECASE), "FY[year]"),
    (re.compile(rf"(?<!Russell )(?<![\d,.$])({_YEAR})(?![\d])(?!\.\d)"), "[year]"),
]
_STRICT_DATES = [  # the short and relative forms, strict only
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?", re.IGNORECASE), "[date]"),  # 10 June
    (re.compile(rf"\b([1-4])Q\s?{_YY}"), r"Q\1 [year]"),  # 2Q24
    (re.compile(rf"\bQ([1-4])\s?{_YY}"), r"Q\1 [year]"),  # Q3'24
    (re.compile(rf"\b([12])H\s?{_YY}"), r"H\1 [year]"),  # 1H24
    (re.compile(rf"\bH([12])\s?{_YY}"), r"H\1 [year]"),
    (re.compile(rf"\b(?:CY|FY)\s?{_YY}", re.IGNORECASE), "FY[year]"),
    (re.compile(r"(?<![\w'’])['’]\d{2}(?![\d'’])"), "[year]"),  # '24
    (re.compile(r"\b(?:January|February|April|June|July|August|September|October|November|December)\b|"
                r"\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.|\b(?:May|March)(?= \[)"), "[month]"),
]
_INDEX_WORDS = re.compile(rf"(?:Dow|Nasdaq|Index [A-Z{_HOLES}]|index|Russell|DJIA|Composite|Stoxx|FTSE|Nikkei|"
                          r"DAX|Hang Seng|benchmark)", re.IGNORECASE)
_TOKEN = re.compile(r"(?<![\w.,$+-])(?P<sign>-)?(?P<dollar>\$)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
                    r"(?P<unit>[TBM](?![A-Za-z]))?(?![\d])")
_SCALE_WORD = re.compile(r"\s*(?:[kKmMbBtT]\b|thousand|million|billion|trillion|bn\b|mn\b|mln\b|/)")
_RATIO = re.compile(r"\s?(?:%|percent|per cent|pp\b|bps?\b|basis point|x\b|-fold|times\b)")
_SPAN_UNIT = re.compile(r"[-\s](?:day|week|month|year|quarter|hour|minute|session)s?\b")
_PRICE_WORDS = ("Last close ", "200-day SMA ", "shares at ", "EPS ", "estimate ")
_POINTS = (" points", " pts", " level")
_INSIDER = re.compile(r"^(\s+- \d{4}-\d{2}-\d{2} )(.+?)( \([^()\n]*\): code )", re.MULTILINE)
_MACRO_LEVELS = re.compile(r"^(- (?:CPI index|Core CPI index|Nonfarm payrolls \(thousands\)): )[^(\n]+?( \(as of)",
                           re.MULTILINE)
_ANY_MACRO = re.compile("^(- (?:" + "|".join(re.escape(v) for v in MACRO_LABELS.values())
                        + r"|CPI inflation, year over year): )(?!(?:rising|falling|little changed) )[^(\n]+")
_FOMC = re.compile(r"^(- Latest FOMC statement \([^)]*\): )(?!the Committee )(.*)$")
_PROFILE = re.compile(r"^(.+ \([^()]+\): )[^/\n]+ / .+\.$")
_STATEMENT = re.compile(r"^(- Latest [^:\n]+\): )(.+)$", re.MULTILINE)
_ITEM = re.compile(r"([A-Za-z' ]+?) (-?[\d,.]+[TBM]?)(?=;|\.$)")


def level_of(anonymize: bool | str | None) -> str | None:
    """The level an ``anonymize`` setting means: off (``False``/``None``/``"none"``), ``True`` = strict, or a level."""
    if anonymize is None or anonymize is False or anonymize == "none":
        return None
    if anonymize is True:
        return DEFAULT_LEVEL
    if anonymize not in LEVELS:
        raise ValueError(f"anonymize must be one of {LEVELS} (or True/False), got {anonymize!r}")
    return anonymize


@lru_cache(maxsize=4)
def load_aliases(path: str | Path = ALIASES) -> pd.DataFrame:
    """The alias table (ticker, alias, kind), checked: known kinds, no alias shared by two tickers."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != ["ticker", "alias", "kind"]:
        raise ValueError(f"{path}: columns must be ticker,alias,kind, got {','.join(table.columns)}")
    for row, r in table.iterrows():
        if r.kind not in KINDS or not r.alias.strip() or not r.ticker:
            raise ValueError(f"{path}: row {row + 2} ({r.ticker},{r.alias},{r.kind}): kind must be one of {KINDS} "
                             "and ticker and alias non-empty")
    owners = table.groupby(table["alias"].str.lower())["ticker"].nunique()
    if (owners > 1).any():
        raise ValueError(f"{path}: aliases naming two tickers: {sorted(owners[owners > 1].index)}")
    return table


def _letter(i: int) -> str:
    return chr(65 + i) if i < 26 else _letter(i // 26 - 1) + chr(65 + i % 26)


@dataclass(frozen=True)
class _Names:
    """The alias table compiled: tickers case-sensitive, other names case-aware; longest first."""

    tickers: re.Pattern
    words: re.Pattern
    exact: dict[str, tuple[str, str, int]]  # alias -> (ticker, kind, number within the ticker's kind)
    lower: dict[str, tuple[str, str, int]]
    companies: tuple[str, ...]  # the table's tickers, sorted

    @classmethod
    @lru_cache(maxsize=4)
    def build(cls, path: str | Path = ALIASES) -> _Names:
        table = load_aliases(path)
        exact, numbers = {}, {}
        for r in table.itertuples(index=False):
            # one number per product, one per person (a surname alone is the same person as the full name)
            key = r.alias.split()[-1].lower() if r.kind == "person" else r.alias.lower()
            group = numbers.setdefault((r.ticker, r.kind), {})
            exact[r.alias] = (r.ticker, r.kind, group.setdefault(key, len(group) + 1))
        for r in table[table["kind"] == "person"].itertuples(index=False):
            surname = r.alias.split()[-1]  # "Huang" alone names Jensen Huang; "Cook" and "Gates" are also words
            if surname != r.alias and surname not in exact and not everyday(surname):
                exact[surname] = exact[r.alias]
        priority = {k: i for i, k in enumerate(("company", "fund", "index", "person", "product", "ticker"))}
        lower: dict[str, tuple[str, str, int]] = {}
        for alias, value in sorted(exact.items(), key=lambda kv: -priority[kv[1][1]]):
            lower[alias.lower()] = value

        def pattern(aliases, flags=0, plural="") -> re.Pattern:
            alt = "|".join(re.escape(a) for a in sorted(aliases, key=len, reverse=True))
            return re.compile(rf"(?<![A-Za-z0-9])(?:{alt}){plural}(?![A-Za-z0-9])", flags)

        is_ticker = set(table.loc[table["kind"] == "ticker", "alias"])
        # a product's version number goes with it (an iPhone 16 dates the text)
        version = r"s?(?: ?\d{1,2}(?![\d%]|[.,]\d))?"
        return cls(pattern(is_ticker), pattern(set(exact) - is_ticker, re.IGNORECASE, version), exact, lower,
                   tuple(sorted(set(table["ticker"]))))

    def lookup(self, name: str) -> tuple[str, str, int] | None:
        return self.exact.get(name) or self.lower.get(name.lower())


class Pseudonyms:
    """One episode's names: real -> pseudonym, consistent across every context the episode shows.

    ``mapping`` holds each real name seen so far and what it became (what envs put in ``info``). Build one per
    episode with :meth:`for_episode`, the one seed rule the envs, the harness, the datasets, the audit and the CLI
    share.
    """

    def __init__(self, subject: str, seed: int | None = 0, aliases: str | Path = ALIASES):
        self.names = _Names.build(aliases)
        others = [t for t in self.names.companies if t != subject]
        np.random.default_rng(seed).shuffle(others)
        self.subject = subject
        self.letters = {subject: "A", **{t: _letter(i + 1) for i, t in enumerate(others)}}
        self.mapping: dict[str, str] = {}
        self._insiders: dict[str, str] = {}
        self._filled: dict[tuple, str] = {}  # template holes already filled in this episode

    @classmethod
    def for_episode(cls, subject: str, seed: np.random.Generator | int | None = None) -> Pseudonyms:
        """An episode's pseudonyms, the other companies lettered in an order shuffled by ``seed``.

        An episode drawn at random (an env's ``np_random``, a dataset row's generator) draws its seed from that
        generator; one with a fixed seed (a ticker's replay in the harness, an audit trial, ``tr1 context``) uses
        it as it is; no seed is 0.
        """
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(1 << 31))
        return cls(subject, seed=0 if seed is None else seed)

    def ticker(self, ticker: str) -> str:
        """The pseudonym of a ticker symbol (``TKR-A`` for the subject)."""
        return f"TKR-{self.letters.get(ticker, '?')}"

    def name(self, real: str, ticker: str, kind: str, number: int) -> str:
        """The pseudonym of an alias-table name (``kind`` and ``number`` as the table numbers them)."""
        letter = self.letters[ticker]
        fake = (self.ticker(ticker) if kind == "ticker" else f"{_LABEL[kind]} {letter}"
                + (str(number) if kind in ("product", "person") else ""))
        self.mapping.setdefault(real, fake)
        return fake

    def entity(self, real: str) -> str:
        """A name the alias table does not know (strict level): :func:`entity_label`, recorded in ``mapping``."""
        return self.mapping.setdefault(real, entity_label(real))

    def insider(self, real: str) -> str:
        """An insider named by the data: an executive of the alias table if it is one, else ``Insider n``."""
        for variant in _name_variants(real):
            if (hit := self.names.lower.get(variant.lower())) is not None:
                return self.name(real, *hit)
        if real not in self._insiders:
            self._insiders[real] = f"Insider {len(self._insiders) + 1}"
            for variant in _name_variants(real):
                self.mapping.setdefault(variant, self._insiders[real])
        return self._insiders[real]


@lru_cache(maxsize=200_000)
def entity_label(real: str) -> str:
    """``Entity QXVB``: the same four letters for a name everywhere (a hash of it), so that a compiled line carries
    its entities as text (no per-episode fill; letters, so that no later pass reads them as a number); the
    company letters, which a model could map back through the subject, are the ones drawn per episode."""
    n = int.from_bytes(hashlib.blake2b(real.encode(), digest_size=4, person=b"tr1-entity").digest(), "big")
    return "Entity " + "".join(chr(65 + n // 26 ** i % 26) for i in range(4))


def _name_variants(name: str) -> list[str]:
    """Form 4 names read ``LAST FIRST [MIDDLE]``: the name as filed and as news writes it (``First Last``)."""
    parts = name.split()
    out = [name]
    if len(parts) >= 2:
        out.append(f"{parts[1].title()} {parts[0].title()}")
    return out


@dataclass(frozen=True)
class Rebase:
    """The scale factors of one context: prices and volumes (first session shown = 100) and statement amounts."""

    day: pd.Timestamp
    price: float
    volume: float
    amounts: float
    last_close: float
    #: Real price levels of the sessions shown, as the context prints them (replaced wherever they appear);
    #: or a function returning them, called when a number needs them.
    levels: tuple[float, ...] | Callable[[], tuple[float, ...]] = ()

    @classmethod
    def from_history(cls, history: pd.DataFrame, day, first: pd.Timestamp | None = None,
                     amounts: float = 1.0) -> Rebase:
        """Factors from the daily bars: ``first`` is the first session shown (default: ``day`` itself)."""
        dates = history["date"].to_numpy("datetime64[D]")
        day = pd.Timestamp(day).normalize()
        first = day if first is None else pd.Timestamp(first).normalize()
        i = int(np.searchsorted(dates, first.to_datetime64().astype("datetime64[D]")))
        if i >= len(dates) or dates[i] != first.to_datetime64().astype("datetime64[D]"):
            raise ValueError(f"no session on {first:%Y-%m-%d} in the history")
        j = int(np.searchsorted(dates, day.to_datetime64().astype("datetime64[D]"), "right"))
        closes = history["close"].to_numpy(float)
        volume = float(history["volume"].to_numpy(float)[i]) if "volume" in history else 1.0

        def levels() -> tuple[float, ...]:
            return tuple(v for c in ("open", "high", "low", "close") if c in history
                         for v in history[c].to_numpy(float)[i:j].tolist())

        return cls(day, 100.0 / float(closes[i]), 100.0 / volume if volume > 0 else 1.0, amounts,
                   float(closes[j - 1]), levels)

    @classmethod
    def from_market(cls, section: str | None, day, amounts: float = 1.0) -> Rebase | None:
        """Factors from a context's market section as printed (first row shown = 100), or None if it has no table.

        The same numbers as :meth:`from_history` on the bars shown, read from the text instead of a DataFrame,
        so an anonymized context costs no frame access.
        """
        lines = (section or "").split("\n")
        if len(lines) < 4 or not lines[1].startswith("| date |") or not lines[3].startswith("| "):
            return None
        columns = [c.strip() for c in lines[1].strip().strip("|").split("|")]
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[3:] if line.startswith("| ")]
        first = dict(zip(columns, rows[0]))
        close, volume = _number(first["close"]), _number(first["volume"])
        last = re.match(r"Last close ([\d,.]+[TBM]?);", lines[0])
        if not close or volume is None or last is None:
            return None
        shown = [columns.index(c) for c in ("open", "high", "low", "close")]

        def levels() -> tuple[float, ...]:
            return tuple(v for row in rows for i in shown if (v := _number(row[i])) is not None)

        return cls(pd.Timestamp(day).normalize(), 100.0 / close, 100.0 / volume if volume > 0 else 1.0, amounts,
                   _number(last.group(1)), levels)

    @cached_property
    def ordinal(self) -> int:
        """The decision day as days since 1970-01-01 (what date holes hold)."""
        return self.day.toordinal() - _EPOCH  # not through numpy: a datetime64 cast costs more than the rest

    @cached_property
    def real(self) -> frozenset[str]:
        """The real levels as printed (``fmt``)."""
        return frozenset(fmt(level) for level in (self.levels() if callable(self.levels) else self.levels))


def _relative(k: int) -> str:
    """A date ``k`` calendar days before the decision day."""
    return "D" if k == 0 else f"D-{k}" if k > 0 else f"D+{-k}"


_EPOCH = pd.Timestamp("1970-01-01").toordinal()


def _days(when: str) -> int:
    """A YYYY-MM-DD date as days since 1970-01-01."""
    return int(np.datetime64(when, "D").astype(np.int64))


def _price(x: float) -> str:
    """:func:`~tr1_env.context.modalities.base.fmt` for the common case, without its unit search."""
    return f"{x:,.2f}" if -1e6 < x < 1e6 else fmt(x)


def _number(text: str) -> float | None:
    m = _AMOUNT.match(text.strip())
    if not m:
        return None
    value = float(m.group(1).replace(",", ""))
    return value * {"T": 1e12, "B": 1e9, "M": 1e6, "": 1.0}[m.group(2)]


# Templates: a line as literal text and holes. A hole is a tuple whose first item says what fills it:
# "name" (real, ticker, kind, number): the letter part of an alias pseudonym; "insider" (real); "entities" (reals,
# first in a line whose other names are in its text as entity_label()s): nothing, the reals recorded in mapping;
# "date" (timestamp); "price"/"volume"/"amount" (value): rebased; "near"/"real" (text, value, ...): a number
# rebased only when it is a price level of this context.

class _Compiler:
    """One line being compiled: holes stand in the text as private-use characters until :meth:`parts`."""

    def __init__(self, line: str):
        self.text, self.holes, self.entities = line, [], []

    def hole(self, hole: tuple) -> str:
        self.holes.append(hole)
        return chr(_HOLE + len(self.holes) - 1)

    def parts(self) -> tuple:
        out, last = [], 0
        for m in re.finditer(f"[{_HOLES}]", self.text):
            if m.start() > last:
                out.append(self.text[last:m.start()])
            out.append(self.holes[ord(m.group(0)) - _HOLE])
            last = m.end()
        if last < len(self.text):
            out.append(self.text[last:])
        if self.entities:  # renders as nothing; records the line's entities in the episode's mapping
            out.insert(0, ("entities", tuple(dict.fromkeys(self.entities))))
        return tuple(out)


def _alias_spans(text: str, names: _Names) -> list[tuple[int, int, str, tuple[str, str, int], str]]:
    """(start, end, real, alias hit, suffix) of every alias-table name in ``text``, case-aware."""
    out = []
    for m in names.words.finditer(text):
        whole = m.group(0)
        if re.match(r"-[a-z]", text[m.end():m.end() + 2]) and len(whole) <= 4 and everyday(whole):
            continue  # a short everyday word as a prefix: "meta-analysis", "Meta-analysis" (not "Google-parent")
        base, version = re.match(r"(.*?)((?: ?\d+)?)$", whole).groups()
        for found, rest in ((whole, ""), (base, version)):  # "Model 3" is a name; "iPhone 16" a name + version
            hit = None
            for name, plural in ((found, ""), (found[:-1], found[-1:])):  # iPhones, Teslas
                alias_hit = names.lookup(name)
                alias = next((a for a in (name,) if a in names.exact), None) or next(
                    (a for a in names.exact if a.lower() == name.lower()), name)
                # in lower case a product or a person is the common noun ("robotaxis", "threads", "cook"); a company
                # is itself ("google", "exxonmobil.com")
                lowered = alias[:1].isupper() and name[:1].islower() and (
                    alias_hit is None or alias_hit[1] in ("product", "person"))
                if alias_hit is not None and not lowered:
                    hit = (name, alias_hit, plural + ("" if alias_hit[1] == "product" else rest))
                    break
            if hit is not None:
                out.append((m.start(), m.end(), *hit))
                break
    for m in names.tickers.finditer(text):
        out.append((m.start(), m.end(), m.group(0), names.exact[m.group(0)], ""))
    return out


def _names_pass(c: _Compiler, level: str, vendor: bool) -> None:
    """Alias-table names everywhere; at the strict level, every other name of vendor text too."""
    names = _Names.build()
    text = c.text
    spans = _alias_spans(text, names)
    if level == "strict" and vendor:
        for start, end, real in entity_names(text):
            inside = [s for s in spans if s[0] >= start and s[1] <= end]
            if any(s[0] < end and s[1] > start for s in spans if s not in inside):
                continue  # crosses an alias: the alias wins
            if real.startswith("$") or ":" in real:  # a cashtag or an exchange code: a ticker if it is one
                symbol = re.split(r"[:$]\s?", real)[-1].upper()
                hit = names.exact.get(symbol) if symbol in names.exact and names.exact[symbol][1] == "ticker" else None
            elif len(inside) == 1 and inside[0][3][1] == "person" and inside[0][1] == end:
                hit = inside[0][3]  # "Warren E. Buffett", "James Dimon": the alias "Buffett", "Dimon"
            elif inside:  # "Apple's Project Kuiper", "JPMorgan Chase": the aliases, and the words between them
                spans += [(a, b, text[a:b], None, "") for a, b in _between(text, start, end, inside)]
                continue
            else:
                hit = None
            spans = [s for s in spans if s not in inside] + [(start, end, real, hit, "")]
    out, last = [], 0
    for start, end, real, hit, suffix in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start < last:
            continue
        out.append(text[last:start])
        if hit is None:
            out.append(entity_label(real))
            c.entities.append(real)
        else:
            ticker, kind, number = hit
            prefix = "TKR-" if kind == "ticker" else f"{_LABEL[kind]} "
            out.append(prefix + c.hole(("name", real, ticker, kind, number)) + suffix)
        last = end
    out.append(text[last:])
    c.text = "".join(out)


def _between(text: str, start: int, end: int, inside: list[tuple]) -> list[tuple[int, int]]:
    """The parts of ``text[start:end]`` outside the alias spans ``inside`` that hold a capitalised word, trimmed of
    possessives, spaces and punctuation."""
    out, at = [], start
    for a, b, *_ in sorted(inside) + [(end, end)]:
        part = text[at:a]
        m = re.search(r"[A-Z0-9][\w&.'’-]*(?:\s+[\w&.'’-]+)*", re.sub(r"^(?:['’]s\b)", "  ", part))
        if m and re.search(r"[A-Z]", m.group(0)):
            word = re.sub(r"(?:['’]s?|[.,])$", "", m.group(0))
            out.append((at + m.start(), at + m.start() + len(word)))
        at = max(at, b)
    return out


def _dates_pass(c: _Compiler, level: str) -> None:
    text = _ISO.sub(lambda m: c.hole(("date", _days(m.group(0)))), c.text)
    text = _YEAR_MONTH.sub(lambda m: c.hole(("date", _days(f"{m.group(0)}-01"))), text)
    if level == "strict":
        text = _STRICT_DATES[0][0].sub(_STRICT_DATES[0][1], text)
    for pattern, replacement in _DATE_FORMS:
        text = pattern.sub(replacement, text)
    if level == "strict":
        for pattern, replacement in _STRICT_DATES[1:]:
            text = pattern.sub(replacement, text)
    c.text = text


def _numbers_pass(c: _Compiler, level: str) -> None:
    """Each number of a line we rendered, once: price levels rebased, index levels masked, the rest unchanged.
    (Names-level news text too: there a number equal to a price level shown is rebased.)"""
    text = c.text

    def one(m: re.Match) -> str:
        sign, dollar, num, unit = m.group("sign") or "", m.group("dollar") or "", m.group("num"), m.group("unit") or ""
        before, after = text[:m.start()], text[m.end():]
        value = float(num.replace(",", ""))
        if before.endswith(_PRICE_WORDS) or after.startswith(" USD)"):
            return dollar + c.hole(("price", _number(sign + num + unit)))
        if dollar and not unit and not _SCALE_WORD.match(after):
            return c.hole(("near", m.group(0), sign, value))
        index = _INDEX_WORDS.search(before[-40:]) and not before.endswith("Russell ")
        if value >= 1000 and not unit and (index or after.startswith(_POINTS)):
            return sign + dollar + "[level]"
        if not unit and level == "names":
            return c.hole(("real", m.group(0), sign + dollar, num, value))
        return m.group(0)

    c.text = _TOKEN.sub(one, text)


def _masked_numbers_pass(c: _Compiler) -> None:
    """News text at the strict level: every amount, count and level of 10 or more masked; ratios and spans stay."""
    text = c.text

    def one(m: re.Match) -> str:
        sign, dollar, num, unit = m.group("sign") or "", m.group("dollar") or "", m.group("num"), m.group("unit") or ""
        after, before = text[m.end():], text[:m.start()]
        if _RATIO.match(after) or (not dollar and _SPAN_UNIT.match(after) and float(num.replace(",", "")) < 1000):
            return m.group(0)
        money = dollar or before.endswith(("€", "£", "¥", "US", "USD ")) or unit or _SCALE_WORD.match(after)
        if money or after.lstrip().startswith("shares") or float(num.replace(",", "")) >= 10:
            return sign + dollar + "[n]" + unit
        return m.group(0)

    c.text = _TOKEN.sub(one, text)


def _compile_free(line: str, level: str, vendor: bool) -> tuple:
    """A line outside a table: names, dates, then numbers (rebased in our lines, masked in strict news text)."""
    c = _Compiler(line)
    c.text = _INSIDER.sub(lambda m: m.group(1) + c.hole(("insider", m.group(2))) + m.group(3), c.text)
    c.text = _MACRO_LEVELS.sub(lambda m: m.group(1) + "[level withheld]" + m.group(2), c.text)
    if level == "strict":
        c.text = _ANY_MACRO.sub(lambda m: m.group(1) + "[level withheld]", c.text)
        if m := _FOMC.match(c.text):
            c.text = f"- Latest FOMC statement: the Committee {fomc_stance(m.group(2))} the federal funds target " \
                     "range (the statement's wording and date are withheld)."
        c.text = _PROFILE.sub(lambda m: m.group(1) + "sector and industry withheld.", c.text)
    _names_pass(c, level, vendor)
    if m := _STATEMENT.match(c.text):
        items = _ITEM.sub(lambda i: i.group(0) if _number(i.group(2)) is None else f"{i.group(1)} "
                          + c.hole(("amount", _number(i.group(2)), "EPS" in i.group(1))), m.group(2))
        c.text = m.group(1) + items
        _dates_pass(c, level)
    else:
        _dates_pass(c, level)
        if level == "strict" and vendor:
            _masked_numbers_pass(c)
        else:
            _numbers_pass(c, level)
    return c.parts()


def _compile_row(line: str, columns: tuple[str, ...]) -> tuple:
    """A table row as one hole: a format string, and per cell a date (days) or a value and its scale."""
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) != len(columns):
        return (line,)
    out, dates, values = [], [], []
    for name, cell in zip(columns, cells):
        if name == "date" and _ISO.fullmatch(cell):
            dates.append(_days(cell))
            out.append("{}")
        elif (name in PRICE_COLUMNS or name == "volume") and (value := _number(cell)) is not None:
            values.append((name != "volume", value))
            out.append("{:,.2f}" if abs(value) < 1e12 else "{}")
        else:
            out.append(cell.replace("{", "{{").replace("}", "}}"))
    if len(dates) > 1 or dates and not out[0] == "{}":
        return (line,)
    return (("row", "| " + " | ".join(out) + " |", dates[0] if dates else None, tuple(values)),)


_TEMPLATES: dict[tuple, tuple] = {}
_MAX_TEMPLATES = 1_000_000


def template(line: str, level: str, columns: tuple[str, ...] | str | None = None) -> tuple:
    """The compiled form of ``line``, memoised by its text: a table row under ``columns`` (a tuple), news text
    (``"news"``: a headline or summary alone) or a line of a context (``None``; news lines start ``- [``)."""
    key = (level, columns, line)
    parts = _TEMPLATES.get(key)
    if parts is None:
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        parts = _TEMPLATES[key] = (_compile_row(line, columns) if isinstance(columns, tuple) else
                                   _compile_free(line, level, columns == "news" or line.lstrip().startswith("- [")))
    return parts


def templates() -> dict[tuple, tuple]:
    """The memo of compiled lines (the context index saves and restores the store's share of it)."""
    return _TEMPLATES


class _Renderer:
    """Fills holes for one context: its pseudonyms, its decision day and its scale factors."""

    def __init__(self, pseudonyms: Pseudonyms, rebase: Rebase | None):
        self.pseudonyms, self.rebase = pseudonyms, rebase
        self.day = rebase.ordinal if rebase is not None else 0
        self.episode = pseudonyms._filled  # name holes: the same text for the whole episode
        self.names = dict(self.episode)  # and what this context filled (dates recur across its news lines)

    def __call__(self, hole: tuple) -> str:
        kind = hole[0]
        if kind == "entities":  # a compiled line's entities, recorded once per episode
            if hole not in self.episode:
                for real in hole[1]:
                    self.pseudonyms.entity(real)
                self.episode[hole] = ""
            return ""
        if kind == "row":  # the hot path: a market table has ~200 cells
            _, row, date, values = hole
            price, volume = self.rebase.price, self.rebase.volume
            scaled = [v * price if is_price else v * volume for is_price, v in values]
            if all(-1e6 < x < 1e6 for x in scaled):
                return row.format(*scaled) if date is None else row.format(_relative(self.day - date), *scaled)
            cells = [fmt(x) for x in scaled]
            row = row.replace("{:,.2f}", "{}")
            return row.format(*cells) if date is None else row.format(_relative(self.day - date), *cells)
        if kind == "date":
            text = self.names[hole] = _relative(self.day - hole[1])
            return text
        if kind == "price":
            return _price(hole[1] * self.rebase.price)
        if kind in ("name", "insider"):
            text = self.episode.get(hole)
            if text is None:
                text = self.episode[hole] = self.names[hole] = self._name(hole)
            return text
        rebase = self.rebase
        if kind == "volume":
            return _price(hole[1] * rebase.volume)
        if kind == "amount":
            return fmt(hole[1] * (rebase.price if hole[2] else rebase.amounts))
        if kind == "near":
            _, text, sign, value = hole
            near = rebase.last_close / 3 <= value <= rebase.last_close * 3
            return f"{sign}${fmt(value * rebase.price)}" if near else text
        _, text, prefix, num, value = hole  # "real"
        return prefix + fmt(value * rebase.price) if num in rebase.real else text

    def _name(self, hole: tuple) -> str:
        if hole[0] == "insider":
            return self.pseudonyms.insider(hole[1])
        _, real, ticker, kind, number = hole
        fake = self.pseudonyms.name(real, ticker, kind, number)
        return fake[4:] if kind == "ticker" else fake[len(_LABEL[kind]) + 1:]


def _render(parts: tuple, fill: _Renderer) -> str:
    if len(parts) == 1 and parts[0].__class__ is str:
        return parts[0]
    names = fill.names  # most holes are names already filled in this episode: one look-up, no call
    return "".join([p if p.__class__ is str else names.get(p) or fill(p) for p in parts])


def _render_text(text: str, fill: _Renderer, level: str) -> str:
    lines = text.split("\n")
    columns = None
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if i + 1 < len(lines) and lines[i + 1].startswith("|---"):
                columns = tuple(c.strip().lower().replace(" ", "_") for c in line.strip().strip("|").split("|"))
            elif columns and not line.startswith("|---"):
                lines[i] = _render(template(line, level, columns), fill)
            continue
        columns = None
        lines[i] = _render(template(line, level), fill)
    return "\n".join(lines)


def anonymize_text(text: str, pseudonyms: Pseudonyms, rebase: Rebase, level: str = DEFAULT_LEVEL) -> str:
    """Names, dates and levels out of a context or prompt text; markdown tables are rebased column by column."""
    return _render_text(text, _Renderer(pseudonyms, rebase), level_of(level))


def _first_amount(section: str | None) -> float:
    """Statement amounts are scaled so the first one shown is 100 (1 when none is shown)."""
    for m in _STATEMENT.finditer(section or ""):
        for item in _ITEM.finditer(m.group(2)):
            value = _number(item.group(2))
            if "EPS" not in item.group(1) and value:
                return 100.0 / abs(value)
    return 1.0


def anonymize(ctx: Context, pseudonyms: Pseudonyms | None = None, level: str | bool = DEFAULT_LEVEL) -> Context:
    """The same context with names, dates and levels taken out at ``level`` (see the module docstring).

    ``date`` stays the real decision day: it is the caller's clock and appears in no text. ``history``
    is rebased with ``date`` replaced by the day offset; ``news`` keeps its texts anonymized, ages in
    days instead of timestamps, and no URL. Both frames are built on first read, as the builder's are.
    """
    level = level_of(level)
    if level is None:
        return ctx
    pseudonyms = pseudonyms or Pseudonyms.for_episode(ctx.ticker)
    amounts = _first_amount(ctx.sections.get("fundamentals"))
    rebase = Rebase.from_market(ctx.sections.get("market"), ctx.date, amounts) or Rebase.from_history(
        ctx.history, ctx.date, None, amounts)
    fill = _Renderer(pseudonyms, rebase)
    sections = {}
    for name, body in ctx.sections.items():
        if level == "strict" and name == "macro" and name not in ctx.missing:
            body = ctx.macro_relative or f"No macro data is available for {ctx.ticker} as of {ctx.date:%Y-%m-%d}."
        sections[name] = _render_text(body, fill, level)
    heading = titles()
    text = NOTES[level] + "\n\n" + "\n\n".join(f"## {heading[m]}\n{body}" for m, body in sections.items())
    ticker = pseudonyms.ticker(ctx.ticker)

    def rebased() -> pd.DataFrame:
        frame = pd.DataFrame(ctx.history, copy=True)
        for col in frame.columns:
            if col in PRICE_COLUMNS:
                frame[col] = frame[col] * rebase.price
        if "volume" in frame:
            frame["volume"] = frame["volume"] * rebase.volume
        frame["date"] = [-(ctx.date - pd.Timestamp(d).normalize()).days for d in frame["date"]]
        return frame

    def news() -> pd.DataFrame:
        frame = ctx.news.drop(columns=[c for c in ("url", "published_at", "available_at") if c in ctx.news]).copy()
        if "available_at" in ctx.news:
            frame.insert(0, "age_days", [(ctx.date - t.tz_convert("America/New_York").tz_localize(None).normalize())
                                         .days for t in ctx.news["available_at"]])
        for col in ("title", "summary"):
            if col in frame:
                frame[col] = [_render(template(v, level, "news"), fill) if isinstance(v, str) else v
                              for v in frame[col]]
        if "ticker" in frame:
            frame["ticker"] = ticker
        return frame

    return dataclasses.replace(ctx, ticker=ticker, sections=sections, text=text, history=rebased, news=news,
                               prompt=render_prompt(ticker, "D", text, example_date="D-3"),
                               macro_relative=sections.get("macro") if level == "strict" else None)
