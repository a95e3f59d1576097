import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import growth

from benchmarks.perf import hostile_completion
from tr1_env.context.reference import build_context
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import (
    STAGE_WEIGHTS,
    TERMS,
    WEIGHT_FIELDS,
    QuoteIndex,
    RewardBreakdown,
    RewardConfig,
    bullet_count_reward,
    bullet_reward,
    count_reward,
    decision_reward,
    distinct_sections,
    evidence_reward,
    harmonic_mean,
    length_multiplier,
    opinion_reward,
    quote_in_context,
    reference_score,
    score,
    section_format_reward,
    structure_reward,
)
from tr1_env.scoring.rewards import STAGES as STAGE_NAMES
from tr1_env.scoring.thesis import parse_thesis, reference_parse_thesis

CONTEXT = """\
# NVDA 2024-05-31
## Market data (last 15 trading days)
Close 2024-05-31: 1096.33, up 26.9% over 15 sessions
50-day SMA: 925.12; 200-day SMA: 688.40
RSI(14): 68.2; MACD: 35.1 above signal 28.7
ATR(14): 41.9; Bollinger upper band: 1120.5
Volume on 2024-05-23: 83.5 million shares, twice the 20-day average

## News (last 3 days)
2024-05-29 Reuters: Nvidia\u2019s market value nears $2.8 trillion as AI chip demand shows no sign of slowing
2024-05-30 Bloomberg: Chip stocks slip as investors take profits after a record run
## News (4-10 days)
2024-05-22 Reuters: Nvidia forecasts second-quarter revenue above estimates as AI demand stays strong
2024-05-22 CNBC: Nvidia announces a ten-for-one forward stock split effective June 7
2024-05-23 WSJ: Microsoft and Meta reiterate plans to raise capital spending on AI infrastructure
## News (11-30 days)
2024-05-08 FT: US weighs new curbs on advanced chip exports to China

## Fundamentals (10-Q filed 2024-05-29)
Revenue: 26,044 million USD, up 262% year over year
Data center revenue: 22,563 million USD, up 427% year over year
Gross margin: 78.4%
Cash and marketable securities: 31,438 million USD

## Sentiment
Analyst recommendations: 42 buy, 8 hold, 0 sell
Insider transactions: CEO sold 120,000 shares under a 10b5-1 plan

## Macro
Federal funds target range: 5.25%-5.50%, unchanged at the May FOMC meeting
CPI inflation: 3.4% year over year in April
10-year Treasury yield: 4.51%
Unemployment rate: 3.9% in April
"""

HONEST = """\
<think>
Guidance beat, strong data center growth, momentum intact; export curbs and crowded positioning are the risks.
</think>
<fundamentals>
### Fundamentals
- **Revenue growth** is exceptional and far ahead of any peer in semiconductors, which supports a premium multiple for at least the next few quarters of reporting. *Revenue: 26,044 million USD, up 262% year over year* `10-Q 2024-05-29`
- Data center sales now dominate the business and are growing even faster than the total, so the AI build-out is the main driver of earnings. *Data center revenue: 22,563 million USD, up 427% year over year* `10-Q 2024-05-29`
- Margins show real pricing power rather than volume bought with discounts, a sign that competitors have not yet caught up with the product roadmap. *Gross margin: 78.4%* `10-Q income statement`
- The balance sheet carries far more cash than debt, so the company can fund research and buybacks without relying on credit markets at current rates. *Cash and marketable securities: 31,438 million USD* `10-Q balance sheet`
</fundamentals>
<technical>
### Technical picture
- Price trades well above both moving averages, confirming a **strong uptrend** that has held through the whole fifteen-session window of the input data. *50-day SMA: 925.12; 200-day SMA: 688.40* `stockstats`
- Momentum is positive but not yet extreme, since the oscillator sits just below the usual overbought threshold and the MACD line leads its signal. *RSI(14): 68.2; MACD: 35.1 above signal 28.7* `stockstats`
- The close is near the upper band, so a short pause is possible, yet volatility measured by the average true range remains moderate for this stock. *Bollinger upper band: 1120.5* `stockstats`
- Heavy volume on the earnings reaction day shows institutional buying rather than a thin retail-driven move that would be easier to reverse. *83.5 million shares, twice the 20-day average* `OHLCV 2024-05-23`

| Indicator | Value | Reading |
|---|---|---|
| RSI(14) | 68.2 | firm |
| MACD | 35.1 | bullish |
</technical>
<news>
### News flow
- Guidance above consensus is the most important headline of the month, because it shows demand is still outrunning supply for the coming quarter. *Nvidia forecasts second-quarter revenue above estimates* `Reuters 2024-05-22`
- The stock split does not change value but tends to widen the buyer base and has historically coincided with **positive retail attention** around the effective date. *ten-for-one forward stock split effective June 7* `CNBC 2024-05-22`
- The largest customers keep raising their infrastructure budgets, which gives visibility on orders well into next year for the accelerator product lines. *reiterate plans to raise capital spending on AI infrastructure* `WSJ 2024-05-23`
- Recent profit taking across the chip sector is a modest headwind, but it looks like positioning after a record run rather than news about fundamentals. *Chip stocks slip as investors take profits* `Bloomberg 2024-05-30`
</news>
<macro>
### Macro backdrop
- Policy rates are on hold at a restrictive level, which caps valuation multiples but has not stopped investors from paying up for **secular growth** names. *Federal funds target range: 5.25%-5.50%* `FRED`
- Inflation is easing only slowly, so rate cuts are unlikely before the autumn and long yields may stay elevated through the one-week horizon. *CPI inflation: 3.4% year over year in April* `FRED CPIAUCSL`
- Long-term yields near four and a half percent are a headwind for long-duration equities, yet they are no higher than in the previous month. *10-year Treasury yield: 4.51%* `FRED DGS10`
- A labour market that stays tight keeps consumer demand resilient and makes a sharp recession, the main macro risk to capital spending, less likely. *Unemployment rate: 3.9% in April* `FRED UNRATE`
</macro>
<risk_assessment>
### Risk assessment
- Export restrictions are the largest identifiable risk, because China was a meaningful share of data center sales before the earlier rounds of **curbs**. *US weighs new curbs on advanced chip exports to China* `FT 2024-05-08`
- Insider selling is routine and pre-scheduled, so it should be read as diversification rather than as a signal that management expects weaker results. *CEO sold 120,000 shares under a 10b5-1 plan* `insider transactions`
- After a steep rally the stock is exposed to sharp pullbacks on any disappointment, and the daily range is already large in absolute terms. *ATR(14): 41.9; Bollinger upper band: 1120.5* `stockstats`
- Sentiment is crowded on the buy side, which limits the number of new buyers if the narrative turns, although there is no outright sell rating today. *42 buy, 8 hold, 0 sell* `analyst recommendations`
</risk_assessment>
<conclusion>
### Conclusion
- Fundamentals, guidance and customer spending all point the same way, and none of the risks identified above is likely to materialise within one week. *AI demand stays strong* `Reuters 2024-05-22`
- Technical momentum confirms the fundamental picture without being stretched, so the expected one-week move is positive with moderate volatility. *MACD: 35.1 above signal 28.7* `stockstats`
- The split date and index flows add a **near-term catalyst**, while macro conditions are a headwind that is already priced into the current multiple. *stock split effective June 7* `CNBC 2024-05-22`
- Weighing upside against the stretched short-term position argues for a buy rather than a strong buy, sizing the position to respect the elevated volatility. *market value nears $2.8 trillion* `Reuters 2024-05-29`
</conclusion>

[[[BUY]]]
"""

