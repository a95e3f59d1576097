"""The three Trading-R1 rewards (the paper's appendix S4) and their guards.

``R = w_structure * R_structure + w_evidence * R_evidence + w_decision * R_decision``, one weighted
term per row of :data:`TERMS`: the scorer, GRPO's reward functions, the CLIs' weight flags and the docs
all read that table, so a new term is a function, a row, its ``w_`` weight field and its breakdown field.

The formulas and their constants are the paper's; everything the paper leaves
open, and every guard against reward hacking we add, is a :class:`RewardConfig`
setting:

- a section whose normalised body repeats an earlier one is the same section
  written twice: it counts once, so repetition can never raise a reward;
- R_count, R_sec and R_evidence run over the analysis sections (every section
  but ``conclusion``; ``think`` is never a section), the conclusion being
  required through ``missing_conclusion_factor``;
- italics shorter than ``min_quote_words`` are emphasis and longer than
  ``max_quote_words`` are pasted context, not quotes (the parser applies both);
- given the context, a quote that is not in it on whole words (after
  :func:`~tr1_env.scoring.thesis.normalize_text`) is fabricated: it earns nothing and
  ``fabricated_penalty`` is taken off the evidence reward;
- several different ``[[[ACTION]]]`` are a hedge and score ``invalid_decision``
  (see :func:`tr1_env.scoring.thesis.parse_thesis`);
- past ``max_chars`` the structure and evidence rewards fade linearly to 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, reduce
from operator import add

from tr1_env.core.actions import Action
from tr1_env.scoring.thesis import (
    Section,
    Thesis,
    count_words_each,
    normalize_text,
    parse_thesis,
    reference_parse_thesis,
    visible_size,
)

__all__ = [
    "DECISION_MATRIX",
    "STAGES",
    "STAGE_WEIGHTS",
    "TERMS",
    "WEIGHT_FIELDS",
    "EvidenceResult",
    "Parsed",
    "QuoteIndex",
    "RewardBreakdown",
    "RewardConfig",
    "Term",
    "bullet_count_reward",
    "bullet_reward",
    "count_reward",
    "decision_reward",
    "decision_term",
    "distinct_sections",
    "evidence_reward",
    "evidence_term",
    "harmonic_mean",
    "length_multiplier",
    "opinion_reward",
    "quote_in_context",
    "reference_score",
    "score",
    "section_format_reward",
    "structure_reward",
    "structure_term",
]

#: ``DECISION_MATRIX[predicted][true]`` as printed in the paper (order SS, S, H, B, SB).
DECISION_MATRIX: tuple[tuple[float, ...], ...] = (
    (1.00, 0.75, -1.25, -2.00, -2.25),
    (0.75, 1.00, -0.75, -1.50, -2.00),
    (-1.50, -1.00, 1.00, -1.00, -1.50),
    (-1.75, -1.25, -0.75, 1.00, 0.75),
    (-2.00, -1.50, -1.25, 0.75, 1.00),
)

#: The curriculum's stages, easy to hard; each :class:`Term` gives its weight in each.
STAGES: tuple[str, ...] = ("structure", "claims", "decision")

_MIN_SECTION_WORDS = 50
_SECTION_FLOOR = 0.01
_CORNERS = frozenset({Action.STRONG_SELL, Action.STRONG_BUY})


@dataclass(frozen=True)
class Parsed:
    """One completion read once, all that a term scores: the thesis, its distinct sections, the quote
    bookkeeping behind R_evidence, the length multiplier and the true call (None: unlabelled)."""

    thesis: Thesis
    sections: tuple[Section, ...]
    claims: EvidenceResult
    length_multiplier: float
    label: Action | None


def structure_term(parsed: Parsed, cfg: RewardConfig) -> float:
    """R_structure of the distinct sections, faded by the length multiplier."""
    return parsed.length_multiplier * _structure(parsed.sections, cfg)


def evidence_term(parsed: Parsed, cfg: RewardConfig) -> float:
    """R_evidence (quotes checked when a context is given), faded by the length multiplier."""
    return parsed.length_multiplier * parsed.claims.reward


def decision_term(parsed: Parsed, cfg: RewardConfig) -> float:
    """R_decision against the label; 0 without one."""
    return 0.0 if parsed.label is None else decision_reward(parsed.thesis.decision, parsed.label, cfg)


@dataclass(frozen=True)
class Term:
    """One reward term: ``function(parsed, cfg)``, its default weight, its weight in each curriculum stage
    (:data:`STAGES`) and what it rewards. ``RewardConfig.w_<name>`` holds its weight and
    ``RewardBreakdown.<name>`` its value; trl logs it as ``rewards/<name>/mean``."""

    name: str
    function: Callable[[Parsed, RewardConfig], float]
    weight: float
    stages: dict[str, float]
    help: str


#: The reward terms, in the order of every weight list (``--reward-weights``, trl's ``reward_weights``). The paper
#: only says each curriculum stage emphasises one term and gives no numbers: the stage weights are ours.
TERMS: tuple[Term, ...] = (
    Term("structure", structure_term, 1.0, {"structure": 1.0, "claims": 0.3, "decision": 0.2},
         "R_structure: 5 to 7 analysis sections, each with a header, bullets, bold and a table"),
    Term("evidence", evidence_term, 1.0, {"structure": 0.0, "claims": 1.0, "decision": 0.3},
         "R_evidence, the claims reward: 4 to 7 claims per section, each an opinion with a quote found in the context "
         "and a source"),
    Term("decision", decision_term, 1.0, {"structure": 0.0, "claims": 0.0, "decision": 1.0},
         "R_decision: the paper's matrix entry for the call against the label (invalid_decision without one call)"),
)

#: The :class:`RewardConfig` fields that weigh the terms, in :data:`TERMS` order (the rest are settings).
WEIGHT_FIELDS: tuple[str, ...] = tuple(f"w_{term.name}" for term in TERMS)

#: The weights of :data:`TERMS` per curriculum stage, from each term's ``stages``.
STAGE_WEIGHTS: dict[str, tuple[float, ...]] = {stage: tuple(t.stages[stage] for t in TERMS) for stage in STAGES}


def _weight(name: str):
    """The ``w_<name>`` field of :class:`RewardConfig`: the term's default weight and help."""
    term = next(t for t in TERMS if t.name == name)
    return field(default=term.weight, metadata={"help": f"Weight of {term.help} (non-negative)."})


