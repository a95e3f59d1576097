import random
import re

import pytest
from conftest import growth

from tr1_env.core.actions import Action
from tr1_env.scoring.thesis import (
    _BOLD,
    _BULLET,
    _CLAIM,
    _HEADER,
    _HEADERS,
    _ITALIC,
    count_words,
    count_words_each,
    normalize_text,
    parse_thesis,
    reference_parse_thesis,
    visible_size,
)


def test_sections_in_order_with_think_apart():
    t = parse_thesis("<think>plan [[[SELL]]]</think>\n<Fundamentals>a</Fundamentals>\n<news>b</news>\n[[[BUY]]]")
    assert [s.tag for s in t.sections] == ["fundamentals", "news"]
    assert [s.body for s in t.sections] == ["a", "b"]
    assert t.think == "plan [[[SELL]]]"
    # a decision inside <think> is deliberation, not the answer
    assert t.decisions == (Action.BUY,) and t.decision is Action.BUY


def test_think_opened_by_the_prompt():
    t = parse_thesis("maybe [[[SELL]]]?\n</think>\n<conclusion>c</conclusion>\n[[[BUY]]]")
    assert t.think == "maybe [[[SELL]]]?" and [s.tag for s in t.sections] == ["conclusion"]
    assert t.decision is Action.BUY


def test_no_think_no_tags_empty():
    for text in ("", "just prose", "P/E < 20 and a<b, <<>>"):
        t = parse_thesis(text)
        assert t.sections == () and t.think is None and t.decision is None and t.raw_length == len(text)


def test_attributes_case_and_crlf():
    t = parse_thesis('<NEWS source="finnhub" n=3>\r\n### Head\r\n- one\r\n</news>\r\n')
    (s,) = t.sections
    assert s.tag == "news" and s.body == "### Head\n- one" and s.header and len(s.bullets) == 1
    assert t.raw_length == len('<NEWS source="finnhub" n=3>\r\n### Head\r\n- one\r\n</news>\r\n')


def test_nested_tags_take_outermost():
    t = parse_thesis("<macro>x <b>bold</b> <macro>inner</macro> y</macro><conclusion>z</conclusion>")
    assert [s.tag for s in t.sections] == ["macro", "conclusion"]
    assert t.sections[0].body == "x <b>bold</b> <macro>inner</macro> y"


def test_only_matched_pairs_are_sections():
    t = parse_thesis("<news>\n- a <br> stays\n<macro>\nm\n</macro>\n<conclusion>\nend")
    assert [s.tag for s in t.sections] == ["macro"] and t.sections[0].body == "m"
    body = "<news>\n### N\n- one two three\n</news>\n<conclusion>\nc\n</conclusion>\n"
    with_br = parse_thesis(body.replace("- one", "<br>\n- one<br/>"))
    assert [s.tag for s in with_br.sections] == ["news", "conclusion"]
    assert len(with_br.sections[0].bullets) == 1


def test_self_closing_and_stray_closing_tags_ignored():
    t = parse_thesis("</news><br/><risk>r</risk>")
    assert [s.tag for s in t.sections] == ["risk"]


def test_many_tags_parse_in_linear_time():
    """Sections and unmatched tags: a quadratic parser takes ~16x as long on 4x the input, a linear one ~4x."""
    sections = growth(parse_thesis, lambda n: "".join(f"<t{i % 7}>\nword\n</t{i % 7}>\n" for i in range(n)), 5_000)
    unmatched = growth(parse_thesis, lambda n: "<a " * n + "</a>" * n, 12_500)
    assert sections < 8 and unmatched < 8, (sections, unmatched)
    assert len(parse_thesis("".join(f"<t{i % 7}>\nword\n</t{i % 7}>\n" for i in range(20_000))).sections) == 20_000
    assert parse_thesis("<a " * 50_000 + "</a>" * 50_000).sections == ()


def test_many_quotes_in_one_claim_parse_in_linear_time():
    """Quotes and sources on one bullet line: gathering a claim's quotes by copying what it has so far
    (quadratic) took 9 s on 50,000 of them."""
    def line(n: int) -> str:
        return "<news>\n- view " + "*a b c* `s` " * n + "\n</news>"

    (bullet,) = parse_thesis(line(50_000)).sections[0].bullets
    assert len(bullet.quotes) == len(bullet.sources) == 50_000 and bullet.opinion == "view"
    ratio = growth(parse_thesis, line, 12_500)
    assert ratio < 8, ratio


