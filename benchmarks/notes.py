"""A run's notes, said once: the sentences of summary.md and of the leaderboard page, built from one record.

Both reports state the same facts about a run (its windows, its execution, how often each kind of agent decides,
what the data lacked, what was skipped or failed); they are phrased here, each once, and each report picks the
sentences it needs, so a setting can never be described two ways. summary.md's cells are markdown-escaped; the
page's are escaped by its template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from benchmarks.config import BENCHMARK, RunConfig
from benchmarks.escaping import md_cell
from tr1_env.contamination.cutoffs import Cutoff
from tr1_env.evaluation.windows import Window


@dataclass(frozen=True)
class RunFacts:
    """What a run found besides its settings: its windows, the data's coverage, what did not run, the LLMs'
    cutoffs, and which kinds of agent it replayed."""

    protocol: list[Window]
    coverage: dict
    skipped: dict[str, str] = field(default_factory=dict)  # agent -> why it did not run
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # agent -> ticker -> error
    cutoffs: dict[str, Cutoff] = field(default_factory=dict)
    llm: bool = False  # an LLM row was asked for
    trained: bool = False  # an SB3 row was asked for
    synthetic: dict | None = None  # the generator's settings when the store is synthetic (Store.synthetic)

    def returns(self, cfg: RunConfig) -> str:
        return "total return (dividends at ex-date)" if cfg.total_return() else "price return (no dividends)"


def _no_news(facts: RunFacts) -> list[str]:
    return [t for t, c in facts.coverage.items() if c["headlines_in_window"] == 0]


def synthetic_note(s: dict | None) -> list[str]:
    """The first note of a run on a synthetic store (``s``: its ``Store.synthetic``): its results are about simulated
    prices, never markets."""
    return [f"SYNTHETIC DATA: the store was simulated by tr1 data synth ({s.get('tickers')} tickers, "
            f"{s.get('years'):g} years, seed {s.get('seed')}, planted IC {s.get('signal_ic')}); nothing here is a "
            "result on market data."] if s else []


def _cadence(cfg: RunConfig) -> str:
    agents = cfg.agents
    return (f"LLM agents decide every {agents.llm_decision_every} session(s) (context budget {agents.llm_max_chars} "
            f"characters), SmolLM2 on CPU every {agents.smollm2_decision_every} (labelled in its row)"
            + (f"; {agents.samples} samples per sampled LLM at temperature {agents.temperature:g}"
               if agents.samples > 1 else ""))


def _absent(facts: RunFacts, cell: Callable[[str], str]) -> list[str]:
    return [*[f"Skipped {cell(a)}: {cell(why)}" for a, why in facts.skipped.items()],
            *[f"Left out {cell(a)} on {cell(t)}: the replay failed ({cell(error)}); the next run retries it."
              for a, per in facts.failed.items() for t, error in per.items()]]


def page_notes(cfg: RunConfig, facts: RunFacts) -> list[str]:
    """The leaderboard page's notes: protocol, execution, training, tests, cadence, cutoffs, coverage, absences."""
    stats, protocol = cfg.statistics, facts.protocol
    no_news = _no_news(facts)
    return [
        *synthetic_note(facts.synthetic),
        f"{len(protocol)} window(s) from {protocol[0].start:%Y-%m-%d} to {protocol[-1].end:%Y-%m-%d}"
        + (f" ({cfg.window.walk_forward[0]})" if len(cfg.window.walk_forward) == 1 else "")
        + (". The first window starts flat (buy-and-hold too); books are continuous across windows: the position held "
           "into a boundary earns that session and the refitted agent trades from it" if len(protocol) > 1 else
           ". The window starts flat (buy-and-hold too): its first session's return belongs to no one")
        + "; the portfolio is the equal-weight mean of the per-ticker daily net returns, rebalanced daily.",
        f"Execution: {cfg.execution.describe()}; {facts.returns(cfg)}.",
        *([f"SB3 PPO/A2C retrained before every window on a rolling {cfg.agents.train_years:g}-year span ending the "
           f"day before it ({cfg.agents.sb3_steps} steps, "
           f"{'one policy over all tickers' if cfg.sb3_pooled() else 'one policy per ticker'}), paid in training "
           "with this execution."] if facts.trained else []),
        f"Tests on the daily portfolio returns: verdict from the studentized Sharpe difference to buy-and-hold in one "
        f"two-sided Romano-Wolf step-down at family-wise {stats.alpha:g}; Hansen's studentized SPA on the mean return "
        f"per agent (spa_p) and over all; model confidence set at {stats.alpha:g}; Sharpe CI "
        f"{round(100 * (1 - stats.alpha))}% percentile; arch stationary bootstrap, mean block {stats.block:g} days, "
        f"{max(stats.bootstrap, 100)} resamples, seed {cfg.seed}; deflated Sharpe for "
        f"{stats.trials or 'the number of agents'} trials.",
        *([f"{_cadence(cfg)}."] if facts.llm else []),
        *[f"{label}: training cutoff {'unknown' if c.date is None else format(c.date, '%Y-%m-%d')} ({c.basis})"
          for label, c in facts.cutoffs.items()],
        *([f"No company headlines in the span for {', '.join(no_news)}: news rules stay flat there."]
          if no_news else []),
        *_absent(facts, str),
    ]


