"""Parse a Trading-R1 completion into sections, claims and a decision.

The parser reads the markup and nothing else; what a section, a claim or a decision is worth
lives in :mod:`tr1_env.scoring.rewards`. It never raises: a policy under RL writes broken markup, and a
crash would take the rollout down with it. Every pattern is linear in the input (none backtracks
across a line break or a run of unbounded length, but for the claim pattern, which backs up once
through a line ending on a backtick and tries each asterisk once, up to the next ones), because it
runs inside every GRPO reward call and every Thesis env step on whatever the policy wrote.
:func:`parse_thesis` reads a section with one pass of each pattern over its body, and a claim of
unusual shape as the plain reading does; :func:`reference_parse_thesis` reads it line by line and
claim by claim, the plain definition the fast reading is tested equal to.

The rules (SPEC 1.3):

- a section is an opening tag with its matching closing tag (outermost pairs only; ``<br>`` and
  other unclosed tags are not sections);
- a quote is ``*italic*`` text of ``min_quote_words``..``max_quote_words`` words; shorter italics
  are emphasis, longer ones pasted text; a source is `` `backtick text` ``;
- the opinion of a bullet is its text before the first quote or source;
- the decision ``[[[ACTION]]]`` is read outside ``think`` and outside italics of quote size or
  longer and sources, so text copied from the context can never set it.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from tr1_env.core.actions import Action

__all__ = ["Bullet", "Section", "Thesis", "count_words", "count_words_each", "normalize_text", "parse_thesis",
           "reference_parse_thesis", "visible_size"]

_TAG = re.compile(r"<(/?)([a-z][\w-]*)(?:\s[^<>]*?)?(/?)>", re.IGNORECASE)
_THINK = re.compile(r"<(/?)think(?:\s[^<>]*)?>", re.IGNORECASE)
_DECISION = re.compile(r"\[\[\[([^\[\]\n]{1,40}?)\]\]\]")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(\S.*)$")
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S|^\s*\*\*[^*\n]+\*\*\s*:?\s*$")
# The same two over a whole body at once, given with a line break in front: each line starts at a
# literal ``\n`` the engine jumps to (``[^\S\n]``: white space that does not end the line).
_HEADERS = re.compile(r"\n(?:[^\S\n]{0,3}#{1,6}[^\S\n]+\S|[^\S\n]*\*\*[^*\n]+\*\*[^\S\n]*:?[^\S\n]*$)", re.MULTILINE)
# A bullet line's text, stripped, is group 1 when the line may be the usual claim, group 5
# (unstripped) otherwise. The usual claim ends on a backtick (looked for first: one fast pass) and is
# an opinion with its white space and the italic's opening asterisk (2), then one italic (3) and after
# white space one source (4); the opinion runs to the last asterisk after which the rest fits (a greedy
# run the engine backs up from asterisk to asterisk) and is checked in Python.
_CLAIM = re.compile(
    r"\n[^\S\n]*(?:[-*+]|\d+[.)])[^\S\n]++"
    r"(?:(?=[^\n]*+(?<=`))(([^\n]*\*)(?<=\s\*)(?=[^\s*])([^*`\n]++)(?<=\S)\*[^\S\n]++`([^*`\n]+)`)$|(\S[^\n]*))",
    re.MULTILINE)
# ``**`` + text without a ``**`` or a line break + ``**``: the text runs to the next ``**`` without
# backtracking (``++``), as no shorter span could end on one.
_BOLD = re.compile(r"\*\*(?=\S)(?:[^*\n]|\*(?!\*))++(?<=\S)\*\*")
# One asterisk on each side, never part of ``**bold**`` nor a ``* bullet`` marker. It opens on a
# literal ``*`` (the engine jumps from one to the next) and its text runs to the next ``*``
# without backtracking (``++``): a shorter or longer span could not end on an asterisk.
_ITALIC = re.compile(r"\*(?<![*\w]\*)(?=[^\s*])([^*\n]++)(?<=\S)\*(?![*\w])")
_SOURCE = re.compile(r"`([^`\n]+)`")
_TABLE_RULE = frozenset("|:- \t")
_NOT_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|_)+(?!\S)")  # a token without a letter or digit
# Word counting on ASCII bytes: letters and digits become ``a``, white space (str.split's, \x1c-\x1f
# included) a space, and the rest is deleted, so each word starts where `` a`` occurs.
_ASCII_NON_WORD = bytes(i for i in range(128) if not (chr(i).isalnum() or chr(i).isspace()))
_ASCII_WORD_MAP = bytes(ord("a") if chr(i).isalnum() else ord(" ") if chr(i).isspace() else i for i in range(256))
_ASCII_SPACE = bytes(i for i in range(128) if chr(i).isspace())
_ASCII_BYTES = bytes(range(128))
_ASCII_PUNCT = (  # replaced one by one: str.translate looks each character of non-ASCII text up in Python
    *((c, "'") for c in "\u2018\u2019\u201a\u201b\u2032"),
    *((c, '"') for c in "\u201c\u201d\u201e\u201f\u2033"),
    *((c, "-") for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"),
)


class Bullet(NamedTuple):
    """One claim: an opinion backed by ``*quotes*`` from the input and `` `sources` ``. Claims and
    sections are named tuples: a thesis holds dozens, each built in a third of a frozen dataclass's time."""

    text: str
    opinion: str
    quotes: tuple[str, ...]
    sources: tuple[str, ...]