@dataclass(frozen=True)
class RewardConfig:
    """The weight of each reward term (:data:`TERMS`) and the settings where the paper is silent."""

    w_structure: float = _weight("structure")
    w_evidence: float = _weight("evidence")
    w_decision: float = _weight("decision")
    missing_conclusion_factor: float = field(
        default=0.5,
        metadata={
            "help": "R_structure is multiplied by this when no `conclusion` section exists. The paper calls it "
            "mandatory without saying how it is enforced; 0 makes it a hard requirement."
        },
    )
    swap_strong_corners: bool = field(
        default=False,
        metadata={
            "help": "Swap M[SS,SB] and M[SB,SS] so that a strong buy when the truth is a strong sell costs -2.25, "
            "as the paper's text says, instead of the table as printed."
        },
    )
    invalid_decision: float = field(
        default=-1.5, metadata={"help": "R_decision when there is no decision or several different ones."}
    )
    min_quote_words: int = field(
        default=3, metadata={"help": "Italics with fewer words are emphasis, not quotes (1 counts every italic)."}
    )
    max_quote_words: int | None = field(
        default=60,
        metadata={"help": "Italics with more words are pasted context, not quotes; None disables the limit."},
    )
    fabricated_penalty: float = field(
        default=0.5,
        metadata={
            "help": "When the context is given, R_evidence loses this times the share of quotes not found in it "
            "(floored at 0)."
        },
    )
    max_chars: int | None = field(
        default=40_000,
        metadata={"help": "Completions longer than this get R_structure and R_evidence scaled down; None disables."},
    )
    overlong_zero_at: float = field(
        default=2.0,
        metadata={"help": "Multiple of max_chars at which that scale reaches 0, falling linearly from 1 at max_chars."},
    )

    def __post_init__(self) -> None:
        for name in (*WEIGHT_FIELDS, "fabricated_penalty", "min_quote_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0 <= self.missing_conclusion_factor <= 1:
            raise ValueError(f"missing_conclusion_factor must be in [0, 1], got {self.missing_conclusion_factor}")
        if self.max_quote_words is not None and self.max_quote_words < self.min_quote_words:
            raise ValueError(f"max_quote_words must be >= min_quote_words, got {self.max_quote_words}")
        if self.max_chars is not None and self.max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")
        if self.overlong_zero_at <= 1:
            raise ValueError(f"overlong_zero_at must be > 1, got {self.overlong_zero_at}")

    @classmethod
    def for_stage(cls, name: str, **overrides) -> RewardConfig:
        """The weights of curriculum stage ``name`` (see :data:`STAGE_WEIGHTS`)."""
        return replace(cls().with_stage(name), **overrides)

    def with_stage(self, name: str, weights: dict[str, tuple[float, ...]] | None = None) -> RewardConfig:
        """These settings with the weights of stage ``name`` from ``weights`` (default :data:`STAGE_WEIGHTS`)."""
        weights = STAGE_WEIGHTS if weights is None else weights
        if name not in weights:
            raise ValueError(f"unknown stage {name!r}; expected one of {list(weights)}")
        return self.with_weights(weights[name])

    def with_weights(self, weights: tuple[float, ...] | list[float]) -> RewardConfig:
        """These settings with the terms weighted by ``weights``, one per :data:`TERMS` entry in its order."""
        if len(weights) != len(TERMS):
            raise ValueError(f"expected {len(TERMS)} weights ({', '.join(t.name for t in TERMS)}), got {len(weights)}")
        return replace(self, **dict(zip(WEIGHT_FIELDS, weights)))

    @property
    def weights(self) -> list[float]:
        """The terms' weights in :data:`TERMS` order (trl's ``reward_weights``)."""
        return [getattr(self, name) for name in WEIGHT_FIELDS]


_DEFAULTS = RewardConfig()  # frozen: shared by every call left without settings (building one takes 2 us)


@dataclass(frozen=True)
class EvidenceResult:
    """R_evidence with the quote bookkeeping behind it."""

    reward: float
    n_claims: int
    n_quotes: int
    n_fabricated: int
    n_verified: int


@dataclass(frozen=True)
class RewardBreakdown:
    """Every term of the total reward, as weighted into ``total``."""

    structure: float
    evidence: float
    decision: float
    total: float
    decision_action: Action | None
    n_fabricated: int
    n_quotes: int
    n_claims: int
    labelled: bool
    length_multiplier: float

    def to_dict(self) -> dict:
        """JSON-friendly: the action by name."""
        out = asdict(self)
        out["decision_action"] = None if self.decision_action is None else self.decision_action.name
        return out


def harmonic_mean(values: list[float]) -> float:
    """Harmonic mean, 0 for no values or any value <= 0 (its limit): the weakest item dominates."""
    if not values or min(values) <= 0:
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def count_reward(n_sections: int) -> float:
    """R_count: 5 to 7 sections is ideal."""
    if n_sections < 5:
        return max(0.3, 0.7 * n_sections / 5)
    if n_sections > 7:
        return max(0.3, 1 - 0.15 * (n_sections - 7))
    return 1.0


def section_format_reward(section: Section) -> float:
    """R_sec: header, bullets, bold and table; a section under 50 words scores 0.2."""
    if section.word_count < _MIN_SECTION_WORDS:
        return 0.2
    return 0.3 * section.header + 0.4 * bool(section.bullets) + 0.2 * section.has_bold + 0.1 * section.has_table


def distinct_sections(thesis: Thesis) -> tuple[Section, ...]:
    """Sections whose normalised body is new: a repeated body (any tag) counts once.

    Bodies are normalised only when their :func:`~tr1_env.scoring.thesis.visible_size` meets an earlier
    one's (equal normalised bodies have equal sizes): most sections are told apart without it.
    """
    seen: dict[int, Section | set[str]] = {}  # size -> its first section, or the keys of its sections
    out = []
    for section in thesis.sections:
        size = visible_size(section.body)
        keys = seen.setdefault(size, section)
        if keys is not section:
            if isinstance(keys, Section):
                keys = seen[size] = {normalize_text(keys.body)}
            key = normalize_text(section.body)
            if key in keys:
                continue
            keys.add(key)
        out.append(section)
    return tuple(out)


def _plain_distinct_sections(thesis: Thesis) -> tuple[Section, ...]:
    """:func:`distinct_sections` normalising every body."""
    seen: set[str] = set()
    out = []
    for section in thesis.sections:
        key = normalize_text(section.body)
        if key not in seen:
            seen.add(key)
            out.append(section)
    return tuple(out)


def structure_reward(thesis: Thesis, cfg: RewardConfig | None = None) -> float:
    """R_structure = 0.6 R_count + 0.4 mean(R_sec) over the analysis sections, times
    ``missing_conclusion_factor`` without a conclusion; 0 without any section."""
    return _structure(distinct_sections(thesis), cfg or _DEFAULTS)


def _structure(sections: tuple[Section, ...], cfg: RewardConfig) -> float:
    if not sections:
        return 0.0
    analysis = [s for s in sections if s.tag != "conclusion"]
    formats = [section_format_reward(s) for s in analysis]
    reward = 0.6 * count_reward(len(analysis)) + 0.4 * (sum(formats) / len(formats) if formats else 0.0)
    if len(analysis) == len(sections):
        reward *= cfg.missing_conclusion_factor
    return reward


def opinion_reward(n_words: int, cited: bool) -> float:
    """R_opinion: 15 to 90 words is ideal, and only a cited opinion (quote and source) can pass 0.3."""
    if not cited:
        return min(0.3, 0.3 * n_words / 15)
    if n_words < 15:
        return n_words / 15
    if n_words > 90:
        return max(0.5, 1 - 0.02 * (n_words - 90))
    return 1.0


def bullet_reward(n_opinion_words: int, has_quote: bool, has_source: bool) -> float:
    """R_bullet = 0.4 R_opinion + 0.35 [quote] + 0.25 [source]."""
    return 0.4 * opinion_reward(n_opinion_words, has_quote and has_source) + 0.35 * has_quote + 0.25 * has_source


def bullet_count_reward(n_bullets: int) -> float:
    """4 to 7 claims per section is ideal."""
    if n_bullets < 4:
        return n_bullets / 4
    if n_bullets > 7:
        return max(0.3, 1 - 0.1 * (n_bullets - 7))
    return 1.0


class QuoteIndex:
    """A context normalised once, answering whole-word quote lookups (SPEC 1.3).

    A quote is found when its normalised words occur in the normalised context and neither end
    cuts a word or a number: "revenue rose 1" is not in "revenue rose 12 percent", nor "margin 78"
    in "margin 78.4%". Build it once per context
    (:func:`quote_index` caches the last few) and look up every quote of every completion in it.
    """

    def __init__(self, context: str):
        self.text = normalize_text(context)

    def count(self, quotes: tuple[str, ...]) -> int:
        """How many of ``quotes`` are in the context."""
        text, n = self.text, 0
        for quote in quotes:
            needle = _strip_quote(quote)
            at = text.find(needle) if needle else -1
            while at >= 0 and _cuts(text, at, at + len(needle), needle):
                at = text.find(needle, at + 1)
            n += at >= 0
        return n

    def __contains__(self, quote: str) -> bool:
        return self.count((quote,)) == 1


def _cuts(text: str, start: int, end: int, needle: str) -> bool:
    """Whether ``text[start:end]`` (== ``needle``) starts or ends inside a word or a number."""
    first, last = needle[0], needle[-1]
    if first.isalnum() and start and (text[start - 1].isalnum() or (
            first.isdigit() and start > 1 and text[start - 1] in ".," and text[start - 2].isdigit())):
        return True
    return last.isalnum() and end < len(text) and (text[end].isalnum() or (
        last.isdigit() and end + 1 < len(text) and text[end] in ".," and text[end + 1].isdigit()))


@lru_cache(maxsize=64)
def quote_index(context: str) -> QuoteIndex:
    """The :class:`QuoteIndex` of ``context``, built once while it stays among the 64 last used."""
    return QuoteIndex(context)


def quote_in_context(quote: str, context: str) -> bool:
    """The plain definition :class:`QuoteIndex` implements: a regex on whole words, no caching."""
    needle = _strip_quote(quote)
    if not needle:
        return False
    head = ("(?<![^\\W_])" if needle[0].isalnum() else "") + ("(?<!\\d[.,])" if needle[0].isdigit() else "")
    tail = ("(?![^\\W_])" if needle[-1].isalnum() else "") + ("(?![.,]\\d)" if needle[-1].isdigit() else "")
    pattern = head + re.escape(needle) + tail
    return re.search(pattern, normalize_text(context)) is not None


def evidence_reward(thesis: Thesis, context: str | None = None, cfg: RewardConfig | None = None) -> EvidenceResult:
    """R_evidence: harmonic mean over the analysis sections of max(section score, 0.01), a section
    scoring 0.3 count + 0.7 harmonic mean of max(R_bullet, 0.01).

    With ``context`` each quote must appear in it (see :class:`QuoteIndex`); a fabricated one does
    not count as a quote and costs ``fabricated_penalty * share``. ``context=None`` is the paper's
    unchecked reward. The quote bookkeeping (and so the penalty) covers the conclusion too; the
    score does not, so a prose conclusion cannot zero it.
    """
    verified = None if context is None else quote_index(context).count
    return _evidence(distinct_sections(thesis), verified, cfg or _DEFAULTS)


def _evidence(sections: tuple[Section, ...], verified: Callable[[tuple[str, ...]], int] | None, cfg: RewardConfig
              ) -> EvidenceResult:
    """R_evidence over ``sections``, ``verified`` counting the quotes of a claim found in the context
    (None: unchecked). A claim's quotes are looked up once per call (a looping completion repeats them),
    and each harmonic mean is its count over a running sum of reciprocals."""
    n_claims = n_quotes = n_verified = 0
    section_scores, seen = [], {}
    opinion_words = iter(count_words_each([bullet.opinion for section in sections for bullet in section.bullets]))
    for section in sections:
        bullets, reciprocals = section.bullets, 0.0
        for _, _, quotes, sources in bullets:
            found = 0
            if quotes:
                n_quotes += len(quotes)
                if verified is None:
                    found = len(quotes)
                elif (found := seen.get(quotes)) is None:
                    found = seen[quotes] = verified(quotes)
                n_verified += found
            reciprocals += _bullet_reciprocal(next(opinion_words), found > 0, bool(sources))
        n_claims += len(bullets)
        if section.tag != "conclusion":
            section_score = (0.3 * bullet_count_reward(len(bullets))
                             + 0.7 * (len(bullets) / reciprocals if bullets else 0.0))
            section_scores.append(max(section_score, _SECTION_FLOOR))
    n_fabricated = 0 if verified is None else n_quotes - n_verified  # unchecked: none verified, none fabricated
    reward = max(0.0, harmonic_mean(section_scores) - cfg.fabricated_penalty * n_fabricated / max(1, n_quotes))
    return EvidenceResult(reward, n_claims, n_quotes, n_fabricated, 0 if verified is None else n_verified)


@lru_cache(maxsize=4096)
def _bullet_reciprocal(n_opinion_words: int, has_quote: bool, has_source: bool) -> float:
    """1 / max(R_bullet, 0.01), remembered: a few hundred distinct arguments cover nearly every claim."""
    return 1.0 / max(bullet_reward(n_opinion_words, has_quote, has_source), 0.01)


def decision_reward(pred: Action | None, label: Action, cfg: RewardConfig | None = None) -> float:
    """R_decision = M[pred, label]; ``invalid_decision`` when there is no single decision."""
    cfg = cfg or _DEFAULTS
    if pred is None:
        return cfg.invalid_decision
    if cfg.swap_strong_corners and {pred, label} == _CORNERS:
        pred, label = label, pred
    return DECISION_MATRIX[pred][label]


def length_multiplier(n_chars: int, cfg: RewardConfig | None = None) -> float:
    """1 up to ``max_chars``, then linear down to 0 at ``overlong_zero_at * max_chars``."""
    cfg = cfg or _DEFAULTS
    if cfg.max_chars is None or n_chars <= cfg.max_chars:
        return 1.0
    return max(0.0, 1 - (n_chars - cfg.max_chars) / ((cfg.overlong_zero_at - 1) * cfg.max_chars))


def score(
    completion: str, label: Action | None, context: str | None = None, cfg: RewardConfig | None = None
) -> RewardBreakdown:
    """Parse ``completion`` and weigh the three rewards. Without a label the decision term is 0."""
    cfg = cfg or _DEFAULTS
    thesis = parse_thesis(completion, cfg.min_quote_words, cfg.max_quote_words)
    return _score(thesis, distinct_sections(thesis), label, None if context is None else quote_index(context).count,
                  cfg)


def reference_score(
    completion: str, label: Action | None, context: str | None = None, cfg: RewardConfig | None = None
) -> RewardBreakdown:
    """:func:`score` read by :func:`~tr1_env.scoring.thesis.reference_parse_thesis` (line by line) with each
    quote looked up by :func:`quote_in_context` (a regex per quote on a context normalised per call):
    slow and plain, the definition the fast path is tested against."""
    cfg = cfg or _DEFAULTS
    thesis = reference_parse_thesis(completion, cfg.min_quote_words, cfg.max_quote_words)
    verified = None if context is None else (lambda quotes: sum(quote_in_context(q, context) for q in quotes))
    return _score(thesis, _plain_distinct_sections(thesis), label, verified, cfg)


def _score(thesis: Thesis, sections: tuple[Section, ...], label: Action | None,
           verified: Callable[[tuple[str, ...]], int] | None, cfg: RewardConfig) -> RewardBreakdown:
    parsed = Parsed(thesis, sections, _evidence(sections, verified, cfg), length_multiplier(thesis.raw_length, cfg),
                    label)
    terms = {term.name: term.function(parsed, cfg) for term in TERMS}
    # added left to right as written out (sum() of floats compensates on Python 3.12+ and would not be)
    total = reduce(add, (w * value for w, value in zip(cfg.weights, terms.values())))
    return RewardBreakdown(
        **terms,
        total=total,
        decision_action=thesis.decision,
        n_fabricated=parsed.claims.n_fabricated,
        n_quotes=parsed.claims.n_quotes,
        n_claims=parsed.claims.n_claims,
        labelled=label is not None,
        length_multiplier=parsed.length_multiplier,
    )


def _strip_quote(quote: str) -> str:
    """A quote may carry its own quotation marks or end mid-sentence: compare the words."""
    return normalize_text(quote).strip(" \"'.")
