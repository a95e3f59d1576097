"""Names in free text, found by a data-driven rule instead of a hand list: what strict anonymization masks.

A span of capitalised tokens is a name when

- one of its tokens is not a common English word (``wordfreq``'s English list: a Zipf frequency below
  :data:`RARE_ZIPF` for the word and its plain inflections and halves, so "tumbles" and "chipmaker" stay
  words while "Kuiper", "Guyana" and "Dimon" do not), or has the shape of a name ("iPhone16", "ChatGPT",
  "H100", "JPMorganChase"); or
- it sits mid-sentence in sentence-case text, where capitals mark names ("First Republic", "Epic Games",
  "Trump"), or repeats such a span of the same text (a headline's "Cook" after its summary's "Tim Cook").

Title-case text (headlines) carries no case signal, so only the first rule and the repeats apply there.
Acronyms count by rarity alone ("AI", "CEO" and "FDA" stay; "BYD" goes). Cashtags (``$aapl``) and
exchange codes (``ETR:APC``, ``NASDAQ: TSLA``) are names too. Everything here is a function of the one text
it reads (no statistic over other texts, so nothing from after a context's day decides what it masks);
:func:`names` is memoised, and the context index keeps the results on disk with its other caches.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["RARE_ZIPF", "common", "everyday", "names"]

#: Words at or above this Zipf frequency (log10 of occurrences per billion words) are common words.
RARE_ZIPF = 3.0
#: Capitalised words that name nothing a model could recognise a company or a day by.
GENERIC = frozenset({"I", "Fed", "Federal Reserve", "Wall Street", "U.S.", "US", "USA", "Treasury", "Treasuries",
                     "Congress", "Senate", "House", "White House", "ETF", "ETFs", "CEO", "CFO", "AI", "Dow", "Nasdaq",
                     "NYSE", "Index", "Company", "Product", "Executive", "Insider", "Entity", "Fund", "Monday",
                     "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February",
                     "March", "April", "May", "June", "July", "August", "September", "October", "November",
                     "December", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
                     "Buy", "Sell", "Hold", "Strong"})
#: Words dropped from the ends of a span (articles, legal forms).
_TRIM = frozenset({"The", "A", "An", "Inc", "Inc.", "Corp", "Corp.", "Co", "Co.", "Ltd", "LLC", "Plc", "Holdings"})
_CONNECT = r"(?:of|&|de|du|la|le|van|von|der|del|da|for|the)"
_WORD = r"(?:[A-ZÀ-ÖØ-Þ][^\W_]*(?:[.'’&-][^\W_]+)*\.?|[a-z]+[A-Z][^\W_]*|\d+[A-Za-z]+[^\W_]*)"  # José too
_SPAN = re.compile(rf"(?<![\w$])({_WORD}(?:\s{_CONNECT}\s{_WORD}|\s{_WORD})*)(?!\w)")
_CASHTAG = re.compile(r"(?<![\w$])\$[A-Za-z]{1,5}(?:\.[A-Za-z])?(?![\w])")
_EXCHANGE = re.compile(r"\b(?:NYSE|NASDAQ|Nasdaq|NYSEARCA|NYSEAMERICAN|AMEX|ETR|XETRA|LSE|LON|TSX|HKEX|HKG|TYO|FRA|"
                       r"EPA|SWX|ASX|NSE|BSE|OTC|OTCMKTS|BATS|CBOE)\s?:\s?[A-Z0-9][A-Z0-9.\-]{0,7}\b")
_SENTENCE = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!Inc\.)(?<!Corp\.)(?<!\bCo\.)(?<!\bSt\.)(?<!\bMr\.)"
                       r"(?<!\bMs\.)(?<!\bDr\.)\s+(?=\S)|^\s*[-*#]*\s*(?:\[[^\]]*\]\s*)?|\s[-–—]\s")
_DATEISH = re.compile(r"^(?:Q[1-4](?:['’]?\d{2}|\d{4})?|[1-4]Q['’]?\d*|H[12](?:['’]?\d{2}|\d{4})?|"
                      r"[12]H['’]?\d*|FY['’]?\d*|CY['’]?\d*|\d+(?:st|nd|rd|th|s|[kKmMbBxX]|bn|mn|pm|am)|"
                      r"D(?:-\d+)?)$")
_STARTER = 10 ** (5.1 - 9)  # words this common start sentences; rarer capitalised first words start names
_SUFFIXES = ("'s", "’s", "s", "es", "ed", "d", "ing", "er", "ers", "ly")


@lru_cache(maxsize=1)
def _frequencies() -> dict[str, float]:
    from wordfreq import get_frequency_dict  # its English list ships in the wheel: nothing is downloaded

    return get_frequency_dict("en", wordlist="best")


@lru_cache(maxsize=200_000)
def common(word: str) -> bool:
    """``word`` (any case) is a common English word, or an inflection or a compound of two (``wordfreq``)."""
    freq = _frequencies()
    threshold = 10 ** (RARE_ZIPF - 9)
    w = word.lower().strip(".'’")
    if freq.get(w, 0.0) >= threshold:
        return True
    for suffix in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and freq.get(w[: -len(suffix)], 0.0) >= threshold:
            return True
    parts = [p for p in re.split(r"[-'’.&/]", w) if p]
    if len(parts) > 1:
        return all(common(p) for p in parts)
    return any(freq.get(w[:i], 0.0) >= threshold and freq.get(w[i:], 0.0) >= threshold for i in range(3, len(w) - 2))


def everyday(word: str) -> bool:
    """A word in everyday use in lower case (Zipf 3.5 or more: "apple", "meta", "threads"), which an alias
    written in capitals does not match."""
    return _frequencies().get(word.lower(), 0.0) >= 10 ** (3.5 - 9)


def _rare(token: str) -> bool:
    """A token shaped like a name, or not a common word; acronyms by rarity alone."""
    bare = token.rstrip(".").removesuffix("'s").removesuffix("’s")
    if not bare or bare in GENERIC or _DATEISH.match(bare):
        return False
    if re.search(r"[a-z][A-Z]|[A-Za-z]\d|\d[A-Za-z]{2,}|[A-Za-z][&.][A-Z]", bare):  # iPhone, ChatGPT, H100, AT&T
        return not _DATEISH.match(bare)
    if len(bare) == 1:
        return False
    return not common(bare)


def _title_case(sentence: str) -> bool:
    """No lowercase word of four letters or more: a headline, whose capitals mark nothing."""
    words = re.findall(r"(?<![\w'’-])[A-Za-z][A-Za-z'’]{3,}", sentence)
    return not any(w.islower() for w in words)


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence (or headline segment) of ``text``."""
    cuts = sorted({0, len(text), *(m.end() for m in _SENTENCE.finditer(text))})
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _trim(tokens: list[str], start: int) -> list[tuple[int, list[str]]]:
    """A span's parts: split at generic and date-like words, articles and legal forms dropped from the ends,
    a trailing possessive or full stop dropped; (start, tokens) each."""
    parts, current, at = [], [], start
    for token in tokens + [""]:
        bare = token.rstrip(".,")
        if not token or bare in GENERIC or _DATEISH.match(bare):
            if current:
                parts.append((at - sum(len(t) + 1 for t in current), current))
            current = []
        else:
            current.append(token)
        at += len(token) + 1
    out = []
    for begin, words in parts:
        while words and (words[0] in _TRIM or re.fullmatch(_CONNECT, words[0])):
            begin += len(words.pop(0)) + 1
        while words and (words[-1] in _TRIM or re.fullmatch(_CONNECT, words[-1])):
            words.pop()
        if words:
            last = re.sub(r"(?:'s|’s|'|’)$", "", words[-1])
            words[-1] = last if re.fullmatch(r"(?:[A-Z]\.)+", last) else last.rstrip(".")
            if words[-1]:
                out.append((begin, words))
    return out


