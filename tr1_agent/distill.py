"""Reverse reasoning distillation: SFT theses built backwards from the known answer.

(a) A teacher reads the ticker-day context and recommends an action; the day is kept only when
    that agrees with the label (rejection sampling: exact action or same direction).
(b) A planner, given the context and the label, lists a supporting perspective per section.
(c) A cheap writer turns each perspective into one opinion per piece of evidence, reading only
    its own modality's data.
(d) Code stitches the thesis in the exact format the rewards read. Quotes are chosen in code
    from the context's own lines, never taken from a model, so none can be fabricated; each
    stitched thesis is then scored and dropped unless it passes.

All calls go through :class:`tr1_agent.llm_agents.OpenAIChatAgent`: concurrent (AsyncOpenAI,
bounded), retried, and cached on disk as each finishes, so a crash or a rerun repeats no call.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset

from tr1_agent.configs import DistillConfig
from tr1_agent.datasets import save, with_completions
from tr1_agent.llm_agents import OpenAIChatAgent
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import TERMS, RewardConfig, score
from tr1_env.scoring.thesis import count_words, parse_thesis
from tr1_env.util.files import cache_root

__all__ = ["ROLES", "SECTIONS", "Evidence", "accepts", "distill", "evidence", "parse_action", "template_thesis"]

ROLES = ("teacher", "planner", "writer")

#: Thesis sections, in writing order, with the modalities their quotes come from.
SECTIONS: dict[str, tuple[str, ...]] = {
    "technical": ("market",),
    "news": ("news",),
    "fundamentals": ("fundamentals",),
    "balance_sheet": ("fundamentals",),
    "valuation": ("fundamentals", "market"),
    "analyst_coverage": ("sentiment",),
    "macro": ("macro",),
    "risk_assessment": ("market", "news", "sentiment", "macro", "fundamentals"),
}
_TITLES = {"technical": "Technical picture", "news": "News flow", "fundamentals": "Fundamentals",
           "balance_sheet": "Balance sheet", "valuation": "Valuation", "analyst_coverage": "Analyst coverage",
           "macro": "Macro backdrop", "risk_assessment": "Risk assessment", "conclusion": "Conclusion"}
_SOURCES = {"market": "market data", "news": "news", "fundamentals": "fundamentals",
            "sentiment": "insider and analyst sentiment", "macro": "macro"}
#: Evidence containing one of these goes first into the section (several sections share a modality).
_KEYWORDS = {"fundamentals": ("revenue", "income", "profit", "margin", "cash flow"),
             "balance_sheet": ("balance sheet", "assets", "debt", "cash and", "equity"),
             "valuation": ("eps", "earnings", "estimate", "sma", "last close"),
             "risk_assessment": ("risk", "sell", "sale", "decline", "fell", "drop", "vix", "inflation", "yield")}
_STANCE = {Action.STRONG_SELL: "strongly bearish", Action.SELL: "bearish", Action.HOLD: "neutral",
           Action.BUY: "bullish", Action.STRONG_BUY: "strongly bullish"}

TEACHER_PROMPT = (
    "You are a senior portfolio manager. Read the market context of one stock and recommend one action for the "
    "next week. Start your answer with the action in triple brackets, one of [[[STRONG_SELL]]], [[[SELL]]], "
    "[[[HOLD]]], [[[BUY]]], [[[STRONG_BUY]]], then justify it in two sentences."
)
PLANNER_PROMPT = (
    "You are an equity research lead. Given the market context of one stock and the action already decided, list "
    "the perspectives that support that action: one line per section, written as `section: one-sentence "
    "perspective`, using only the section names you are given."
)
WRITER_PROMPT = (
    "You are an equity analyst writing one section of an investment thesis. For each numbered piece of evidence, "
    "write one numbered sentence of 20 to 60 words that explains what it means for the stock and how it supports "
    "the perspective. Do not repeat the evidence word for word and do not use markdown."
)

_ACTION_WORDS = re.compile(r"\b(strong[\s_-]*buy|strong[\s_-]*sell|buy|sell|hold)\b", re.IGNORECASE)
_PLAN_LINE = re.compile(r"^[\s\-*#\d.)]*<?([a-z][a-z _]*?)>?\s*[:\-\u2013\u2014]+\s*(\S.*)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):\-]\s*(\S.*)$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_UNSAFE = re.compile(r"[*`<>\[\]|#]")  # markup that would make model text look like quotes, sources or tags
_UNSAFE_QUOTE = re.compile(r"[*`<>]|\[\[\[")


@dataclass(frozen=True)
class Evidence:
    """A verbatim piece of the context and the source it is cited as."""

    quote: str
    source: str


@dataclass
class _Day:
    """One row's way through the pipeline."""

    row: dict
    label: Action
    bodies: dict[str, str]  # modality -> its text in the context
    pool: dict[str, list[Evidence]]  # modality with data -> its quotable evidence
    teacher: Action | None = None
    status: str = "pending"
    outline: list[tuple[str, str, list[Evidence]]] = field(default_factory=list)  # (tag, perspective, evidence)
    opinions: dict[str, list[str | None]] = field(default_factory=dict)
    thesis: str | None = None