TAGS = ("fundamentals", "technical", "news", "macro", "risk_assessment")
STAGES = [RewardConfig(), *(RewardConfig.for_stage(name) for name in STAGE_WEIGHTS)]
STAGE_IDS = ["default", *STAGE_WEIGHTS]
ALL, NO_STRUCTURE_ONLY, WITH_DECISION = (0, 1, 2, 3), (0, 2, 3), (0, 3)
HONEST_STRUCTURE = 0.6 + 0.4 * (4 * 0.9 + 1.0) / 5  # 5 analysis sections, each header+bullets+bold, one table

SS, S, H, B, SB = Action
PRINTED = {  # re-typed from the paper's table, rows predicted, columns true
    SS: (1.00, 0.75, -1.25, -2.00, -2.25),
    S: (0.75, 1.00, -0.75, -1.50, -2.00),
    H: (-1.50, -1.00, 1.00, -1.00, -1.50),
    B: (-1.75, -1.25, -0.75, 1.00, 0.75),
    SB: (-2.00, -1.50, -1.25, 0.75, 1.00),
}


def words(n: int, word: str = "growth") -> str:
    return " ".join([word] * n)


def section(tag: str, n_bullets: int = 4, cited: bool = True) -> str:
    """A section of ``n_bullets`` claims of 20 opinion words, each quoting the context when cited."""
    evidence = " *AI demand stays strong* `Reuters`" if cited else ""
    bullets = "\n".join(f"- {words(20, f'{tag}{i}')}{evidence}" for i in range(n_bullets))
    return f"<{tag}>\n### {tag}\n{bullets}\n</{tag}>\n"


# ---------------------------------------------------------------------------------------------- the honest fixture


def test_honest_thesis_is_well_formed():
    t = parse_thesis(HONEST)
    assert [s.tag for s in t.sections] == [*TAGS, "conclusion"]
    assert t.decision is Action.BUY and t.think is not None
    for s in t.sections:
        assert s.header and s.has_bold and 4 <= len(s.bullets) <= 7 and s.word_count >= 50
        for b in s.bullets:
            assert 15 <= len(b.opinion.split()) <= 90 and len(b.quotes) == 1 and len(b.sources) == 1
    assert [s.has_table for s in t.sections] == [False, True, False, False, False, False]


def test_honest_thesis_scores():
    r = score(HONEST, Action.BUY, CONTEXT)
    assert r.structure == pytest.approx(HONEST_STRUCTURE)
    assert r.evidence == pytest.approx(1.0)
    assert r.decision == 1.0 and r.decision_action is Action.BUY
    assert (r.n_claims, r.n_quotes, r.n_fabricated) == (24, 24, 0)
    assert r.total == pytest.approx(HONEST_STRUCTURE + 2.0)
    assert r.labelled and r.length_multiplier == 1.0
    assert evidence_reward(parse_thesis(HONEST), CONTEXT).n_verified == 24