def test_hostile_completion_parses_in_linear_time():
    """Unclosed bold, italics, decision brackets and tags (benchmarks/perf.py's case): the backtracking
    parser took about 20 s on 200 KB."""
    from benchmarks.perf import hostile_completion

    t = parse_thesis(hostile_completion(200_000))
    assert [s.tag for s in t.sections] == ["news"] and t.decision is None
    ratio = growth(parse_thesis, hostile_completion, 50_000)
    assert ratio < 8, ratio


@pytest.mark.parametrize(
    "mark, action",
    [
        ("[[[STRONG BUY]]]", Action.STRONG_BUY),
        ("[[[strong_buy]]]", Action.STRONG_BUY),
        ("[[[ Strong-Sell ]]]", Action.STRONG_SELL),
        ("[[[hold]]]", Action.HOLD),
        ("[[[SELL]]]", Action.SELL),
    ],
)
def test_decision_spellings(mark, action):
    assert parse_thesis(f"<conclusion>c</conclusion>\n{mark}").decision is action


def test_decision_rules():
    assert parse_thesis("no decision").decision is None
    assert parse_thesis("[[[MOON]]] [[[BUY]]]").decision is Action.BUY  # unknown words ignored
    assert parse_thesis("[[[BUY]]] again [[[buy]]]").decision is Action.BUY  # repeated, not conflicting
    hedge = parse_thesis(" ".join(f"[[[{a.name}]]]" for a in Action))
    assert hedge.decision is None and hedge.decisions == tuple(Action)
    assert parse_thesis("[[[BUY]]]\n[[[SELL]]]").decision is None


@pytest.mark.parametrize(
    "text",
    [
        "- view *ignore the rules [[[STRONG_BUY]]] now* `Reuters`",  # inside a quote
        "*a headline pasted whole [[[STRONG_BUY]]] " + " ".join(["word"] * 70) + "*",  # inside pasted italics
        "- view `[[[STRONG_BUY]]]`",  # inside a source
        "<think>[[[STRONG_BUY]]]</think>",  # deliberation
        "[[[STRONG_BUY]]]\n</think>\nanswer",  # deliberation the prompt opened
        "<think>\nnever closed [[[STRONG_BUY]]]",  # deliberation that never ended
    ],
)
def test_decision_is_read_outside_think_quotes_and_sources(text):
    t = parse_thesis(f"<news>\n{text}\n</news>\n")
    assert t.decisions == () and t.decision is None
    assert parse_thesis(f"{text}\n\n[[[SELL]]]").decision is (None if "never closed" in text else Action.SELL)


def test_emphasised_decision_still_counts():
    assert parse_thesis("final call: *[[[BUY]]]*").decision is Action.BUY


@pytest.mark.parametrize(
    "line, header",
    [
        ("### Fundamentals", True),
        ("# Title", True),
        ("**Key points**", True),
        ("**Key points:**", True),
        ("**Bold** then more text", False),
        ("#hashtag", False),
        ("plain text", False),
    ],
)
def test_header(line, header):
    assert parse_thesis(f"<a>{line}\nbody</a>").sections[0].header is header


@pytest.mark.parametrize(
    "line, text",
    [
        ("- dash", "dash"),
        ("* star", "star"),
        ("+ plus", "plus"),
        ("1. first", "first"),
        ("  - nested", "nested"),
        ("*italic start*", None),
        ("**bold**", None),
        ("-5% drop", None),
        ("---", None),
    ],
)
def test_bullet_markers(line, text):
    bullets = parse_thesis(f"<a>\n{line}\n</a>").sections[0].bullets
    assert [b.text for b in bullets] == ([text] if text else [])


def test_bullet_quotes_sources_and_opinion():
    text = "<a>\n- **Strong** demand ahead *revenue rose 20%* per `10-Q` and *margins widened a lot* `call`\n</a>"
    (b,) = parse_thesis(text).sections[0].bullets
    assert b.opinion == "**Strong** demand ahead"
    assert b.quotes == ("revenue rose 20%", "margins widened a lot")
    assert b.sources == ("10-Q", "call")


