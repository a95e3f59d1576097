"""Anonymized contexts: take out of a built context what a model could recognise from its training data.

A model trained after the test period may know how a company's stock moved on a given day. To
measure how much its calls lean on that memory, :func:`anonymize` rewrites a built
:class:`~tr1_env.context.Context` (it builds nothing itself):

- companies, tickers, products and executives (``data/aliases.csv``) and insiders named by the data
  become pseudonyms (``Company A``, ``TKR-A``, ``Product A2``, ``Executive A1``, ``Insider 3``),
  the same within an episode (one :class:`Pseudonyms`); the subject is always ``A``, the other
  companies get seeded random letters, so a letter never says which company it is;
- calendar dates become relative to the decision day (``D``, ``D-1``, ... in calendar days);
  dates and years inside headlines are masked;
- price levels are rebased so the first session shown closes at 100 (volumes likewise), statement
  amounts so the first one shown is 100; EPS and insider prices move with the prices, so P/E and
  every return, ratio and percentage are unchanged; index levels and CPI/payroll levels are masked.

The numeric features are scale-free and stay as they are. The same text pass serves the Trading
env's prompt (:func:`anonymize_text`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_env.context import Context, _fmt
from tr1_env.prompt import render_prompt

__all__ = ["ALIASES", "NOTE", "Pseudonyms", "Rebase", "anonymize", "anonymize_text", "load_aliases"]

ALIASES = Path(__file__).parent / "data" / "aliases.csv"
KINDS = ("ticker", "company", "fund", "index", "product", "person")
NOTE = ("Anonymized context: companies, tickers, products and people are pseudonyms; D is the decision day and "
        "D-k the day k calendar days before it; prices and volumes are rebased so the first session shown is 100, "
        "statement amounts so the first amount shown is 100; returns, ratios and percentages are unchanged.")

#: Market-table columns in price units (rebased with the closes); ``volume`` is rebased on its own.
PRICE_COLUMNS = frozenset({"open", "high", "low", "close", "boll", "boll_ub", "boll_lb", "atr_14", "close_10_sma",
                           "close_50_sma", "close_200_sma", "vwma_14", "macd", "macds", "macdh"})
_LABEL = {"company": "Company", "fund": "Fund", "index": "Index", "product": "Product", "person": "Executive"}
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_AMOUNT = re.compile(rf"({_NUM})([TBM]?)$")
_ISO = re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d])")
_YEAR_MONTH = re.compile(r"(?<![\d-])((?:19|20)\d{2})-(0[1-9]|1[0-2])(?![\d-])")
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)")
_YEAR = r"(?:19|20)\d{2}"
_MONTH_DATES = [re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+{_YEAR}\b)?"),
                re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+{_YEAR}\b", re.IGNORECASE),
                re.compile(rf"\b{_MONTH}\.?,?\s+(?:of\s+)?{_YEAR}\b", re.IGNORECASE)]
_YEARS = [re.compile(r"\bFY\s?'?(?:\d{4}|\d{2})\b", re.IGNORECASE),
          re.compile(rf"(?<!Russell )(?<![\d,.$])(?<!\d-){_YEAR}(?![\d])(?!\.\d)")]
_INDEX_WORDS = re.compile(r"(?:Dow|Nasdaq|Index [A-Z]{1,2}|index|Russell|DJIA|Composite|Stoxx|FTSE|Nikkei|DAX|"
                          r"Hang Seng|benchmark)", re.IGNORECASE)
_TOKEN = re.compile(r"(?<![\w.,$+-])(?P<sign>-)?(?P<dollar>\$)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
                    r"(?P<unit>[TBM](?![A-Za-z]))?(?![\d])")
_SCALE_WORD = re.compile(r"\s*(?:[kKmMbBtT]\b|thousand|million|billion|trillion|bn\b|mn\b|mln\b|/)")
_PRICE_WORDS = ("Last close ", "200-day SMA ", "shares at ", "EPS ", "estimate ")
_POINTS = (" points", " pts", " level")
_INSIDER = re.compile(r"^(\s+- \d{4}-\d{2}-\d{2} )(.+?)( \([^()\n]*\): code )", re.MULTILINE)
_MACRO_LEVELS = re.compile(r"^(- (?:CPI index|Core CPI index|Nonfarm payrolls \(thousands\)): )[^(\n]+?( \(as of)",
                           re.MULTILINE)
_STATEMENT = re.compile(r"^(- Latest [^:\n]+\): )(.+)$", re.MULTILINE)
_ITEM = re.compile(r"([A-Za-z' ]+?) (-?[\d,.]+[TBM]?)(?=;|\.$)")


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
    """The alias table compiled: tickers case-sensitive, everything else case-insensitive; longest first."""

    tickers: re.Pattern
    words: re.Pattern
    exact: dict[str, tuple[str, str, int]]  # alias -> (ticker, kind, number within the ticker's kind)
    lower: dict[str, tuple[str, str, int]]

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
        priority = {k: i for i, k in enumerate(("company", "fund", "index", "person", "product", "ticker"))}
        lower: dict[str, tuple[str, str, int]] = {}
        for alias, value in sorted(exact.items(), key=lambda kv: -priority[kv[1][1]]):
            lower[alias.lower()] = value

        def pattern(aliases, flags=0, plural="") -> re.Pattern:
            alt = "|".join(re.escape(a) for a in sorted(aliases, key=len, reverse=True))
            return re.compile(rf"(?<![A-Za-z0-9])(?:{alt}){plural}(?![A-Za-z0-9])", flags)

        is_ticker = set(table.loc[table["kind"] == "ticker", "alias"])
        # a product's version number goes with it (an iPhone 16 dates the text)
        version = r"s?(?: \d{1,2}(?![\d%]|[.,]\d))?"
        return cls(pattern(is_ticker), pattern(set(exact) - is_ticker, re.IGNORECASE, version), exact, lower)


class Pseudonyms:
    """One episode's names: real -> pseudonym, consistent across every context the episode shows.

    ``mapping`` holds each real name seen so far and what it became (what envs put in ``info``).
    """

    def __init__(self, subject: str, seed: int | None = 0, aliases: str | Path = ALIASES):
        self.names = _Names.build(aliases)
        others = sorted({t for t, _, _ in self.names.exact.values()} - {subject})
        np.random.default_rng(seed).shuffle(others)
        self.subject = subject
        self.letters = {subject: "A", **{t: _letter(i + 1) for i, t in enumerate(others)}}
        self.mapping: dict[str, str] = {}
        self._insiders: dict[str, str] = {}

    def ticker(self, ticker: str) -> str:
        """The pseudonym of a ticker symbol (``TKR-A`` for the subject)."""
        return f"TKR-{self.letters.get(ticker, '?')}"

    def _name(self, real: str, ticker: str, kind: str, number: int) -> str:
        letter = self.letters[ticker]
        fake = (self.ticker(ticker) if kind == "ticker" else f"{_LABEL[kind]} {letter}"
                + (str(number) if kind in ("product", "person") else ""))
        self.mapping.setdefault(real, fake)
        return fake

    def insider(self, real: str) -> str:
        """An insider named by the data: an executive of the alias table if it is one, else ``Insider n``."""
        for variant in _name_variants(real):
            if (hit := self.names.lower.get(variant.lower())) is not None:
                return self._name(real, *hit)
        if real not in self._insiders:
            self._insiders[real] = f"Insider {len(self._insiders) + 1}"
            for variant in _name_variants(real):
                self.mapping.setdefault(variant, self._insiders[real])
        return self._insiders[real]

    def replace_names(self, text: str) -> str:
        def lookup(name: str):
            return self.names.exact.get(name) or self.names.lower.get(name.lower())

        def word(m: re.Match) -> str:
            whole = m.group(0)
            base, version = re.match(r"(.*?)((?: \d+)?)$", whole).groups()
            for found, rest in ((whole, ""), (base, version)):  # "Model 3" is a name; "iPhone 16" a name + version
                for name, plural in ((found, ""), (found[:-1], found[-1:])):  # iPhones, Teslas
                    if (hit := lookup(name)) is not None:
                        return self._name(name, *hit) + plural + ("" if hit[1] == "product" else rest)
            return whole

        text = self.names.words.sub(word, text)
        text = self.names.tickers.sub(lambda m: self._name(m.group(0), *self.names.exact[m.group(0)]), text)
        for real, fake in self._insiders.items():
            for variant in _name_variants(real):
                text = re.sub(rf"(?<![A-Za-z]){re.escape(variant)}(?![A-Za-z])", fake, text, flags=re.IGNORECASE)
        return text


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
    #: Real price levels of the sessions shown, as the context prints them (replaced wherever they appear).
    levels: tuple[float, ...] = ()

    @classmethod
    def from_history(cls, history: pd.DataFrame, day, first: pd.Timestamp | None = None,
                     amounts: float = 1.0) -> Rebase:
        """Factors from the daily bars: ``first`` is the first session shown (default: ``day`` itself)."""
        dates = pd.to_datetime(history["date"]).dt.normalize()
        day = pd.Timestamp(day).normalize()
        first = day if first is None else pd.Timestamp(first).normalize()
        row = history[dates == first]
        if row.empty:
            raise ValueError(f"no session on {first:%Y-%m-%d} in the history")
        shown = history[(dates >= first) & (dates <= day)]
        levels = tuple(float(v) for c in ("open", "high", "low", "close") if c in shown for v in shown[c])
        volume = float(row["volume"].iloc[0]) if "volume" in row else 1.0
        return cls(day, 100.0 / float(row["close"].iloc[0]), 100.0 / volume if volume > 0 else 1.0, amounts,
                   float(history.loc[dates <= day, "close"].iloc[-1]), levels)


def _relative(day: pd.Timestamp, when: pd.Timestamp) -> str:
    k = (day - when.normalize()).days
    return "D" if k == 0 else f"D-{k}" if k > 0 else f"D+{-k}"


def _number(text: str) -> float | None:
    m = _AMOUNT.match(text.strip())
    if not m:
        return None
    value = float(m.group(1).replace(",", ""))
    return value * {"T": 1e12, "B": 1e9, "M": 1e6, "": 1.0}[m.group(2)]


def _scaled(text: str, factor: float) -> str:
    value = _number(text)
    return text if value is None else _fmt(value * factor)


def _table_row(line: str, columns: list[str], rebase: Rebase) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != len(columns):
        return line
    out = []
    for name, cell in zip(columns, cells):
        if name == "date" and _ISO.fullmatch(cell):
            cell = _relative(rebase.day, pd.Timestamp(cell))
        elif name in PRICE_COLUMNS:
            cell = _scaled(cell, rebase.price)
        elif name == "volume":
            cell = _scaled(cell, rebase.volume)
        out.append(cell)
    return "| " + " | ".join(out) + " |"


def _numbers(line: str, rebase: Rebase) -> str:
    """Each number of a free-text line, once: price levels rebased, index levels masked, the rest unchanged."""
    real = {_fmt(level) for level in rebase.levels}

    def one(m: re.Match) -> str:
        sign, dollar, num, unit = m.group("sign") or "", m.group("dollar") or "", m.group("num"), m.group("unit") or ""
        before, after = line[:m.start()], line[m.end():]
        value = float(num.replace(",", ""))
        if before.endswith(_PRICE_WORDS) or after.startswith(" USD)"):
            return dollar + _scaled(sign + num + unit, rebase.price)
        near = rebase.last_close / 3 <= value <= rebase.last_close * 3
        if dollar and not unit and not _SCALE_WORD.match(after) and near:
            return f"{sign}${_fmt(value * rebase.price)}"
        index = _INDEX_WORDS.search(before[-40:]) and not before.endswith("Russell ")
        if value >= 1000 and not unit and (index or after.startswith(_POINTS)):
            return sign + dollar + "[level]"
        if not unit and num in real:
            return sign + dollar + _fmt(value * rebase.price)
        return m.group(0)

    return _TOKEN.sub(one, line)


def _dates(line: str, day: pd.Timestamp) -> str:
    line = _ISO.sub(lambda m: _relative(day, pd.Timestamp(m.group(0))), line)
    line = _YEAR_MONTH.sub(lambda m: _relative(day, pd.Timestamp(f"{m.group(0)}-01")), line)
    for pattern in _MONTH_DATES:
        line = pattern.sub("[date]", line)
    line = _YEARS[0].sub("FY[year]", line)
    return _YEARS[1].sub("[year]", line)


def anonymize_text(text: str, pseudonyms: Pseudonyms, rebase: Rebase) -> str:
    """Names, dates and levels out of a context or prompt text; markdown tables are rebased column by column."""
    text = _INSIDER.sub(lambda m: m.group(1) + pseudonyms.insider(m.group(2)) + m.group(3), text)
    text = _MACRO_LEVELS.sub(lambda m: m.group(1) + "[level withheld]" + m.group(2), text)

    def statement(m: re.Match) -> str:
        def item(i: re.Match) -> str:
            return f"{i.group(1)} {_scaled(i.group(2), rebase.price if 'EPS' in i.group(1) else rebase.amounts)}"

        items = _ITEM.sub(item, m.group(2))
        return m.group(1) + items

    lines, columns = text.split("\n"), None
    for i, line in enumerate(lines):
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if i + 1 < len(lines) and lines[i + 1].startswith("|---"):
                columns = [c.lower().replace(" ", "_") for c in cells]
            elif columns and not line.startswith("|---"):
                lines[i] = _table_row(line, columns, rebase)
            continue
        columns = None
        line = pseudonyms.replace_names(line)
        if m := _STATEMENT.match(line):
            lines[i] = _dates(statement(m), rebase.day)
        else:
            lines[i] = _numbers(_dates(line, rebase.day), rebase)
    return "\n".join(lines)


def _first_amount(section: str | None) -> float:
    """Statement amounts are scaled so the first one shown is 100 (1 when none is shown)."""
    for m in _STATEMENT.finditer(section or ""):
        for item in _ITEM.finditer(m.group(2)):
            value = _number(item.group(2))
            if "EPS" not in item.group(1) and value:
                return 100.0 / abs(value)
    return 1.0


def _first_shown(ctx: Context) -> pd.Timestamp | None:
    """The first session of the context's market table, if it shows one."""
    rows = re.findall(r"^\| (\d{4}-\d{2}-\d{2}) \|", ctx.sections.get("market", ""), re.MULTILINE)
    return pd.Timestamp(rows[0]) if rows else None