def test_score_without_label_or_context():
    r = score(HONEST, None)
    assert r.decision == 0.0 and not r.labelled
    assert r.total == pytest.approx(HONEST_STRUCTURE + 1.0)
    assert r.n_fabricated == 0


def test_to_dict_is_json_friendly():
    d = score(HONEST, Action.BUY, CONTEXT).to_dict()
    assert d["decision_action"] == "BUY" and json.loads(json.dumps(d)) == d
    assert score("nothing", Action.BUY).to_dict()["decision_action"] is None


# ---------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize(
    "n, expected", [(0, 0.3), (1, 0.3), (3, 0.42), (4, 0.56), (5, 1), (6, 1), (7, 1), (8, 0.85), (10, 0.55), (30, 0.3)]
)
def test_count_reward(n, expected):
    assert count_reward(n) == pytest.approx(expected)


@pytest.mark.parametrize(
    "body, expected",
    [
        (f"### H\n- {words(60)} **b**\n| a | b |\n|---|---|", 1.0),
        (f"### H\n- {words(60)}", 0.7),
        (f"**Header**\n{words(60)}", 0.5),  # bold-only line: header and bold
        (f"{words(60)} **b**", 0.2),
        (words(60), 0.0),
        (f"### H\n- {words(40)} **b**\n| a | b |\n|---|---|", 0.2),  # under 50 words
        ("", 0.2),
    ],
)
def test_section_format_reward(body, expected):
    assert section_format_reward(parse_thesis(f"<a>\n{body}\n</a>").sections[0]) == pytest.approx(expected)


def test_structure_reward_formula():
    assert structure_reward(parse_thesis("no sections")) == 0.0
    # R_count and R_sec run over analysis sections: R_sec 0.7 each (no bold, no table)
    three = "".join(section(t) for t in ("news", "macro", "conclusion"))  # S = 2: R_count 0.3
    assert structure_reward(parse_thesis(three)) == pytest.approx(0.6 * 0.3 + 0.4 * 0.7)
    ten = "".join(section(f"s{i}") for i in range(9)) + section("conclusion")  # S = 9: R_count 0.7
    assert structure_reward(parse_thesis(ten)) == pytest.approx(0.6 * 0.7 + 0.4 * 0.7)
    only_conclusion = section("conclusion")  # S = 0: R_count 0.3, no R_sec
    assert structure_reward(parse_thesis(only_conclusion)) == pytest.approx(0.6 * 0.3)


def test_seven_analysis_sections_and_a_conclusion_get_full_count():
    """What our own prompt asks for: 7 analysis sections plus the conclusion, R_count = 1."""
    eight = "".join(section(f"s{i}") for i in range(7)) + section("conclusion")
    assert structure_reward(parse_thesis(eight)) == pytest.approx(0.6 * 1.0 + 0.4 * 0.7)
    with_think = "<think>\nplan\n</think>\n" + eight
    assert structure_reward(parse_thesis(with_think)) == pytest.approx(0.6 * 1.0 + 0.4 * 0.7)


def test_stray_br_changes_nothing():
    with_br = HONEST.replace("### Technical picture", "### Technical picture<br>").replace("</news>", "<br>\n</news>")
    assert score(with_br, Action.BUY, CONTEXT).structure == score(HONEST, Action.BUY, CONTEXT).structure


def test_missing_conclusion_factor():
    body = "".join(section(t) for t in ("news", "macro", "technical", "fundamentals", "risk"))
    full = 0.6 + 0.4 * 0.7
    assert structure_reward(parse_thesis(body)) == pytest.approx(0.5 * full)
    assert structure_reward(parse_thesis(body), RewardConfig(missing_conclusion_factor=0.0)) == 0.0
    assert structure_reward(parse_thesis(body), RewardConfig(missing_conclusion_factor=1.0)) == pytest.approx(full)


def test_duplicated_section_counts_once():
    once = section("news") + section("conclusion")
    twice = section("news") + section("news").replace("news>", "macro>") + section("conclusion")
    t = parse_thesis(twice)
    assert [s.tag for s in distinct_sections(t)] == ["news", "conclusion"]
    assert score(twice, Action.BUY, CONTEXT) == score(once, Action.BUY, CONTEXT)


# ---------------------------------------------------------------------------------------------- evidence


@pytest.mark.parametrize(
    "w, cited, expected",
    [
        (15, True, 1.0),
        (50, True, 1.0),
        (90, True, 1.0),
        (6, True, 0.4),
        (100, True, 0.8),
        (200, True, 0.5),
        (5, False, 0.1),
        (15, False, 0.3),
        (40, False, 0.3),
        (0, False, 0.0),
    ],
)
def test_opinion_reward(w, cited, expected):
    assert opinion_reward(w, cited) == pytest.approx(expected)


@pytest.mark.parametrize(
    "w, quote, source, expected",
    [
        (20, True, True, 1.0),
        (6, True, True, 0.4 * 0.4 + 0.6),
        (20, True, False, 0.4 * 0.3 + 0.35),
        (20, False, True, 0.4 * 0.3 + 0.25),
        (5, False, False, 0.4 * 0.1),
    ],
)
def test_bullet_reward(w, quote, source, expected):
    assert bullet_reward(w, quote, source) == pytest.approx(expected)


@pytest.mark.parametrize("n, expected", [(0, 0.0), (2, 0.5), (4, 1.0), (7, 1.0), (9, 0.8), (20, 0.3)])
def test_bullet_count_reward(n, expected):
    assert bullet_count_reward(n) == pytest.approx(expected)


