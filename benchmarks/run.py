"""Replay a held-out period for every agent and write the reports.

    python benchmarks/run.py                                   # offline: baselines, SB3, SmolLM2
    python benchmarks/run.py --model gpt-4.1 o4-mini           # adds API models (OPENAI_API_KEY)
    python benchmarks/run.py --agent examples.custom_agent:MomentumAgent --agents buy_and_hold
    python benchmarks/run.py --walk-forward quarterly --start 2023-07-01 --end 2025-06-30   # leaderboard.html
    python benchmarks/run.py --portfolio --walk-forward quarterly   # one book per agent: leaderboard_portfolio.html

This module orchestrates only: the agents are resolved by :mod:`benchmarks.roster`, each replayed window by
window by :mod:`benchmarks.replay` (decisions at each decision day's close from that day's context alone), booked
by :mod:`tr1_env.evaluation.backtest` under the run's :class:`~tr1_env.execution.Execution`, and reported by
:mod:`benchmarks.report` and :mod:`benchmarks.leaderboard` with the notes of :mod:`benchmarks.notes`, into a folder
whose lifecycle is :mod:`benchmarks.run_folder`'s. An agent x ticker's decisions are saved the moment its replay
ends (and LLM calls are cached by the agents themselves), so a killed run resumes where it stopped and a finished
one reruns without asking any agent again.

A failed call is never a decision: the agent x ticker (in that window) is reported as failed, nothing
of it is saved, the other results are written, and the next run asks again for exactly what failed.
The exit status is 0 only when every requested agent x ticker ran; 1 (with a one-line reason) when any
failed or was skipped, or nothing was replayed; 2 for arguments no replay can use.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from baselines import TRAINED
from benchmarks.config import BENCHMARK, RunConfig
from benchmarks.escaping import md_frame
from benchmarks.leaderboard import markdown as leaderboard_markdown
from benchmarks.leaderboard import signal_table, write_leaderboard, write_portfolio_tearsheets
from benchmarks.notes import RunFacts, page_notes
from benchmarks.portfolio import run_portfolio
from benchmarks.replay import Observations, replay
from benchmarks.report import Results, slug, write_reports
from benchmarks.roster import AgentSpec, UsageError, resolve_agents
from benchmarks.run_folder import (
    FolderRefused,
    RunRecord,
    begin_run,
    check_out,
    finish_run,
    new_run_id,
    verify_run,
    write_csv,
    write_text,
)
from tr1_env.contamination.cutoffs import Cutoff, latest, model_cutoff, parse_overrides, post_cutoff_window
from tr1_env.context.reference import build_context
from tr1_env.core.actions import Action
from tr1_env.data.store import Store
from tr1_env.evaluation.backtest import backtest, buy_and_hold, continues
from tr1_env.evaluation.windows import Window
from tr1_env.execution.llm_cost import decision_cost
from tr1_env.util.cli_args import add_dataclass_args, flat_dict, from_args
from tr1_env.util.redact import redact_url

__all__ = ["Observations", "RunConfig", "UsageError", "build_parser", "main", "outcome", "post_cutoff",
           "resolve_agents", "run"]


def coverage(store: Store, tickers: tuple[str, ...], days: dict[str, pd.DatetimeIndex], start: str, end: str) -> dict:
    """Data caveats per ticker: headlines in the window and the modalities its first context states as missing."""
    news = store.table("news")
    lo, hi = pd.Timestamp(start, tz="UTC") - pd.Timedelta(days=30), pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    out = {}
    for t in tickers:
        rows = news[(news["ticker"] == t) & (news["available_at"] >= lo) & (news["available_at"] < hi)]
        first = build_context(store, t, days[t][0])
        out[t] = {"sessions": len(days[t]), "headlines_in_window": len(rows),
                  "missing_modalities_on_first_day": list(first.missing)}
    return out


def cutoffs(specs: list[AgentSpec], cfg: RunConfig) -> dict[str, Cutoff]:
    """The training cutoff of every LLM row: the shipped table, a base model's, or ``--cutoff`` (UsageError for a
    ``--cutoff`` that is no date)."""
    out = {}
    try:
        per_model, default = parse_overrides(cfg.contamination.cutoff)
        for spec in specs:
            if spec.model is not None:
                found = model_cutoff(spec.model, per_model.get(spec.model))
                out[spec.label] = (found if found.date is not None or default is None
                                   else model_cutoff(spec.model, default))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out


def post_cutoff(cfg: RunConfig, store: Store, found: dict[str, Cutoff]) -> RunConfig:
    """``--post-cutoff``: the same window length, starting after the latest cutoff of the run's LLMs."""
    try:
        last = latest(found.values())
        data_end = min(store.trading_days(t)[-1] for t in cfg.window.ticker_list(store))
        start, end = post_cutoff_window(cfg.window.start, cfg.window.end, last, data_end)
    except ValueError as exc:
        raise UsageError(f"--post-cutoff: {exc}") from None
    return cfg.replace(start=f"{start:%Y-%m-%d}", end=f"{end:%Y-%m-%d}")