def anonymize(ctx: Context, pseudonyms: Pseudonyms | None = None) -> Context:
    """The same context with names, dates and levels taken out (see the module docstring).

    ``date`` stays the real decision day: it is the caller's clock and appears in no text. ``history``
    is rebased with ``date`` replaced by the day offset; ``news`` keeps its texts anonymized, ages in
    days instead of timestamps, and no URL.
    """
    pseudonyms = pseudonyms or Pseudonyms(ctx.ticker)
    rebase = Rebase.from_history(ctx.history, ctx.date, _first_shown(ctx),
                                 _first_amount(ctx.sections.get("fundamentals")))
    sections = {name: anonymize_text(body, pseudonyms, rebase) for name, body in ctx.sections.items()}
    body = anonymize_text(ctx.text, pseudonyms, rebase)
    text = f"{NOTE}\n\n{body}"
    history = pd.DataFrame(ctx.history, copy=True)
    for col in history.columns:
        if col in PRICE_COLUMNS:
            history[col] = history[col] * rebase.price
    if "volume" in history:
        history["volume"] = history["volume"] * rebase.volume
    history["date"] = [-(ctx.date - pd.Timestamp(d).normalize()).days for d in history["date"]]
    news = ctx.news.drop(columns=[c for c in ("url", "published_at", "available_at") if c in ctx.news]).copy()
    if "available_at" in ctx.news:
        news.insert(0, "age_days", [(ctx.date - t.tz_convert("America/New_York").tz_localize(None).normalize()).days
                                    for t in ctx.news["available_at"]])
    for col in ("title", "summary"):
        if col in news:
            news[col] = [anonymize_text(str(v), pseudonyms, rebase) if isinstance(v, str) else v for v in news[col]]
    if "ticker" in news:
        news["ticker"] = pseudonyms.ticker(ctx.ticker)
    ticker = pseudonyms.ticker(ctx.ticker)
    return dataclasses.replace(ctx, ticker=ticker, sections=sections, text=text, history=history, news=news,
                               prompt=render_prompt(ticker, "D", text, example_date="D-3"))