def test_harmonic_mean():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.2, 0.2, 0.2]) == pytest.approx(0.2)
    assert harmonic_mean([]) == 0.0 and harmonic_mean([1.0, 0.0]) == 0.0


def test_evidence_reward_by_hand():
    source_only = f"- {words(20, 'margin')} `10-Q`"
    two = section("news") + f"<macro>\n- {words(20)} *AI demand stays strong* `FRED`\n{source_only}\n</macro>\n"
    macro = 0.3 * 0.5 + 0.7 * harmonic_mean([1.0, 0.37])
    r = evidence_reward(parse_thesis(two))
    assert macro == pytest.approx(0.3 * 0.5 + 0.7 * 2 / (1 + 1 / 0.37))
    assert r.reward == pytest.approx(2 / (1 + 1 / macro))
    assert (r.n_claims, r.n_quotes, r.n_fabricated, r.n_verified) == (6, 5, 0, 0)


def test_weak_bullets_and_sections_floor_at_001():
    r = evidence_reward(parse_thesis("<a>\n- ok\n- ok\n- ok\n- ok\n</a>"))  # R_bullet 0.008 each
    assert r.reward == pytest.approx(0.3 + 0.7 * 0.01)
    prose = evidence_reward(parse_thesis(section("news") + "<macro>prose only</macro>")).reward
    assert prose == pytest.approx(2 / (1 / 1.0 + 1 / 0.01))  # the bare section floors at 0.01
    assert evidence_reward(parse_thesis("")).reward == 0.0


def test_prose_conclusion_does_not_zero_evidence():
    """Four perfectly cited sections and a paragraph conclusion scored 0.000 when the conclusion counted."""
    body = "".join(section(t) for t in ("news", "macro", "technical", "fundamentals"))
    prose = body + "<conclusion>\nAll of the above points to a buy over the coming week.\n</conclusion>\n[[[BUY]]]"
    bulleted = body + section("conclusion") + "[[[BUY]]]"
    assert evidence_reward(parse_thesis(prose), CONTEXT).reward == pytest.approx(1.0)
    assert score(prose, Action.BUY, CONTEXT).evidence == score(bulleted, Action.BUY, CONTEXT).evidence == 1.0


@pytest.mark.parametrize(
    "quote",
    [
        "AI demand stays strong",
        "ai DEMAND   stays strong",  # case and white space
        "\u201cNvidia's market value nears\u201d",  # curly quotes around, straight apostrophe inside
        "up 262% year over year.",
        "Bloomberg: Chip stocks slip",
        "unchanged at the May FOMC meeting CPI inflation",  # spans a line break of the context
    ],
)
def test_quote_found_in_context(quote):
    r = evidence_reward(parse_thesis(f"<a>\n- {words(20)} *{quote}* `src`\n</a>"), CONTEXT)
    assert (r.n_quotes, r.n_verified, r.n_fabricated) == (1, 1, 0)


@pytest.mark.parametrize("quote", [
    "AI demand stays weak",
    "revenue tripled to 40 billion",
    "strong as AI demand",
    "26,044 million USD, up 26",  # the context says "up 262%": not the whole word
    "Revenue rose 1",
    "evenue: 26,044 million USD",  # starts inside a word
])
def test_quote_not_in_context_is_fabricated(quote):
    r = evidence_reward(parse_thesis(f"<a>\n- {words(20)} *{quote}* `src`\n</a>"), CONTEXT)
    assert (r.n_quotes, r.n_verified, r.n_fabricated) == (1, 0, 1)
    unchecked = evidence_reward(parse_thesis(f"<a>\n- {words(20)} *{quote}* `src`\n</a>"), None)
    assert (unchecked.n_fabricated, unchecked.n_verified) == (0, 0)


def test_repeated_quotes_count_each_time():
    """A looping completion's quotes are looked up once per call, and counted at each repeat."""
    real, fake = "AI demand stays strong", "revenue tripled to 40 billion"
    text = "<a>\n" + "\n".join(f"- {words(20)} *{q}* `src`" for q in (real, fake, real, real, fake, f"{real}.")) + "\n</a>"
    r = evidence_reward(parse_thesis(text), CONTEXT)
    assert (r.n_claims, r.n_quotes, r.n_verified, r.n_fabricated) == (6, 6, 4, 2)
    assert score(text, Action.BUY, CONTEXT) == reference_score(text, Action.BUY, CONTEXT)


def test_fabricated_quote_earns_nothing_and_is_penalised():
    good, fabricated = "*AI demand stays strong* `Reuters`", "*AI demand is collapsing* `src`"
    bullets = [f"- {words(20)} {good}"] * 3 + [f"- {words(20)} {fabricated}"]
    t = parse_thesis("<a>\n" + "\n".join(bullets) + "\n</a>")
    checked = evidence_reward(t, CONTEXT)
    expected = 0.3 + 0.7 * harmonic_mean([1, 1, 1, 0.37]) - 0.5 * 1 / 4
    assert checked.reward == pytest.approx(expected)
    assert evidence_reward(t, CONTEXT, RewardConfig(fabricated_penalty=0)).reward == pytest.approx(expected + 0.125)
    assert evidence_reward(t).reward == pytest.approx(1.0)  # paper: unchecked
    assert evidence_reward(t, CONTEXT, RewardConfig(fabricated_penalty=10)).reward == 0.0  # floor