def check(cfg: RunConfig, store: Store) -> tuple[str, ...]:
    """What only the store can tell, before anything is written: the run's tickers, or a UsageError."""
    tickers = cfg.window.ticker_list(store)
    unknown = [t for t in tickers if t not in store.tickers]
    if unknown:
        raise UsageError(f"--tickers: {', '.join(unknown)} not in the store; it has {', '.join(store.tickers)}")
    return tickers


@dataclass(frozen=True)
class Market:
    """What the books read per ticker: closes, opens (a fill at an open reads them), volumes (a volume cap or an
    impact reads them) and, for total returns, dividends on the closes' split basis."""

    closes: dict[str, pd.Series]
    opens: dict[str, pd.Series]
    dividends: dict[str, pd.Series | None]
    volumes: dict[str, pd.Series | None]

    @classmethod
    def load(cls, store: Store, tickers: tuple[str, ...], total_return: bool, volumes: bool = False) -> Market:
        return cls({t: store.closes(t) for t in tickers}, {t: store.closes(t, "open") for t in tickers},
                   {t: store.dividends(t) if total_return else None for t in tickers},
                   {t: store.closes(t, "volume") if volumes else None for t in tickers})

    def books(self, ticker: str, actions: pd.Series, days: pd.DatetimeIndex, cfg: RunConfig,
              llm_usd: pd.Series | None = None, previous: pd.DataFrame | None = None) -> pd.DataFrame:
        return backtest(actions, self.closes[ticker], days, cfg.execution, cfg.agents.weight_map(),
                        self.dividends[ticker], self.opens[ticker], self.volumes[ticker], llm_usd, previous)

    def benchmark(self, ticker: str, days: pd.DatetimeIndex, cfg: RunConfig,
                  previous: pd.DataFrame | None = None) -> pd.DataFrame:
        return buy_and_hold(self.closes[ticker], days, cfg.execution, self.dividends[ticker], self.opens[ticker],
                            self.volumes[ticker], previous)

    def carried(self, ticker: str, previous: pd.DataFrame | None, days: pd.DatetimeIndex) -> pd.DataFrame | None:
        """``previous`` when a book over ``days`` can continue it (its last position then earns ``days[0]``), else
        None (the first window, or a gap between windows: the book starts flat)."""
        return previous if continues(previous, self.closes[ticker], days) else None


@dataclass(frozen=True)
class WindowResult:
    """One window's books: every agent's per-ticker accounting and decisions (buy-and-hold's always, the
    leaderboard's reference), buy-and-hold per ticker, the failures (agent -> ticker -> error) and the pseudonyms
    the anonymized observations used."""

    books: Results
    bench: dict[str, pd.DataFrame]
    failed: dict[str, dict[str, str]]
    pseudonyms: dict[str, dict]


def replay_window(cfg: RunConfig, window: Window, days: dict[str, pd.DatetimeIndex], specs: list[AgentSpec],
                  store: Store, market: Market, folder: Path, single: bool,
                  previous: WindowResult | None = None) -> WindowResult:
    """Every available agent replayed over ``window`` and booked; its returns written under ``folder``.

    With the ``previous`` window's result the books are continuous: each agent x ticker's last position there is
    held into this window's first session, earns it and is the position the refitted agent starts from."""
    (folder / "returns").mkdir(parents=True, exist_ok=True)
    observations = Observations(store, cfg.seed)  # shared by the agents of this window
    before = previous.books if previous else {}
    bench = {t: market.benchmark(t, d, cfg, market.carried(t, previous and previous.bench.get(t), d))
             for t, d in days.items()}
    books: Results = {}
    failed: dict[str, dict[str, str]] = {}
    for spec in [s for s in specs if not s.unavailable]:
        carried = {t: market.carried(t, before.get(spec.label, {}).get(t, (None,))[0], d) for t, d in days.items()}
        held = {t: float(frame["position"].iloc[-1]) for t, frame in carried.items() if frame is not None}
        decided, errors = replay(spec, cfg, window, store, days, observations, folder, held)
        for t, error in errors.items():
            print(f"failed {spec.label} on {t if single else f'{t} in {window.name}'}: {error}", file=sys.stderr)
            failed.setdefault(spec.label, {})[t] = error if single else f"{window.name} {error}"
        books[spec.label] = {}
        for t in decided:
            llm_usd = decided[t]["meta"].map(decision_cost) if spec.llm else None
            frame = market.books(t, decided[t]["action"].map(Action.parse), days[t], cfg, llm_usd, carried[t])
            write_csv(folder / "returns" / f"{slug(spec.label)}__{t}.csv", frame, date_format="%Y-%m-%d")
            books[spec.label][t] = (frame, decided[t])
    if BENCHMARK not in books:
        books = {BENCHMARK: {t: (b, pd.DataFrame({"action": ["STRONG_BUY"]})) for t, b in bench.items()}, **books}
    return WindowResult(books, bench, failed, {t: p.mapping for t, p in observations.pseudonyms.items()})