class Section(NamedTuple):
    """One XML-tagged section and the markdown features the structure reward looks for."""

    tag: str
    body: str
    header: bool
    bullets: tuple[Bullet, ...]
    has_bold: bool
    has_table: bool
    word_count: int


_new = tuple.__new__  # a claim or a section from its fields, skipping the named tuple's keyword-reading __new__


@dataclass(frozen=True)
class Thesis:
    """A parsed completion. ``decision`` is None when absent or when the completion hedges."""

    sections: tuple[Section, ...]
    think: str | None
    decision: Action | None
    decisions: tuple[Action, ...]
    raw_length: int


def normalize_text(text: str) -> str:
    """Fold what a faithful copy may change (case, Unicode forms, curly quotes, dashes,
    white space) so that quote checks compare words, not typography."""
    if text.isascii():  # nothing for NFKC or the typography table to fold
        if text.isprintable() and "  " not in text:  # its only white space is single spaces
            return text.lower().strip(" ")
        return " ".join(text.lower().split())
    text = unicodedata.normalize("NFKC", text)
    for typographic, plain in _ASCII_PUNCT:
        if typographic in text:
            text = text.replace(typographic, plain)
    return " ".join(text.lower().split())


def count_words(text: str) -> int:
    """Tokens holding a letter or digit, so markdown (``-``, ``|``, ``**``) is not a word."""
    if not text.isascii():
        # Mostly ASCII in practice (curly quotes, dashes, accents): each distinct other character
        # becomes what it counts as (a letter, a space or nothing); otherwise the general count.
        raw = text.encode("utf-8", "surrogatepass")
        others = set(raw.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))
        if len(others) > 16:
            return len(text.split()) - len(_NOT_WORD.findall(text))
        for char in others:
            text = text.replace(char, "a" if char.isalnum() else " " if char.isspace() else "")
    # Two passes in C and no token built.
    return (" " + text).encode("ascii").translate(_ASCII_WORD_MAP, _ASCII_NON_WORD).count(b" a")


def count_words_each(texts: list[str]) -> list[int]:
    """:func:`count_words` of each text. ASCII texts are translated in one pass and split apart at a
    byte no ASCII text holds: a thesis's dozens of short opinions cost more in calls than in counting."""
    if not all(map(str.isascii, texts)):
        return list(map(count_words, texts))
    joined = (" " + " \x80 ".join(texts)).encode("latin-1").translate(_ASCII_WORD_MAP, _ASCII_NON_WORD)
    return [part.count(b" a") for part in joined.split(b"\x80")] if texts else []


def visible_size(text: str) -> int:
    """The characters of ``normalize_text(text)`` other than spaces, without building it: equal
    normalised texts have equal sizes, so most texts are told apart without it.

    Of its steps only NFKC changes the count: the typography table maps a character to one, and
    lowercasing lengthens U+0130 alone (to two characters) and never makes or unmakes white space.
    """
    if text.isascii():
        return len(text.encode("ascii").translate(None, _ASCII_SPACE))
    text = unicodedata.normalize("NFKC", text)
    raw = text.encode("utf-8", "surrogatepass")
    wide = raw.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass")  # its non-ASCII characters
    spaces = len(raw) - len(raw.translate(None, _ASCII_SPACE)) + len(wide) - len("".join(wide.split()))
    return len(text) + wide.count("\u0130") - spaces