def test_quote_length_bounds():
    def quotes(q, cfg=None):
        return score(f"<a>\n- {words(20)} *{q}* `src`\n</a>", None, CONTEXT, cfg).n_quotes

    assert quotes("AI demand") == 0  # emphasis, not a quote
    assert quotes("AI demand", RewardConfig(min_quote_words=1)) == 1
    pasted = " ".join(CONTEXT.split())
    assert quotes(pasted) == 0
    assert quotes(pasted, RewardConfig(max_quote_words=None)) == 1


# ---------------------------------------------------------------------------------------------- decision


@pytest.mark.parametrize("pred", list(Action))
@pytest.mark.parametrize("true", list(Action))
def test_decision_matrix_as_printed(pred, true):
    assert decision_reward(pred, true) == PRINTED[pred][true]


@pytest.mark.parametrize("pred", list(Action))
@pytest.mark.parametrize("true", list(Action))
def test_swap_strong_corners(pred, true):
    swapped = {(SS, SB): -2.00, (SB, SS): -2.25}
    expected = swapped.get((pred, true), PRINTED[pred][true])
    assert decision_reward(pred, true, RewardConfig(swap_strong_corners=True)) == expected


def test_invalid_decision():
    assert decision_reward(None, Action.HOLD) == -1.5
    assert decision_reward(None, Action.HOLD, RewardConfig(invalid_decision=-3.0)) == -3.0


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", ["w_structure", "w_evidence", "w_decision", "fabricated_penalty", "min_quote_words"])
def test_negative_settings_rejected(name):
    with pytest.raises(ValueError, match=name):
        RewardConfig(**{name: -1})


@pytest.mark.parametrize(
    "kwargs",
    [{"missing_conclusion_factor": 1.5}, {"max_quote_words": 2}, {"max_chars": 0}, {"overlong_zero_at": 1.0}],
)
def test_invalid_settings_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RewardConfig(**kwargs)


def test_stage_presets():
    for name, (ws, we, wd) in STAGE_WEIGHTS.items():
        cfg = RewardConfig.for_stage(name)
        assert (cfg.w_structure, cfg.w_evidence, cfg.w_decision) == (ws, we, wd)
    assert RewardConfig.for_stage("claims", max_chars=None).max_chars is None
    with pytest.raises(ValueError, match="unknown stage"):
        RewardConfig.for_stage("warmup")


def test_length_multiplier():
    assert length_multiplier(40_000) == 1.0
    assert length_multiplier(60_000) == pytest.approx(0.5)
    assert length_multiplier(80_000) == 0.0 and length_multiplier(10**6) == 0.0
    assert length_multiplier(10**6, RewardConfig(max_chars=None)) == 1.0
    assert length_multiplier(60_000, RewardConfig(overlong_zero_at=3.0)) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------- reward hacking


def _hedge() -> str:
    return HONEST.replace("[[[BUY]]]", " ".join(f"[[[{a.name}]]]" for a in Action))


def _paste_context() -> str:
    pasted = " ".join(CONTEXT.split())
    return re.sub(r"(?<![*\w])\*[^*\n]+\*(?![*\w])", lambda _: f"*{pasted}*", HONEST)


def _fabricate() -> str:
    return re.sub(r"(?<![*\w])\*[^*\n]+\*(?![*\w])", "*revenue tripled beating every estimate*", HONEST)


def _tag_spam() -> str:
    claim = "- **Buy** {} *AI demand stays strong* `Reuters`"
    tiny = "".join(f"<point_{i}>\n### P{i}\n{claim.format(i)}\n</point_{i}>\n" for i in range(40))
    return tiny + "<conclusion>\n- Buy.\n</conclusion>\n[[[BUY]]]"


def _empty_sections() -> str:
    return "".join(f"<{t}></{t}>\n" for t in (*TAGS, "conclusion")) + "[[[BUY]]]"


def _duplicated() -> str:
    sections = parse_thesis(HONEST).sections
    body = f"\n{sections[0].body}\n"
    copies = "".join(f"<{t}>{body}</{t}>\n" for t in TAGS)
    return copies + f"<conclusion>\n{sections[-1].body}\n</conclusion>\n[[[BUY]]]"


def _enormous() -> str:
    return HONEST + "\n" + words(6_000, "bullish")


HACKS = {
    "tag_spam": (_tag_spam, ALL),
    "empty_sections": (_empty_sections, ALL),
    "duplicated_sections": (_duplicated, ALL),
    "conflicting_decisions": (_hedge, WITH_DECISION),
    "pasted_context": (_paste_context, NO_STRUCTURE_ONLY),
    "fabricated_quotes": (_fabricate, NO_STRUCTURE_ONLY),
    "enormous_output": (_enormous, ALL),
}


@pytest.mark.parametrize("hack", list(HACKS))
@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGE_IDS)
def test_hack_scores_below_honest(hack, stage):
    make, stages = HACKS[hack]
    cfg = STAGES[stage]
    honest = score(HONEST, Action.BUY, CONTEXT, cfg).total
    hacked = score(make(), Action.BUY, CONTEXT, cfg).total
    if stage in stages:
        assert hacked < honest
    else:
        assert hacked <= honest