def _merge_failures(per_window: list[WindowResult]) -> dict[str, dict[str, str]]:
    """Agent -> ticker -> the errors of every window it failed in, joined."""
    out: dict[str, dict[str, str]] = {}
    for result in per_window:
        for agent, errors in result.failed.items():
            mine = out.setdefault(agent, {})
            for t, error in errors.items():
                mine[t] = "; ".join([*([mine[t]] if t in mine else []), error])
    return out


def _chain(per_window: list[Results], keep) -> Results:
    """Each agent's per-ticker accounting and decisions over all windows, in order (one book per ticker), of the
    agent x tickers ``keep(agent, ticker)`` admits."""
    out: Results = {}
    for agent in dict.fromkeys(a for per in per_window for a in per):
        tickers = [t for t in dict.fromkeys(t for per in per_window for t in per.get(agent, {})) if keep(agent, t)]
        books = {t: tuple(pd.concat([per[agent][t][i] for per in per_window if agent in per]) for i in (0, 1))
                 for t in tickers}
        if books:
            out[agent] = books
    return out


def run(cfg: RunConfig) -> pd.DataFrame:
    """The whole benchmark; returns the summary table (also written under ``--out``).

    Every run is a list of windows (:func:`tr1_env.evaluation.windows.windows`; one unless ``--walk-forward``): each
    agent is built and fitted afresh per window, its books continue the window before's (the position held into
    a boundary earns that session; flat at the first window and after a gap), and the per-ticker tables, the
    leaderboard and the page are written over all windows together. An agent x ticker whose replay failed in any
    window is left out of every table (its other windows' decisions are saved for the next run) and an agent with
    a failure is left out of the leaderboard. ``summary.attrs`` holds ``run_id``, ``failed`` (agent -> ticker -> error)
    and ``skipped`` (agent -> why).
    """
    t0 = time.time()
    out = check_out(cfg.outputs.out, cfg.outputs.force)  # before anything is read or written
    store = Store(cfg.window.store)
    tickers = check(cfg, store)
    specs = resolve_agents(cfg)
    found = cutoffs(specs, cfg)
    if cfg.contamination.post_cutoff:
        cfg = post_cutoff(cfg, store, found)
    try:
        history, others = cfg.window.spans()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    protocol = sorted(set(history) | set(others), key=lambda w: w.start)
    spans = {s.label: set(history if s.prices_only else others) for s in specs}
    days_by_window = {w: {t: store.trading_days(t, w.start, w.end) for t in tickers} for w in protocol}
    short = [f"{t} in {w.name}" for w, days in days_by_window.items() for t, d in days.items() if len(d) < 2]
    if short:
        raise UsageError(f"fewer than two sessions: {', '.join(short)}")
    if (out / "config.json").exists() and (problems := verify_run(out)):
        print(f"note: {out} held an unfinished or mixed run ({problems[0]}); its reports are replaced",
              file=sys.stderr)
    whole = {t: store.trading_days(t, cfg.window.start, cfg.window.end) for t in tickers}
    facts = RunFacts(protocol, coverage(store, tickers, whole, cfg.window.start, cfg.window.end), cutoffs=found,
                     llm=any(s.llm for s in specs), trained=any(s.label in TRAINED for s in specs),
                     synthetic=store.synthetic)
    record = RunRecord(new_run_id(), {**flat_dict(cfg), "base_url": redact_url(cfg.agents.base_url)},
                       [w.name for w in protocol], facts.coverage, facts.returns(cfg),
                       cutoffs={label: dataclasses.asdict(c) for label, c in found.items()})
    begin_run(out, record.meta())

    skipped = {s.label: s.unavailable for s in specs if s.unavailable}
    for label, why in skipped.items():  # say why and go on with the other agents
        print(f"skipping {label}: {why}", file=sys.stderr)
    market = Market.load(store, tickers, cfg.total_return(), cfg.execution.needs_liquidity)
    per_window: list[WindowResult] = []
    for w, days in days_by_window.items():  # in order: each window's books continue the one before
        mine = [s for s in specs if w in spans[s.label]]  # each agent over its own span
        per_window.append(replay_window(cfg, w, days, mine, store, market, out if len(protocol) == 1 else
                                        out / "windows" / w.name, len(protocol) == 1,
                                        per_window[-1] if per_window else None))
    failed = _merge_failures(per_window)
    facts = dataclasses.replace(facts, skipped=skipped, failed=failed)
    # an agent x ticker that failed in one window is in no table: its chained book would miss that window
    labels = {s.label for s in specs}
    results = _chain([r.books for r in per_window], lambda a, t: a in labels and t not in failed.get(a, {}))
    bench = {t: pd.concat([r.bench[t] for r in per_window]) for t in tickers}
    summary = write_reports(results, bench, cfg.replace(tearsheets=len(protocol) == 1 and cfg.outputs.tearsheets),
                            out, facts, record.run_id)
    ranked = {w: {a: {t: v for t, v in per.items() if t not in failed.get(a, {})} for a, per in r.books.items()
                  if a not in failed and per} for w, r in zip(protocol, per_window)}
    sheets = write_portfolio_tearsheets(ranked, cfg, out / "tearsheets") if cfg.outputs.tearsheets else {}
    board = write_leaderboard(ranked, cfg, out, page_notes(cfg, facts), sheets, record.run_id, found,
                              signal_table(ranked, market.closes, cfg))
    write_text(out / "leaderboard.md", leaderboard_markdown(md_frame(board), cfg))
    pseudonyms = {t: names for r in per_window for t, names in r.pseudonyms.items()}
    record = dataclasses.replace(record, skipped=skipped, failed=failed, pseudonyms=pseudonyms,
                                 wall_time_s=round(time.time() - t0, 1))
    finish_run(out, record.meta(), "failed" if failed or skipped or summary.empty else "complete")
    summary.attrs.update(run_id=record.run_id, failed=failed, skipped=skipped)
    return summary