@lru_cache(maxsize=400_000)
def names(text: str) -> tuple[tuple[int, int, str], ...]:
    """``(start, end, name)`` of every name in ``text``, in order and without overlaps (see the module docstring)."""
    found: dict[int, tuple[int, str]] = {}
    for pattern in (_EXCHANGE, _CASHTAG):
        for m in pattern.finditer(text):
            if m.group(0).startswith("$") and m.group(0)[1:].lower() in ("m", "b", "k", "t", "bn", "mn"):
                continue
            found[m.start()] = (m.end(), m.group(0))
    kept: set[str] = set()
    source = re.search(r" \([^()]*\)$", text) if text.lstrip().startswith("- [") else None
    body = text[:source.start()] if source else text  # a news line's source names no company and no day
    for a, b in _sentences(body):
        sentence = body[a:b]
        title = _title_case(sentence)
        for m in _SPAN.finditer(sentence):
            for start, tokens in _trim(m.group(1).split(" "), a + m.start(1)):
                span = " ".join(tokens)
                first = not re.search(r"[A-Za-z0-9]", text[a:start])
                if title:  # no case signal: the rare words alone, runs of them together
                    run: list[str] = []
                    for token in tokens + [""]:
                        if token and _rare(token):
                            run.append(token)
                        elif run:
                            kept.add(" ".join(run))
                            run = []
                elif any(_rare(t) for t in tokens) or not first and not span.isupper():
                    kept.add(span)
                elif first and len(tokens) > 1 and (re.fullmatch(r"[A-Z]\.", tokens[1]) or (
                        _frequencies().get(tokens[0].lower(), 0.0) < _STARTER and not tokens[0].endswith("s"))):
                    kept.add(span)  # "Warren E. Buffett", "Daniel Newman": a first name, not a sentence's first word
                elif first and len(tokens) > 1 and common(tokens[0]):
                    rest = _trim(tokens[1:], start + len(tokens[0]) + 1)
                    kept.update(" ".join(words) for _, words in rest if not " ".join(words).isupper())
    # a kept span names the same thing wherever it recurs in this text; so does a rare last word of one
    # ("McIntyre" after "Doug McIntyre")
    vocabulary = kept | {s.split(" ")[-1] for s in kept if " " in s and _rare(s.split(" ")[-1])}
    text = body
    for word in vocabulary:
        at = text.find(word)
        while at >= 0:
            end = at + len(word)
            before, after = text[at - 1:at] if at else " ", text[end:end + 2] + "  "
            if not (before.isalnum() or before in "$_") and not (after[0].isalnum() or after[0] in "-_") \
                    and not re.match(r"['’][a-rt-z]", after):
                if end > found.get(at, (-1,))[0]:  # the longest name starting here
                    found[at] = (end, word)
            at = text.find(word, at + 1)
    out, end = [], -1
    for start in sorted(found):
        stop, name = found[start]
        if start >= end:
            out.append((start, stop, name))
            end = stop
    return tuple(out)