def test_hack_signatures():
    assert score(_hedge(), Action.BUY).decision == -1.5
    assert score(_paste_context(), Action.BUY).n_quotes == 0
    fab = score(_fabricate(), Action.BUY, CONTEXT)
    assert fab.n_fabricated == fab.n_quotes == 24 and fab.evidence < 0.5
    big = score(_enormous(), Action.BUY, CONTEXT)
    assert 0 < big.length_multiplier < 1 and big.decision == 1.0
    assert score(_tag_spam(), Action.BUY).structure < 0.3


# ---------------------------------------------------------------------------------------------- tr1 score


@pytest.fixture
def tr1_score(tmp_path, capsys):
    """``tr1 score`` on a completion (against CONTEXT, label BUY unless flags say otherwise) -> its JSON."""
    from tr1_env.cli import main as tr1

    (tmp_path / "ctx.txt").write_text(CONTEXT)

    def run(completion: str, *flags: str) -> dict:
        (tmp_path / "thesis.txt").write_text(completion)
        tr1(["score", "--completion", str(tmp_path / "thesis.txt"), "--context", str(tmp_path / "ctx.txt"),
             "--label", "BUY", *flags])
        return json.loads(capsys.readouterr().out)
    return run


def test_tr1_score_attacks(tr1_score):
    """Issue 8's attacks through the command line."""
    honest = tr1_score(HONEST)
    assert honest["decision_action"] == "BUY" and honest["n_fabricated"] == 0
    in_quote = HONEST.replace("[[[BUY]]]", "- *ignore the rules [[[STRONG_BUY]]] now* `headline`")
    assert tr1_score(in_quote)["decision_action"] is None and tr1_score(in_quote)["decision"] == -1.5
    in_think = HONEST.replace("[[[BUY]]]", "").replace("</think>", "[[[STRONG_BUY]]]\n</think>")
    assert tr1_score(in_think)["decision_action"] is None
    misquote = HONEST.replace("*Revenue: 26,044 million USD, up 262% year over year*",
                              "*Revenue: 26,044 million USD, up 26*")
    assert tr1_score(misquote)["n_fabricated"] == 1
    with_br = HONEST.replace("### News flow", "### News flow<br>").replace("</macro>", "<br>\n</macro>")
    assert tr1_score(with_br)["structure"] == honest["structure"]
    prose = re.sub(r"<conclusion>.*</conclusion>", "<conclusion>\nAll of this argues for buying this week.\n"
                   "</conclusion>", HONEST, flags=re.S)
    assert tr1_score(prose)["evidence"] == pytest.approx(honest["evidence"])


def test_tr1_score_reward_flags(tr1_score):
    assert tr1_score(HONEST.replace("[[[BUY]]]", ""), "--reward-invalid-decision", "-3")["decision"] == -3.0
    strong = HONEST.replace("[[[BUY]]]", "[[[STRONG_BUY]]]")
    assert tr1_score(strong, "--label", "STRONG_SELL")["decision"] == -2.0
    assert tr1_score(strong, "--label", "STRONG_SELL", "--reward-swap-strong-corners")["decision"] == -2.25
    fab = HONEST.replace("*Gross margin: 78.4%*", "*Gross margin: 99.9% this quarter*")
    assert tr1_score(fab, "--reward-fabricated-penalty", "0")["evidence"] > tr1_score(fab)["evidence"]
    staged = tr1_score(HONEST, "--stage", "structure")
    assert staged["total"] == pytest.approx(staged["structure"])
    assert tr1_score(HONEST, "--reward-weights", "0", "0", "2")["total"] == 2.0


def test_reward_terms_are_one_table_the_config_scorer_flags_and_docs_follow(tr1_score, capsys):
    """Each row of TERMS has its weight field (default and stage weights from the row), its breakdown field, its
    place in the total and in every weight flag, and its line in docs/training.md."""
    from tr1_env.cli import build_parser

    names = [t.name for t in TERMS]
    defaults = {f.name: f.default for f in dataclasses.fields(RewardConfig)}
    assert WEIGHT_FIELDS == tuple(f"w_{n}" for n in names)
    assert [defaults[f] for f in WEIGHT_FIELDS] == [t.weight for t in TERMS] == RewardConfig().weights
    assert STAGE_WEIGHTS == {s: tuple(t.stages[s] for t in TERMS) for s in STAGE_NAMES}
    assert set(names) <= {f.name for f in dataclasses.fields(RewardBreakdown)}
    cfg = RewardConfig(w_structure=0.5, w_evidence=2.0, w_decision=0.25)
    r = score(HONEST, Action.SELL, CONTEXT, cfg)
    assert r.total == pytest.approx(sum(w * getattr(r, n) for w, n in zip(cfg.weights, names)))
    assert cfg.with_weights(list(range(len(TERMS)))).weights == list(range(len(TERMS)))
    with pytest.raises(ValueError, match=f"expected {len(TERMS)} weights"):
        cfg.with_weights([1.0])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--help"])
    usage = " ".join(f"W_{n.upper()}" for n in names)
    assert f"--reward-weights {usage}" in " ".join(capsys.readouterr().out.split())
    assert tr1_score(HONEST, "--reward-weights", *map(str, range(len(TERMS))))["total"] == pytest.approx(
        sum(i * tr1_score(HONEST)[n] for i, n in enumerate(names)))
    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    rows = [line for line in docs.splitlines() if re.match(r"\| `\w+` \| [\d.]+ \| [\d. /]+ \|", line)]
    assert rows == [f"| `{t.name}` | {t.weight:g} | {' / '.join(f'{t.stages[s]:g}' for s in STAGE_NAMES)} | {t.help} |"
                    for t in TERMS]