def parse_thesis(text: str, min_quote_words: int = 3, max_quote_words: int | None = 60) -> Thesis:
    """Split ``text`` into its top-level sections and read the ``[[[ACTION]]]`` decision.

    ``<think>`` is deliberation: neither a section nor a place for the answer (a ``</think>``
    with no opening tag closes a block the chat template opened in the prompt; an opening
    ``<think>`` never closed runs to the end). Several *different* decisions make the thesis
    conflicting (``decision=None``): writing every action to hedge must not pay.
    """
    return _parse(text, (min_quote_words, max_quote_words), _section)


def reference_parse_thesis(text: str, min_quote_words: int = 3, max_quote_words: int | None = 60) -> Thesis:
    """:func:`parse_thesis` reading each section line by line: plain and slower, the definition
    the fast path is tested against."""
    return _parse(text, (min_quote_words, max_quote_words), _plain_section)


def _parse(text: str, sizes: tuple[int, int | None], read_section: Callable[..., Section]) -> Thesis:
    clean = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    min_quote_words = sizes[0]
    sections, thinking = [], []
    for tag, start, body_start, body_end, _ in _top_level(clean):
        if tag == "think":
            thinking.append(clean[body_start:body_end].strip())
        elif tag == "/think":  # the prompt opened it: everything before is deliberation
            thinking.append(clean[:start].strip())
            sections = []
        else:
            sections.append(read_section(tag, clean[body_start:body_end].strip(), sizes))
    decisions = tuple(_decisions(_outside_think(clean), min_quote_words))
    return Thesis(
        sections=tuple(sections),
        think="\n\n".join(thinking) if thinking else None,
        decision=decisions[-1] if len(set(decisions)) == 1 else None,
        decisions=decisions,
        raw_length=len(text),
    )


def _top_level(text: str) -> Iterator[tuple[str, int, int, int, int]]:
    """Yield ``(tag, start, body_start, body_end, end)`` for each outermost matched pair.

    Tags pair per name like brackets (one stack per name, so linear in the number of tags).
    Unmatched tags are not sections, with two exceptions for ``think``: a first ``</think>``
    with nothing open yields ``("/think", ...)``, and an unclosed ``<think>`` runs to the end.
    """
    tags = [(m.start(), m.end(), bool(m[1]), m[2].lower()) for m in _TAG.finditer(text) if not m[3]]
    match: dict[int, int] = {}
    stacks: dict[str, list[int]] = {}
    for i, (_, _, closing, name) in enumerate(tags):
        stack = stacks.setdefault(name, [])
        if not closing:
            stack.append(i)
        elif stack:
            match[stack.pop()] = i
    first_think = next(i for i, tag in enumerate(tags) if tag[3] == "think") if "think" in stacks else -1
    i = 0
    while i < len(tags):
        start, end, closing, name = tags[i]
        if i in match:
            i = match[i]
            yield name, start, end, tags[i][0], tags[i][1]
            i += 1
            continue
        if name == "think":
            if closing and i == first_think:
                yield "/think", start, end, end, end
            elif not closing:
                yield name, start, end, len(text), len(text)
                return
        i += 1


def _outside_think(text: str) -> str:
    """``text`` without its deliberation, at any depth: ``<think>`` blocks (an unclosed one runs to
    the end) and, when the first think tag closes, everything before it (the prompt opened it)."""
    kept, last, depth = [], 0, 0
    for i, m in enumerate(_THINK.finditer(text)):
        if not m.group(1):
            if depth == 0:
                kept.append(text[last:m.start()])
            depth += 1
        elif depth:
            depth -= 1
            last = m.end() if depth == 0 else last
        elif i == 0:
            last = m.end()
    if depth == 0:
        kept.append(text[last:])
    return "\n".join(kept)


def _spans(pattern: re.Pattern, text: str, min_words: int, max_words: int | None = None) -> Iterator[re.Match]:
    """Matches of ``pattern`` whose group holds ``min_words`` to ``max_words`` words."""
    for m in pattern.finditer(text):
        n = count_words(m.group(1))
        if n >= min_words and (max_words is None or n <= max_words):
            yield m