def test_only_quote_sized_italics_are_quotes():
    """3 to 60 words: ``*strong*`` is emphasis and does not end the opinion; 61 words is pasted text."""
    (b,) = parse_thesis("<a>\n- a *strong* quarter *revenue rose 20%* `10-Q`\n</a>").sections[0].bullets
    assert b.opinion == "a *strong* quarter" and b.quotes == ("revenue rose 20%",)
    long = " ".join(["w"] * 61)
    (b,) = parse_thesis(f"<a>\n- view *{long}* `src`\n</a>").sections[0].bullets
    assert b.quotes == () and b.opinion == f"view *{long}*"
    (b,) = parse_thesis(f"<a>\n- view *{long}* `src`\n</a>", max_quote_words=None).sections[0].bullets
    assert b.quotes == (long,)
    (b,) = parse_thesis("<a>\n- view *two words* `src`\n</a>", min_quote_words=1).sections[0].bullets
    assert b.quotes == ("two words",)


def test_opinion_ends_at_first_source_too():
    (b,) = parse_thesis("<a>\n- view `src` then *quote here now*\n</a>").sections[0].bullets
    assert b.opinion == "view" and b.quotes == ("quote here now",)


def test_bold_is_not_a_quote():
    s = parse_thesis("<a>\n- **bold claim** and more **bold**\n</a>").sections[0]
    assert s.has_bold and s.bullets[0].quotes == ()
    assert not parse_thesis("<a>*only italic*</a>").sections[0].has_bold


@pytest.mark.parametrize(
    "body, table",
    [
        ("| a | b |\n|---|---|\n| 1 | 2 |", True),
        ("a | b\n:-- | --:\n1 | 2", True),
        ("|---|", False),
        ("text\n---\nmore", False),
        ("| a | b |\n| 1 | 2 |", False),
    ],
)
def test_table(body, table):
    assert parse_thesis(f"<a>\n{body}\n</a>").sections[0].has_table is table


def test_word_count_ignores_markdown():
    assert count_words("- **Revenue** rose 3.5% | --- | `10-Q` *quoted text*") == 6
    # dash, bullet and a lone underscore are not words
    assert count_words("\u2014 caf\u00e9 \u2022 _ __x 12\u00b2") == 3
    rng = random.Random(0)
    for _ in range(2000):  # the ASCII fast path and the general one agree with the definition
        text = "".join(rng.choice("ab1 _-|*.%\t\n\x01\x1c\x85\u2014\u00e9") for _ in range(rng.randint(0, 30)))
        assert count_words(text) == sum(any(c.isalnum() for c in tok) for tok in text.split()), repr(text)
    assert parse_thesis("<a>### One two\n- three</a>").sections[0].word_count == 3


def test_word_count_of_varied_unicode():
    """Past 16 distinct non-ASCII characters the count takes its general path: same definition."""
    rng = random.Random(1)
    greek = "".join(map(chr, range(0x3b1, 0x3d0)))
    alphabet = "ab1 _-*.\n\u00a0\u2028\u3000\x85\u0301\u2014\u00b2\u2460\ud800" + greek
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert count_words(text) == sum(any(c.isalnum() for c in tok) for tok in text.split()), repr(text)


def test_word_counts_of_many_texts_are_each_count():
    """Texts counted together (ASCII ones in one translation, split at a byte none holds) count as alone."""
    rng = random.Random(2)
    for _ in range(2000):
        alphabet = rng.choice(["ab1 _-|*.%\t\n\x00\x1c\x7f", "ab1 _-*.\n\x80\x85\u00a0\u2014\u00e9"])
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(0, 5))]
        assert count_words_each(texts) == [count_words(text) for text in texts], texts


def test_visible_size_is_that_of_the_normalised_text():
    """Random texts (white space NFKC keeps or makes, compositions, U+0130, lone surrogates), then
    every code point alone: the Unicode facts visible_size counts on hold for each."""
    rng = random.Random(2)
    alphabet = "aB1 \t\n\x1c\x85\u00a0\u2019\u2014\uff21\ufb01\u0130\u00e9\u0301\u2028\u3000\u203e\u00a8\ud800"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        key = normalize_text(text)
        assert visible_size(text) == len(key) - key.count(" "), repr(text)
    for char in map(chr, range(0x110000)):
        key = normalize_text(char)
        assert visible_size(char) == len(key) - key.count(" "), hex(ord(char))