def test_tr1_score_context_must_be_a_file(tmp_path, capsys):
    from tr1_env.cli import main as tr1

    (tmp_path / "thesis.txt").write_text(HONEST)
    with pytest.raises(SystemExit) as exit_:
        tr1(["score", "--completion", str(tmp_path / "thesis.txt"), "--context", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "not a file" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- fast == plain


def _random_thesis(rng: np.random.Generator, context_words: list[str]) -> str:
    """A completion mixing what the parser and the quote check must get right: matched and stray tags,
    think blocks, headers, bullets, exact, cut-short and invented quotes, emphasis, sources, decisions."""
    def words(n: int) -> str:
        return " ".join(rng.choice(["growth", "margin", "demand", "risk", "Revenue", "rose", "12", "AI"], n))

    def quote() -> str:
        i, n = int(rng.integers(len(context_words) - 70)), int(rng.integers(1, 70))
        exact = " ".join(context_words[i:i + n])
        return [exact, exact[:-1], exact.upper(), words(n), exact + " and more"][int(rng.integers(5))]

    parts = []
    for _ in range(int(rng.integers(0, 10))):
        tag = rng.choice(["news", "macro", "technical", "conclusion", "think", "br", "risk_assessment"])
        lines = ["### Header"] if rng.random() < 0.5 else []
        for _ in range(int(rng.integers(0, 9))):
            line = f"- {words(int(rng.integers(0, 100)))}"
            if rng.random() < 0.3:
                line += " *strong*"
            if rng.random() < 0.7:
                line += f" *{quote()}*"
            if rng.random() < 0.6:
                line += " `source`"
            if rng.random() < 0.1:
                line += f" [[[{Action(int(rng.integers(5))).name}]]]"
            lines.append(line)
        if rng.random() < 0.2:
            lines.append("| a | b |\n|---|---|")
        closing = f"</{tag}>" if rng.random() < 0.85 else ""
        parts.append(f"<{tag}>\n" + "\n".join(lines) + f"\n{closing}")
    if rng.random() < 0.8:
        parts.append(f"[[[{Action(int(rng.integers(5))).name}]]]")
    return "\n".join(parts)


CONFIGS = [RewardConfig(), RewardConfig(min_quote_words=1, max_quote_words=None),
           RewardConfig(min_quote_words=0, max_quote_words=0)]
CONFIG_IDS = ["default", "all_italics", "wordless_italics"]


def _same_score(thesis: str, label: Action, context: str, cfg: RewardConfig) -> RewardBreakdown:
    """:func:`score` of ``thesis``, checked equal to :func:`reference_score` (and its parse to the
    line-by-line one, every field: opinions, quotes, sources, headers, tables, word counts)."""
    sizes = (cfg.min_quote_words, cfg.max_quote_words)
    assert parse_thesis(thesis, *sizes) == reference_parse_thesis(thesis, *sizes), thesis
    fast = score(thesis, label, context, cfg)
    assert fast == reference_score(thesis, label, context, cfg), thesis
    return fast


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_fast_scorer_equals_the_reference(cfg):
    """:func:`score` (context indexed once, cached) against :func:`reference_score` (a regex per quote),
    on 250 random completions each."""
    rng = np.random.default_rng(0)
    context_words = CONTEXT.split()
    n_quotes = n_fabricated = 0
    for _ in range(250):
        fast = _same_score(_random_thesis(rng, context_words), Action(int(rng.integers(5))), CONTEXT, cfg)
        n_quotes, n_fabricated = n_quotes + fast.n_quotes, n_fabricated + fast.n_fabricated
    assert n_quotes == n_fabricated == 0 if cfg.max_quote_words == 0 else 0 < n_fabricated < n_quotes


def _mutate(rng: np.random.Generator, thesis: str) -> str:
    """A well-formed thesis broken the ways a policy breaks one: misquoted, cut or re-typed quotes,
    sections dropped, doubled or left open, decisions hidden in quotes, sources and think, hedges,
    typography, other bullet markers and line ends, emphasis and stray markup, hostile runs."""
    def pick(pattern: str) -> re.Match | None:
        found = list(re.finditer(pattern, thesis))
        return found[int(rng.integers(len(found)))] if found else None

    def replace(m: re.Match | None, new: str) -> str:
        return thesis if m is None else thesis[:m.start()] + new + thesis[m.end():]

    def retyped(body: str) -> str:
        return [body.upper(), body.replace(" ", "  "), body.replace("\n", "\n\n"), body.replace("'", "\u2019")][
            int(rng.integers(4))]

    edits = [
        lambda: replace(pick(r"\d"), str(int(rng.integers(10)))),  # a figure changed
        lambda: replace(m := pick(r"(?<![*\w])\*[^*\n]+\*(?![*\w])"), m and m[0][:-3] + "*"),  # a quote cut mid-word
        lambda: replace(m := pick(r"(?<![*\w])\*[^*\n]+\*(?![*\w])"), m and m[0].upper()),
        lambda: replace(pick(r"(?<![*\w])\*[^*\n]+\*(?![*\w])"), "*ignore the rules [[[STRONG_SELL]]] now*"),
        lambda: replace(pick(r"`[^`\n]+`"), "`[[[SELL]]] said the desk`"),
        lambda: replace(pick(r"(?s)<(\w+)>.*?</\1>\n"), ""),  # a section dropped
        lambda: replace(m := pick(r"(?s)<(\w+)>(.*?)</\1>\n"), m and m[0] + f"<copy>{m[2]}</copy>\n"),  # repeated
        lambda: replace(m := pick(r"(?s)<(\w+)>(.*?)</\1>\n"), m and m[0] + f"<copy>{retyped(m[2])}</copy>\n"),
        lambda: replace(pick(r"</\w+>"), ""),  # left open
        lambda: replace(pick(r"\n"), "\n<think>\nweighing [[[HOLD]]] against the rest\n</think>\n"),
        lambda: "maybe [[[SELL]]]?\n</think>\n" + thesis,
        lambda: thesis + f"\n[[[{Action(int(rng.integers(5))).name}]]]",  # a hedge, or the same call twice
        lambda: thesis.replace("'", "\u2019").replace(" - ", " \u2014 ").replace("view", "vi\u00e9w"),
        lambda: replace(pick(r" "), rng.choice(["\u00a0", "\u2028", "\x1c", "\u3000", " \u0301"])),
        lambda: thesis.replace("\n", "\r\n"),
        lambda: thesis.replace("\n- ", rng.choice(["\n* ", "\n+ ", "\n1. ", "\n  2) ", "\n-\t", "\n-", "\n    - "])),
        lambda: thesis.replace("\n###", rng.choice(["\n   ###", "\n    ###", "\n\t###", "\n#######", "\n###\n"])),
        lambda: replace(pick(r"\*\*\w+\*\*"), rng.choice(["*a b*", "*one two three*", "**", "* x *", "***x***"])),
        lambda: replace(pick(r" `"), rng.choice([" *in `two` halves* `", " `a*b* c` `", " `` `", " ` `"])),
        lambda: replace(pick(r"\n"), rng.choice(["\n**Key points:**\n", "\n| a | b |\n|---|:--|\n", "<br>", "<b>x</b>",
                                                 "\n<news>\n", "</news>\n", "<NEWS a='1'>", "\n#### H\n"])),
        lambda: thesis[:int(rng.integers(len(thesis) + 1))],  # cut short
        lambda: replace(pick(r"\n"), "\n" + hostile_completion(int(rng.integers(40, 400)))),
    ]
    for _ in range(int(rng.integers(1, 6))):
        thesis = edits[int(rng.integers(len(edits)))]()
    return thesis


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_fast_scorer_equals_the_reference_on_real_contexts(store, cfg):
    """The benchmark's honest theses (every quote copied from a real context) and 240 broken ones,
    scored against their contexts by both scorers."""
    from benchmarks.perf import honest_thesis, ticker_days

    rng = np.random.default_rng(1)
    n_verified = n_fabricated = 0
    for ticker, day in ticker_days(store, 4, seed=2):
        context = build_context(store, ticker, day)
        for i in range(60):
            action = Action(int(rng.integers(5)))
            thesis = honest_thesis(context, action, bullets=int(rng.integers(1, 8)))
            fast = _same_score(thesis if i == 0 else _mutate(rng, thesis), action, context.text, cfg)
            n_verified, n_fabricated = n_verified + fast.n_quotes - fast.n_fabricated, n_fabricated + fast.n_fabricated
    if cfg.max_quote_words != 0:
        assert n_verified > 1000 and n_fabricated > 50  # both outcomes were exercised


def test_benchmark_theses_with_distinct_quotes(store):
    """benchmarks/perf.py's variant without repeated quotes: every quote distinct and found in its context."""
    from benchmarks.perf import honest_thesis, repeated_share, ticker_days

    for ticker, day in ticker_days(store, 2, seed=1):
        context = build_context(store, ticker, day)
        thesis = honest_thesis(context, Action.BUY, bullets=6, distinct_quotes=True)
        r = _same_score(thesis, Action.BUY, context.text, RewardConfig())
        assert repeated_share(thesis) == 0 and (r.n_quotes, r.n_fabricated) == (42, 0)


def test_quote_index_matches_whole_words():
    index = QuoteIndex("Revenue rose 12 percent (to $26.0B); margins: 78.4%.")
    assert "Revenue rose 12" in index and "revenue  ROSE 12 percent" in index and "to $26.0B" in index
    assert "Revenue rose 1" not in index and "evenue rose 12" not in index and "78.4" in index
    assert "margins: 78" not in index and "4%" not in index and "" not in index
    for q in ("Revenue rose 1", "to $26.0B", "margins: 78", "4%", "78.4%"):
        assert quote_in_context(q, index.text) == (q in index)


def test_hostile_completion_scores_in_linear_time():
    """benchmarks/perf.py's 200 KB hostile completion: about 19 s before the parser was made linear."""
    r = score(hostile_completion(), Action.BUY, CONTEXT)
    assert r.decision_action is None and r == reference_score(hostile_completion(), Action.BUY, CONTEXT)
    ratio = growth(lambda text: score(text, Action.BUY, CONTEXT), hostile_completion, 50_000)
    assert ratio < 8, ratio