def _decisions(answer: str, min_quote_words: int) -> Iterator[Action]:
    """Actions written outside quotes, pasted italics and sources (those are copied text).

    None of these spans crosses a line, so only the lines holding a decision are searched,
    each once (linear however many decisions and spans share a line).
    """
    line_end, starts, ends = -1, [], []
    for m in _DECISION.finditer(answer):
        if m.start() > line_end:
            line_start = answer.rfind("\n", 0, m.start()) + 1
            line_end = answer.find("\n", m.end())
            line_end = len(answer) if line_end < 0 else line_end
            line = answer[line_start:line_end]
            starts, ends = [], []
            for lo, hi in sorted((c.start(), c.end()) for p, n in ((_ITALIC, min_quote_words), (_SOURCE, 0))
                                 for c in _spans(p, line, n)):
                if starts and lo <= ends[-1]:
                    ends[-1] = max(ends[-1], hi)
                else:
                    starts.append(lo)
                    ends.append(hi)
        at = m.start() - line_start
        k = bisect_right(starts, at) - 1
        if k >= 0 and at < ends[k]:
            continue
        try:
            yield Action.parse(m.group(1))
        except ValueError:
            continue


def _section(tag: str, body: str, sizes: tuple[int, int | None]) -> Section:
    """A section read with one pass of each pattern over its whole body."""
    lines = "\n" + body
    return _new(Section, (tag, body, _HEADERS.search(lines) is not None, _bullets(lines, sizes),
                          _BOLD.search(body) is not None, "|" in body and _has_table(body.split("\n")),
                          count_words(body)))


def _bullets(lines: str, sizes: tuple[int, int | None]) -> tuple[Bullet, ...]:
    """The claims of a body given with a line break in front, found in one pass of :data:`_CLAIM`
    (its groups, no match objects): a usual claim (opinion, one italic, one source) is read from its
    groups, any other bullet line by :func:`_bullet`. The two agree: the opinion of a usual claim holds
    no backtick and its asterisks come in runs of two or more (bold markers), none of which can open an
    italic."""
    lo, hi = sizes[0], len(lines) if sizes[1] is None else sizes[1]
    bullets = []
    for text, opening, italic, source, other in _CLAIM.findall(lines):
        if not text:
            bullets.append(_bullet(other.strip(), sizes))
            continue
        opinion = opening[:-1]
        if "`" in opinion or "*" in opinion.replace("**", ""):  # it may hold a source or an italic
            bullets.append(_bullet(text, sizes))
        elif lo <= count_words(italic) <= hi:
            bullets.append(_new(Bullet, (text, opinion.rstrip(), (italic,), (source.strip(),))))
        else:  # emphasis: the opinion runs to the source
            bullets.append(_new(Bullet, (text, text[:text.index("`")].strip(), (), (source.strip(),))))
    return tuple(bullets)


def _plain_section(tag: str, body: str, sizes: tuple[int, int | None]) -> Section:
    """A section read line by line."""
    lines = body.split("\n")
    return Section(
        tag=tag,
        body=body,
        header=any(_HEADER.match(line) for line in lines),
        bullets=tuple(_bullet(m.group(1).strip(), sizes) for m in map(_BULLET.match, lines) if m),
        has_bold=bool(_BOLD.search(body)),
        has_table=_has_table(lines),
        word_count=count_words(body),
    )


def _has_table(lines: list[str]) -> bool:
    """A markdown table rule (``|---|:--|``) under a line with a pipe."""
    return any("|" in line and "-" in line and "|" in prev and set(line) <= _TABLE_RULE
               for prev, line in pairwise(lines))


def _bullet(text: str, sizes: tuple[int, int | None]) -> Bullet:
    """A claim: its quote-sized italics, its sources and the opinion before the first of them.

    Only their text is kept, no match objects: a line of thousands of quotes would otherwise hold
    as many objects the garbage collector walks again and again (1.4x the time per quote at 4x).
    """
    lo, hi = sizes[0], len(text) if sizes[1] is None else sizes[1]
    cut, quotes, sources = len(text), [], []
    for m in _ITALIC.finditer(text) if "*" in text else ():
        if lo <= count_words(m.group(1)) <= hi:
            cut = min(cut, m.start())
            quotes.append(m.group(1).strip())
    for m in _SOURCE.finditer(text) if "`" in text else ():
        cut = min(cut, m.start())
        sources.append(m.group(1).strip())
    return Bullet(text, text[:cut].strip(), tuple(quotes), tuple(sources))
