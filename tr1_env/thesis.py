"""Parse a Trading-R1 completion into sections, claims and a decision.

The parser only reads the markup; every judgement (what scores, what counts as
a quote, what is fabricated) lives in :mod:`tr1_env.rewards`. It never raises:
a policy under RL writes broken markup, and a crash would take the rollout
down with it, so unclosed and nested tags, attributes, odd case and CRLF are
all read as well as they can be.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from tr1_env.actions import Action

__all__ = ["Bullet", "Section", "Thesis", "count_words", "normalize_text", "parse_thesis"]

_TAG = re.compile(r"<(/?)([a-z][\w-]*)(?:\s[^<>]*?)?(/?)>", re.IGNORECASE)
_THINK = re.compile(r"<(/?)think(?:\s[^<>]*)?>", re.IGNORECASE)
_DECISION = re.compile(r"\[\[\[\s*([a-z][a-z _-]*?)\s*\]\]\]", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(\S.*)$")
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S|^\s*\*\*[^*\n]+\*\*\s*:?\s*$")
_BOLD = re.compile(r"\*\*(?=\S)[^\n]+?(?<=\S)\*\*")
# One asterisk on each side, never part of ``**bold**`` nor a ``* bullet`` marker.
_QUOTE = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![*\w])")
_SOURCE = re.compile(r"`([^`\n]+)`")
_TABLE_RULE = frozenset("|:- \t")
_ASCII_PUNCT = str.maketrans(
    {
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033", '"'),
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    }
)


@dataclass(frozen=True)
class Bullet:
    """One claim: an opinion backed by ``*quotes*`` from the input and `` `sources` ``."""

    text: str
    opinion: str
    quotes: tuple[str, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """One XML-tagged section and the markdown features the structure reward looks for."""

    tag: str
    body: str
    header: bool
    bullets: tuple[Bullet, ...]
    has_bold: bool
    has_table: bool
    word_count: int


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
    return " ".join(unicodedata.normalize("NFKC", text).translate(_ASCII_PUNCT).lower().split())


def count_words(text: str) -> int:
    """Tokens holding a letter or digit, so markdown (``-``, ``|``, ``**``) is not a word."""
    return sum(any(ch.isalnum() for ch in token) for token in text.split())


def parse_thesis(text: str) -> Thesis:
    """Split ``text`` into top-level sections and read the ``[[[ACTION]]]`` decision.

    Decisions inside ``<think>`` are deliberation, not the answer, and are ignored.
    Several *different* decisions make the thesis conflicting (``decision=None``):
    writing every action to hedge must not pay.
    """
    clean = text.replace("\r\n", "\n").replace("\r", "\n")
    sections, thinking, answer = [], [], []
    first = _THINK.search(clean)
    if first and first.group(1):  # the chat template opened <think> in the prompt
        thinking.append(clean[: first.start()].strip())
        clean = clean[first.end() :]
    last = 0
    for tag, start, body_start, body_end, end in _top_level_tags(clean):
        if tag == "think":
            thinking.append(clean[body_start:body_end].strip())
            answer.append(clean[last:start])
            last = end
        else:
            sections.append(_section(tag, clean[body_start:body_end].strip()))
    answer.append(clean[last:])
    decisions = tuple(_decisions("".join(answer)))
    return Thesis(
        sections=tuple(sections),
        think="\n\n".join(thinking) if thinking else None,
        decision=decisions[-1] if len(set(decisions)) == 1 else None,
        decisions=decisions,
        raw_length=len(text),
    )


def _top_level_tags(text: str) -> Iterator[tuple[str, int, int, int, int]]:
    """Yield ``(tag, start, body_start, body_end, end)`` for each outermost element.

    Tags are paired per name like brackets. An unclosed tag ends where the next
    opening tag starts a line (the model forgot ``</news>`` and went on to
    ``<macro>``), else at the end of the text. Linear in the number of tags.
    """
    tags = [m for m in _TAG.finditer(text) if not m.group(3)]
    match: dict[int, int] = {}
    stacks: dict[str, list[int]] = {}
    for i, m in enumerate(tags):
        stack = stacks.setdefault(m.group(2).lower(), [])
        if not m.group(1):
            stack.append(i)
        elif stack:
            match[stack.pop()] = i
    next_line_open = [len(tags)] * (len(tags) + 1)
    for i in range(len(tags) - 1, -1, -1):
        starts_line = not text[text.rfind("\n", 0, tags[i].start()) + 1 : tags[i].start()].strip()
        next_line_open[i] = i if starts_line and not tags[i].group(1) else next_line_open[i + 1]
    i = 0
    while i < len(tags):
        m = tags[i]
        if m.group(1):
            i += 1
        elif i in match:
            close = tags[match[i]]
            yield m.group(2).lower(), m.start(), m.end(), close.start(), close.end()
            i = match[i] + 1
        else:
            i = next_line_open[i + 1]
            stop = tags[i].start() if i < len(tags) else len(text)
            yield m.group(2).lower(), m.start(), m.end(), stop, stop


def _decisions(text: str) -> Iterator[Action]:
    for m in _DECISION.finditer(text):
        try:
            yield Action.parse(m.group(1))
        except ValueError:
            continue


def _section(tag: str, body: str) -> Section:
    lines = body.split("\n")
    return Section(
        tag=tag,
        body=body,
        header=any(_HEADER.match(line) for line in lines),
        bullets=tuple(_bullet(m.group(1).strip()) for m in map(_BULLET.match, lines) if m),
        has_bold=bool(_BOLD.search(body)),
        has_table=any(
            set(line) <= _TABLE_RULE and "|" in line and "-" in line and "|" in prev
            for prev, line in zip(lines, lines[1:])
        ),
        word_count=count_words(body),
    )


def _bullet(text: str) -> Bullet:
    quotes = list(_QUOTE.finditer(text))
    sources = list(_SOURCE.finditer(text))
    cut = min((m.start() for m in quotes + sources), default=len(text))
    return Bullet(
        text=text,
        opinion=text[:cut].strip(),
        quotes=tuple(m.group(1).strip() for m in quotes),
        sources=tuple(m.group(1).strip() for m in sources),
    )