def parse_action(text: str) -> Action | None:
    """The teacher's action, read leniently: its ``[[[ACTION]]]`` if it wrote one, else the first action it names."""
    decision = parse_thesis(text).decision
    if decision is not None:
        return decision
    named = [Action.parse(m.group(1)) for m in _ACTION_WORDS.finditer(text)]
    return named[0] if named else None


def accepts(mode: str, predicted: Action | None, label: Action) -> bool:
    """Rejection sampling: ``exact`` action, same ``direction``, or ``any`` answer at all."""
    if mode == "any":
        return True
    if predicted is None:
        return False
    return predicted == label if mode == "exact" else predicted.direction == label.direction


def evidence(modality: str, body: str) -> list[Evidence]:
    """Quotable pieces of one modality's text: sentences (or clauses) of 3 to 40 words and the leading cells
    of table rows.

    Each is a verbatim substring of ``body`` free of markup, so it parses as one quote and passes
    the reward's fabrication check.
    """
    out: list[Evidence] = []
    for line in body.split("\n"):
        line = line.strip()
        date = _DATE.search(line)
        source = _SOURCES[modality] + (f" {date.group(1)}" if date else "")
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            pieces = [" | ".join(cells[:5])] if date and line.lstrip("| ").startswith(date.group(1)) else []
        elif line.startswith("#"):
            continue
        else:
            pieces = re.split(r"(?<=[.!?;])\s+", line.lstrip("-").strip())
        for piece in pieces:
            piece = piece.strip().rstrip(";,")
            if (3 <= count_words(piece) <= 40 and not _UNSAFE_QUOTE.search(piece) and "[truncated]" not in piece
                    and piece in body):
                out.append(Evidence(piece, source))
    return list(dict.fromkeys(out))


def _clean(text: str) -> str:
    return " ".join(_UNSAFE.sub(" ", text).split())