def summary_notes(cfg: RunConfig, facts: RunFacts, summary: pd.DataFrame, extra: dict[str, str]) -> list[str]:
    """summary.md's notes: the metrics' definitions, execution, cadence, the CI and test, the LLMs' unreadable
    replies, coverage, absences, and ``extra`` (what else went wrong: tearsheets quantstats could not draw)."""
    stats, window = cfg.statistics, cfg.window
    span = (f"Replay {window.start} to {window.end}" if len(facts.protocol) == 1 else
            f"Walk-forward replay {window.start} to {window.end} over {len(facts.protocol)} windows (see windows.csv), "
            "books restarted flat per window and chained here")
    failures = summary.groupby("agent", sort=False)[["parse_failed", "forced", "n_decisions"]].sum()
    unreadable = [f"{md_cell(a)}: {int(f.parse_failed)} of {int(f.n_decisions)} decisions had no readable action; "
                  + (f"{int(f.forced)} of them were decided by the model's likeliest of the five closings, the rest "
                     "counted as HOLD." if f.forced else "counted as HOLD.")
                  for a, f in failures[failures["parse_failed"] > 0].iterrows()]
    no_news = _no_news(facts)
    missing = {t: m for t, c in facts.coverage.items() if (m := c["missing_modalities_on_first_day"])}
    notes = [
        *synthetic_note(facts.synthetic),
        f"{span}. Execution: {cfg.execution.describe()}; the first decision is on the first session, none on the "
        "last (its return would fall outside the window). CR compounds the daily net returns; Sharpe is annualised "
        f"with sqrt(252) over a {100 * stats.risk_free:g}% risk-free rate; HR is the share of directional (non-HOLD) "
        "calls whose sign matches the asset's return over the holding period; MDD is on the compounded equity curve.",
        f"Returns: {facts.returns(cfg)}; weights SS/S/H/B/SB = {'/'.join(f'{w:g}' for w in cfg.agents.weights)}; "
        f"non-LLM agents decide every {cfg.agents.decision_every} session(s); {_cadence(cfg)}.",
        f"Sharpe CI: {round(100 * (1 - stats.alpha))}% percentile interval of a stationary bootstrap "
        f"({stats.bootstrap} resamples, mean block {stats.block:g} days, seed {cfg.seed}). p: one-sided paired "
        f"bootstrap test of Sharpe(agent) - Sharpe({BENCHMARK}) > 0 on the same resampled days; * = beats "
        f"{BENCHMARK} at {stats.alpha:g}.",
        *unreadable,
        *([f"No company headlines in the window for {', '.join(map(md_cell, no_news))}: their news context is "
           "empty."] if no_news else []),
        *[f"{md_cell(t)}: the context states {', '.join(m)} as missing on the first day." for t, m in missing.items()],
        *_absent(facts, md_cell),
        *[f"{md_cell(what)}: {md_cell(why)}" for what, why in extra.items()],
    ]
    return list(dict.fromkeys(notes))