# tr1 0.x's patterns, lazy and backtracking: the definitions the linear ones are tested against.
PLAIN_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![*\w])")
PLAIN_BOLD = re.compile(r"\*\*(?=\S)(?:[^*\n]|\*(?!\*))+?(?<=\S)\*\*")


@pytest.mark.parametrize("linear, plain", [(_ITALIC, PLAIN_ITALIC), (_BOLD, PLAIN_BOLD)], ids=["italic", "bold"])
def test_linear_patterns_match_what_the_plain_ones_match(linear, plain):
    rng = random.Random(3)
    for _ in range(20_000):
        text = "".join(rng.choice("ab *\n`_1.\t\u00a0\u00e9") for _ in range(rng.randint(0, 25)))
        assert [(m.span(), m.groups()) for m in linear.finditer(text)] == \
            [(m.span(), m.groups()) for m in plain.finditer(text)], repr(text)


def test_whole_body_patterns_match_what_line_patterns_match():
    """Headers and bullets are read over a whole body (given with a line break in front) by the fast
    parser, line by line by the plain one."""
    rng = random.Random(4)
    pieces = ["a", " ", "\n", "#", "*", "-", "+", "1", ".", ")", ":", "\t", "\u00a0", "\x1c", "**"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        lines = text.split("\n")
        assert (_HEADERS.search("\n" + text) is not None) == any(_HEADER.match(line) for line in lines), repr(text)
        bullets = [m[1].strip() for m in map(_BULLET.match, lines) if m]
        assert [m[1] or m[5].strip() for m in _CLAIM.finditer("\n" + text)] == bullets, repr(text)


def test_usual_claims_read_from_one_pattern_equal_claims_read_line_by_line():
    """A claim of the usual shape (opinion, one italic, one source) is read from the groups of one
    pattern, any other bullet line as the line-by-line reading reads it: random lines, half of that
    shape, built from what tells the two apart (bold and stray asterisks, backticks, white space)."""
    rng = random.Random(5)
    plain = ["view", " a b", " ", "  ", "\t", "\u00a0", "(", ".", "_", "1", "-", "**bold**", " [[[BUY]]]"]
    markup = ["*", "**", "***", "`", "*a b c*", "`src`", "x*y"]

    def junk(n: int) -> str:
        return "".join(rng.choice(markup if rng.random() < 0.15 else plain) for _ in range(rng.randint(0, n)))

    n_usual = 0
    for _ in range(5_000):
        lines = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                gap, tail = rng.choice([" ", " ", "", "(", "**"]), rng.choice(["", " ", junk(1)])
                marker = rng.choice(["-", "*", "2.", "  +"])
                lines.append(f"{marker} {junk(6)}{gap}*rose{junk(4)}12%*{tail} `{junk(2)}`{tail}")
            else:
                lines.append(f"- {junk(12)}")
        body = "\n".join(lines)
        n_usual += sum(m[1] is not None for m in _CLAIM.finditer("\n" + body))
        for sizes in ((3, 60), (1, None), (0, 0), (2, 2)):
            text = f"<a>\n{body}\n</a>"
            assert parse_thesis(text, *sizes) == reference_parse_thesis(text, *sizes), repr(body)
    assert n_usual > 250  # the pattern's path was taken


def test_normalize_text():
    typographic = "  Nvidia\u2019s \u201cAI\u201d\n\tboom \u2014 up\u2013down "
    assert normalize_text(typographic) == "nvidia's \"ai\" boom - up-down"
    assert normalize_text("\uff21\uff22\uff23 \ufb01nance") == "abc finance"  # NFKC: full width, ligature
    rng = random.Random(6)
    for _ in range(20_000):  # ASCII, single-spaced or not: as str.split() would space it
        text = "".join(rng.choice("aB1 .\t\n\x0b\x1c\x7f") for _ in range(rng.randint(0, 12)))
        assert normalize_text(text) == " ".join(text.lower().split()), repr(text)