def _truncate(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def _day(row: dict) -> _Day:
    if "sections" not in row:
        raise ValueError("a distillation row needs the 'sections' column of tr1_agent.datasets.build_prompts")
    bodies = dict(zip(row["modalities"], row["sections"], strict=True))
    present = [m for m in row["modalities"] if m not in row["missing"]]
    pool = {m: found for m in present if (found := evidence(m, bodies[m]))}
    return _Day(row=row, label=Action[row["label"]], bodies=bodies, pool=pool)


def _tags(day: _Day) -> list[str]:
    """Sections this row has evidence for."""
    return [tag for tag, sources in SECTIONS.items() if any(m in day.pool for m in sources)]


def _outline(day: _Day, plan: str, cfg: DistillConfig) -> list[tuple[str, str, list[Evidence]]]:
    """Sections (planner's order first), their perspectives, and evidence drawn without reuse across sections."""
    tags = _tags(day)
    perspectives: dict[str, str] = {}
    for line in plan.split("\n"):
        m = _PLAN_LINE.match(line)
        tag = m and m.group(1).strip().lower().replace(" ", "_")
        if tag in tags and tag not in perspectives and count_words(_clean(m.group(2))) >= 4:
            perspectives[tag] = _truncate(_clean(m.group(2)), 40)
    ordered = list(perspectives) + [t for t in tags if t not in perspectives]
    rng = np.random.default_rng([cfg.seed, zlib.crc32(day.row["ticker"].encode()),
                                 pd.Timestamp(day.row["date"]).toordinal(), day.row["variant"]])
    used: set[Evidence] = set()
    outline = []
    for tag in ordered[: cfg.max_sections]:
        candidates = [e for m in SECTIONS[tag] for e in day.pool.get(m, []) if e not in used]
        if len(candidates) < 2:
            continue
        off_topic = [not any(k in e.quote.lower() for k in _KEYWORDS.get(tag, ())) for e in candidates]
        order = sorted(rng.permutation(len(candidates)), key=lambda i: off_topic[i])[: cfg.bullets]
        picked = [candidates[i] for i in sorted(order)]
        used.update(picked)
        default = f"The {_TITLES[tag].lower()} of {day.row['ticker']} supports a {_STANCE[day.label]} view."
        outline.append((tag, perspectives.get(tag, default), picked))
    return outline


def _numbered(text: str, n: int) -> list[str | None]:
    """The writer's ``n`` answers: its numbered lines, or else its sentences in order."""
    numbered = dict(m.groups() for m in map(_NUMBERED.match, text.split("\n")) if m)
    if numbered:
        return [numbered.get(str(i)) for i in range(1, n + 1)]
    sentences = [s for s in _SENTENCE.split(" ".join(text.split())) if s]
    return (sentences + [None] * n)[:n]


def _opinion(text: str | None, perspective: str, tag: str, day: _Day) -> str:
    """The writer's sentence, made safe and 15 to 90 words long (topped up from the plan when too short)."""
    opinion = _truncate(_clean(text or ""), 80)
    if count_words(opinion) < 15:
        opinion = f"{perspective} {opinion}".strip()
    if count_words(opinion) < 15:
        opinion += (f" This {_TITLES[tag].lower()} evidence supports a {_STANCE[day.label]} stance on "
                    f"{day.row['ticker']} for the coming week.")
    return _truncate(opinion, 90)


def _stitch(day: _Day, think: bool) -> str:
    """The thesis in the rewards' format: the plan in ``<think>`` (optional), XML sections with a header,
    **bold**, cited claims, a table in the conclusion, and the decision in triple brackets."""
    action = day.label.name
    plan = "\n".join(f"- {tag}: {perspective}" for tag, perspective, _ in day.outline)
    parts = [f"<think>\nThe evidence points to {action}. Perspectives:\n{plan}\n</think>"] if think else []
    for tag, perspective, found in day.outline:
        bullets = [f"- {_opinion(o, perspective, tag, day)} *{e.quote}* `{e.source}`"
                   for o, e in zip(day.opinions[tag], found)]
        parts.append(f"<{tag}>\n### {_TITLES[tag]}: **{_STANCE[day.label]}**\n" + "\n".join(bullets) + f"\n</{tag}>")
    firsts = [(tag, perspective, f[k]) for k in range(max(len(f) for _, _, f in day.outline))
              for tag, perspective, f in day.outline if k < len(f)][: max(4, len(day.outline))]
    summary = [f"- Taken together, the {_TITLES[tag].lower()} argues for {action}: "
               f"{_opinion(None, perspective, tag, day)} *{e.quote}* `{e.source}`" for tag, perspective, e in firsts]
    table = ["| Section | Claims | Stance |", "|---|---|---|"]
    table += [f"| {_TITLES[tag]} | {len(found)} | {_STANCE[day.label]} |" for tag, _, found in day.outline]
    parts.append(f"<conclusion>\n### Conclusion: **{action}**\n" + "\n".join(summary + [""] + table)
                 + "\n</conclusion>")
    return "\n\n".join(parts) + f"\n\n[[[{action}]]]"


def template_thesis(row: dict, cfg: DistillConfig = DistillConfig()) -> str | None:
    """The stitched thesis for ``row``'s label with steps (a)-(c) skipped: default perspectives and
    template opinions around real quotes. No API needed; None when the row has no quotable data.

    Format-perfect but formulaic: a cheap warm start or test fixture, not a substitute for distillation.
    """
    day = _day(row)
    day.outline = _outline(day, "", cfg)
    day.opinions = {tag: [None] * len(found) for tag, _, found in day.outline}
    return _stitch(day, cfg.think) if day.outline else None


class _Ledger:
    """Tokens and USD per role: all calls (what the dataset cost) and this run's calls (what was paid now)."""

    def __init__(self, cfg: DistillConfig):
        self.prices = {r: (getattr(cfg, f"{r}_input_price"), getattr(cfg, f"{r}_output_price")) for r in ROLES}
        self.counts = {r: Counter() for r in ROLES}

    def add(self, role: str, meta: dict) -> None:
        c = self.counts[role]
        fresh = not meta.get("cached")
        prompt, completion = meta.get("prompt_tokens") or 0, meta.get("completion_tokens") or 0
        c.update(calls=1, new_calls=fresh, errors="error" in meta, prompt_tokens=prompt,
                 completion_tokens=completion, new_prompt_tokens=prompt * fresh,
                 new_completion_tokens=completion * fresh)

    def report(self) -> dict:
        out = {}
        for role, c in self.counts.items():
            pin, pout = self.prices[role]
            out[role] = {**c, "cost_usd": (c["prompt_tokens"] * pin + c["completion_tokens"] * pout) / 1e6,
                         "new_cost_usd": (c["new_prompt_tokens"] * pin + c["new_completion_tokens"] * pout) / 1e6}
        out["total_cost_usd"] = sum(out[r]["cost_usd"] for r in ROLES)
        out["new_cost_usd"] = sum(out[r]["new_cost_usd"] for r in ROLES)
        return out


class _Caller:
    """One cached, concurrent OpenAI-compatible agent per role (the role's instructions are its system prompt)."""

    def __init__(self, cfg: DistillConfig):
        cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "distill"
        prompts = {"teacher": TEACHER_PROMPT, "planner": PLANNER_PROMPT, "writer": WRITER_PROMPT}
        self.agents = {r: OpenAIChatAgent(
            model=getattr(cfg, f"{r}_model"), base_url=getattr(cfg, f"{r}_base_url") or cfg.base_url,
            api_key_env=cfg.api_key_env, temperature=cfg.temperature, max_tokens=getattr(cfg, f"{r}_max_tokens"),
            concurrency=cfg.concurrency, max_retries=cfg.max_retries, timeout=cfg.timeout, seed=cfg.seed,
            system_prompt=prompts[r], cache_dir=cache) for r in ROLES}
        self.ledger = _Ledger(cfg)

    def __call__(self, role: str, requests: list[str]) -> list[str | None]:
        """The answers to the user messages ``requests``, None where the call failed."""
        agent = self.agents[role]
        answers = []
        for completion in agent.complete([agent.messages(user) for user in requests]):
            self.ledger.add(role, completion)
            answers.append(None if "error" in completion else completion["text"])
        return answers

    @property
    def http_requests(self) -> int:
        return sum(a.requests for a in self.agents.values())


def _header(day: _Day) -> str:
    return f"Ticker: {day.row['ticker']}. Date: {day.row['date']}."


def distill(rows: Dataset, cfg: DistillConfig) -> tuple[Dataset, dict]:
    """SFT rows (``rows`` plus ``completion`` and ``teacher_action``) for the days that pass, and the report.

    Writes ``<output_dir>/sft`` (Arrow), ``<output_dir>/sft.jsonl`` and ``<output_dir>/report.json``.
    """
    call = _Caller(cfg)
    days = [_day(row) for row in rows]

    answers = call("teacher", [f"{_header(d)}\n\n{d.row['context']}" for d in days])
    for d, answer in zip(days, answers):
        d.teacher = None if answer is None else parse_action(answer)
        if answer is None:
            d.status = "teacher_error"
        elif not accepts(cfg.accept, d.teacher, d.label):
            d.status = "teacher_unparsed" if d.teacher is None else "teacher_mismatch"
        elif not _tags(d):
            d.status = "no_evidence"
    todo = [d for d in days if d.status == "pending"]

    plans = call("planner", [(f"{_header(d)} Decided action: {d.label.name}.\nSection names: "
                              f"{', '.join(_tags(d))}.\n\n{d.row['context']}") for d in todo])
    for d, plan in zip(todo, plans):
        d.outline = _outline(d, plan or "", cfg)

    jobs = [(d, tag, perspective, found) for d in todo for tag, perspective, found in d.outline]
    requests = [f"{_header(d)} Action: {d.label.name}.\nSection: {_TITLES[tag]}.\nPerspective: {perspective}"
                "\n\nData:\n" + "\n\n".join(d.bodies[m] for m in SECTIONS[tag] if m in d.pool)[:3000]
                + "\n\nEvidence:\n" + "\n".join(f"{i}. {e.quote}" for i, e in enumerate(found, 1))
                for d, tag, perspective, found in jobs]
    for (d, tag, _, found), text in zip(jobs, call("writer", requests)):
        d.opinions[tag] = _numbered(text or "", len(found))

    reward_cfg, rewards = RewardConfig(), []
    for d in todo:
        if not d.outline:
            d.status = "no_evidence"
            continue
        thesis = _stitch(d, cfg.think)
        r = score(thesis, d.label, d.row["context"], reward_cfg)
        ok = (r.n_fabricated == 0 and r.decision_action == d.label and r.structure >= cfg.min_structure
              and r.evidence >= cfg.min_evidence)
        d.status, d.thesis = ("kept", thesis) if ok else ("verify_failed", None)
        if ok:
            rewards.append(r)

    kept = [i for i, d in enumerate(days) if d.status == "kept"]
    sft = with_completions(rows.select(kept), [days[i].thesis for i in kept])
    sft = sft.add_column("teacher_action", [days[i].teacher.name if days[i].teacher else None for i in kept])
    report = _report(days, rewards, call, cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save(sft, out / "sft")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return sft, report


def _report(days: list[_Day], rewards: list, call: _Caller, cfg: DistillConfig) -> dict:
    by_label: dict[str, Counter] = defaultdict(Counter)
    confusion: dict[str, Counter] = defaultdict(Counter)
    for d in days:
        passed = d.status not in ("teacher_error", "teacher_unparsed", "teacher_mismatch")
        by_label[d.label.name].update(rows=1, teacher_accepted=passed, kept=d.status == "kept")
        confusion[d.label.name][d.teacher.name if d.teacher else "unparsed"] += 1
    for c in by_label.values():
        c["acceptance_rate"] = c["teacher_accepted"] / c["rows"]
        c["keep_rate"] = c["kept"] / c["rows"]
    mean = {t.name: float(np.mean([getattr(r, t.name) for r in rewards])) if rewards else None for t in TERMS}
    return {
        "rows": len(days),
        "kept": sum(d.status == "kept" for d in days),
        "status": dict(Counter(d.status for d in days)),
        "by_label": {k: dict(v) for k, v in sorted(by_label.items())},
        "teacher_confusion": {k: dict(v) for k, v in sorted(confusion.items())},
        "mean_reward_kept": mean,
        "usage": call.ledger.report(),
        "http_requests": call.http_requests,
        "config": asdict(cfg),
    }