def outcome(summary: pd.DataFrame, cfg: RunConfig) -> str | None:
    """None when every requested agent x ticker ran, else the one-line reason for a non-zero exit."""
    failed = [f"{a} on {t}" for a, per in summary.attrs.get("failed", {}).items() for t in per]
    skipped = list(summary.attrs.get("skipped", {}))
    if summary.empty:
        return "nothing was replayed" + (f" ({len(skipped)} agent(s) skipped: {', '.join(skipped)})" if skipped else "")
    parts = ([f"{len(failed)} agent x ticker replay(s) failed: {', '.join(failed)}"] if failed else []) + (
        [f"{len(skipped)} agent(s) skipped: {', '.join(skipped)}"] if skipped else [])
    return "; ".join(parts) + f" (details in {Path(cfg.outputs.out) / 'summary.md'}; rerun to retry)" if parts else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n")[0])
    add_dataclass_args(parser, RunConfig)
    return parser


def _usage(parser: argparse.ArgumentParser, exc: Exception) -> int:
    print(f"{parser.prog}: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """0: every agent x ticker ran; 1: some failed or were skipped, or nothing ran; 2: unusable arguments."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if os.getcwd() not in sys.path:  # plug-ins (examples.custom_agent:MomentumAgent) import from the working directory
        sys.path.insert(0, os.getcwd())
    start = time.time()
    try:
        cfg = from_args(RunConfig, ns)  # RunConfig's own checks raise ValueError
    except ValueError as exc:
        return _usage(parser, exc)
    try:
        if cfg.portfolio.portfolio:  # the portfolio track: one book per agent (benchmarks/portfolio.py)
            run_portfolio(cfg)
            print((Path(cfg.outputs.out) / "leaderboard_portfolio.md").read_text())
            print(f"wall time {time.time() - start:.0f} s; outputs in {cfg.outputs.out}")
            return 0
        summary = run(cfg)
    except (UsageError, FolderRefused) as exc:
        return _usage(parser, exc)
    print((Path(cfg.outputs.out) / "summary.md").read_text())
    print((Path(cfg.outputs.out) / "leaderboard.md").read_text())
    print(f"wall time {time.time() - start:.0f} s; outputs in {cfg.outputs.out}")
    reason = outcome(summary, cfg)
    if reason:
        print(f"{parser.prog}: error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
