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
whose lifecycle is :mod:`benchmarks.run_folder`'s. The agents are asked cell by cell (an agent over a window) by an
executor (:mod:`benchmarks.executors`: in-process, or Ray tasks with ``--executor ray``; ``--shard I/N`` runs a part
that :mod:`benchmarks.merge` joins), while the saving, booking and statistics stay here, the same for every executor;
API models share the run's rate limits and budget (:class:`tr1_agent.api_limits.ApiGovernor`, ``--max-cost-usd``).
An agent x ticker's decisions are saved the moment its replay ends (and LLM calls are cached by the agents
themselves), so a killed run resumes where it stopped and a finished one reruns without asking any agent again.

A failed call is never a decision: the agent x ticker (in that window) is reported as failed, nothing
of it is saved, the other results are written, and the next run asks again for exactly what failed.
The exit status is 0 only when every requested agent x ticker ran; 1 (with a one-line reason) when any
failed or was skipped, nothing was replayed, or ``--max-cost-usd`` stopped the run; 2 for arguments no replay can
use; 130 on Ctrl-C (the folder resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from tqdm.auto import tqdm

from baselines import TRAINED
from benchmarks.budget import charge_saved, estimate
from benchmarks.config import BENCHMARK, RunConfig
from benchmarks.escaping import md_frame
from benchmarks.executors import Cell, Outcome, Task, make_executor, store_at
from benchmarks.leaderboard import markdown as leaderboard_markdown
from benchmarks.leaderboard import signals_by_window, write_leaderboard, write_portfolio_tearsheets
from benchmarks.mapping import Mapper, in_order
from benchmarks.notes import RunFacts, page_notes
from benchmarks.portfolio import run_portfolio
from benchmarks.replay import Observations, Pending, decisions_path, pending, save
from benchmarks.report import Results, slug, write_reports
from benchmarks.roster import AgentSpec, UsageError, cutoffs, resolve_agents
from benchmarks.run_folder import (
    SHARD_CELLS,
    FolderRefused,
    RunRecord,
    begin_run,
    check_out,
    csv_text,
    finish_run,
    new_run_id,
    verify_run,
    write_csv,
    write_json,
    write_text,
)
from tr1_agent.api_limits import ApiGovernor, BudgetExhausted
from tr1_env.contamination.cutoffs import Cutoff, latest, post_cutoff_window
from tr1_env.context.reference import build_context
from tr1_env.core.actions import Action
from tr1_env.data.store import Store
from tr1_env.evaluation.backtest import backtest, buy_and_hold, continues
from tr1_env.evaluation.windows import Window
from tr1_env.execution.llm_cost import decision_cost
from tr1_env.util.cli_args import add_dataclass_args, flat_dict, from_args
from tr1_env.util.redact import redact_url

__all__ = ["Observations", "RunConfig", "Setup", "UsageError", "build_parser", "main", "outcome", "plan",
           "post_cutoff", "resolve_agents", "run", "setup"]


def _missing_on(ticker: str, day: pd.Timestamp, store_path: str | None) -> list[str]:
    """The modalities ``ticker``'s context on ``day`` states as missing, from this process's store at the path."""
    return list(build_context(store_at(store_path), ticker, day).missing)


def coverage(store: Store, tickers: tuple[str, ...], days: dict[str, pd.DatetimeIndex], start: str, end: str,
             mapper: Mapper = in_order, store_path: str | None = None) -> dict:
    """Data caveats per ticker: headlines in the window and the modalities its first context states as missing
    (those contexts built through ``mapper``, an executor's workers, from the store at ``store_path``: ``store``
    in this process)."""
    store_at(store_path, store)
    news = store.table("news")
    lo, hi = pd.Timestamp(start, tz="UTC") - pd.Timedelta(days=30), pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    missing = mapper(_missing_on, [(t, days[t][0]) for t in tickers], store_path=store_path)
    out = {}
    for t, gaps in zip(tickers, missing):
        rows = news[(news["ticker"] == t) & (news["available_at"] >= lo) & (news["available_at"] < hi)]
        out[t] = {"sessions": len(days[t]), "headlines_in_window": len(rows), "missing_modalities_on_first_day": gaps}
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


RETURN_DATES = "%Y-%m-%d"  # the dates of returns/*.csv


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

    def book_records(self, records: dict[str, list[dict]], days: dict[str, pd.DatetimeIndex], cfg: RunConfig,
                     carried: dict[str, pd.DataFrame | None]) -> dict[str, tuple[pd.Series, pd.DataFrame, str]]:
        """On a worker, an agent's new decision records (no LLM's: no call costs) booked as the run books them once
        saved and read back: per ticker the actions booked, the book and its returns file's text."""
        out = {}
        for t, rows in records.items():
            if rows:
                actions = pd.Series([Action.parse(r["action"]) for r in rows], name="action",
                                    index=pd.DatetimeIndex(pd.to_datetime([r["date"] for r in rows]), name="date"))
                frame = self.books(t, actions, days[t], cfg, None, carried.get(t))
                out[t] = actions, frame, csv_text(frame, date_format=RETURN_DATES)
        return out

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


def plan(specs: list[AgentSpec], protocol: list[Window], spans: dict[str, set[Window]],
         days_by_window: dict[Window, dict[str, pd.DatetimeIndex]], shard: tuple[int, int] | None = None) -> list[Cell]:
    """The run's cells, window by window and agent by agent, each linked to its agent's cell of the window before;
    with ``shard`` (I, N) only the agents of the I-th of N shards (the available agents dealt round-robin)."""
    available = [s for s in specs if not s.unavailable]
    mine = available if shard is None else available[shard[0] - 1::shard[1]]
    cells: list[Cell] = []
    last: dict[str, int] = {}
    for w in protocol:
        for spec in mine:
            if w in spans[spec.label]:
                cells.append(Cell(spec, w, days_by_window[w], last.get(spec.label)))
                last[spec.label] = len(cells) - 1
    return cells


@dataclass
class _Booked:
    """A cell's result as the run keeps it: per ticker its book and decisions, its failures, its pseudonyms."""

    books: dict[str, tuple[pd.DataFrame, pd.DataFrame]]
    failed: dict[str, str]
    pseudonyms: dict[str, dict]


def replay_cells(cells: list[Cell], cfg: RunConfig, market: Market, folder_of, executor, single: bool
                 ) -> list[_Booked]:
    """Every cell's decisions, reloaded from the run folder or asked through ``executor``, saved and booked here.

    A cell goes to the executor once its agent's cell of the window before is booked (its positions carry in);
    a progress bar counts the cells done, failed and left."""
    results: list[_Booked | None] = [None] * len(cells)
    states: dict[int, Pending] = {}

    def start(i: int) -> Task | None:
        cell = cells[i]
        before = results[cell.previous].books if cell.previous is not None else {}
        carried = {t: market.carried(t, before.get(t, (None,))[0], d) for t, d in cell.days.items()}
        held = {t: float(frame["position"].iloc[-1]) for t, frame in carried.items() if frame is not None}
        state = pending(cell.spec, cfg, cell.window, cell.days, folder_of(cell.window), held)
        states[i] = (state, carried)
        if not state.todo:
            finish(i, Outcome())
            return None
        return Task(cell.spec, cfg, cell.window, {t: cell.days[t] for t in state.todo}, state.held, state.max_chars,
                    state.fingerprint, {t: carried[t] for t in state.todo})

    def finish(i: int, outcome: Outcome) -> None:
        cell, (state, carried) = cells[i], states.pop(i)
        folder = folder_of(cell.window)
        for t, error in outcome.failed.items():
            print(f"failed {cell.spec.label} on {t if single else f'{t} in {cell.window.name}'}: {error}",
                  file=sys.stderr)
        decided = save(state, outcome.records)
        books = {}
        for t in decided:
            path = folder / "returns" / f"{slug(cell.spec.label)}__{t}.csv"
            actions = decided[t]["action"].map(Action.parse)
            theirs = outcome.books.get(t)
            if theirs is not None and _same_actions(theirs[0], actions):  # the worker booked what was saved
                frame = theirs[1]
                write_text(path, theirs[2])
            else:
                llm_usd = decided[t]["meta"].map(decision_cost) if cell.spec.llm else None
                frame = market.books(t, actions, cell.days[t], cfg, llm_usd, carried[t])
                write_csv(path, frame, date_format=RETURN_DATES)
            books[t] = (frame, decided[t])
        results[i] = _Booked(books, outcome.failed, outcome.pseudonyms)
        bar.update()
        failed_cells = sum(1 for r in results if r is not None and r.failed)
        bar.set_postfix(done=bar.n - failed_cells, failed=failed_cells, left=len(cells) - bar.n)

    waiting, inflight = list(range(len(cells))), 0
    with tqdm(total=len(cells), desc="cells", unit="cell", disable=not cells) as bar:
        while waiting or inflight:
            for i in [i for i in waiting if cells[i].previous is None or results[cells[i].previous] is not None]:
                if inflight >= executor.capacity:
                    break
                waiting.remove(i)
                (folder_of(cells[i].window) / "returns").mkdir(parents=True, exist_ok=True)
                if (task := start(i)) is not None:
                    executor.submit(i, task)
                    inflight += 1
            if inflight:
                for i, outcome in executor.wait():
                    inflight -= 1
                    finish(i, outcome)
    return results


def _same_actions(booked: pd.Series, saved: pd.Series) -> bool:
    """Whether a worker booked the actions the run saved and read back: the same days (and index type) and
    actions."""
    return (booked.index.equals(saved.index) and booked.index.dtype == saved.index.dtype
            and booked.tolist() == saved.tolist())


def _window_results(cells: list[Cell], booked: list[_Booked], protocol: list[Window], specs: list[AgentSpec],
                    bench: dict[Window, dict[str, pd.DataFrame]]) -> list[WindowResult]:
    """The cells regrouped by window, agents in the run's order (buy-and-hold's books first when it is no agent)."""
    order = {s.label: k for k, s in enumerate(specs)}
    out = []
    for w in protocol:
        mine = sorted((k for k, c in enumerate(cells) if c.window == w), key=lambda k: order[cells[k].spec.label])
        books: Results = {cells[k].spec.label: booked[k].books for k in mine}
        failed = {cells[k].spec.label: {t: e if len(protocol) == 1 else f"{w.name} {e}" for t, e in
                                        booked[k].failed.items()} for k in mine if booked[k].failed}
        if BENCHMARK not in books:
            books = {BENCHMARK: {t: (b, pd.DataFrame({"action": ["STRONG_BUY"]})) for t, b in bench[w].items()},
                     **books}
        pseudonyms = {t: p for k in mine for t, p in booked[k].pseudonyms.items()}
        out.append(WindowResult(books, bench[w], failed, pseudonyms))
    return out


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


@dataclass(frozen=True)
class Setup:
    """What a run replays, resolved and checked before anything is written."""

    cfg: RunConfig
    store: Store
    tickers: tuple[str, ...]
    specs: list[AgentSpec]
    cutoffs: dict[str, Cutoff]
    protocol: list[Window]
    spans: dict[str, set[Window]]
    days_by_window: dict[Window, dict[str, pd.DatetimeIndex]]


def setup(cfg: RunConfig, governor: ApiGovernor | None = None, asks: bool = True,
          specs: list[AgentSpec] | None = None) -> Setup:
    """The run's store, tickers, agents (sharing ``governor``; or ``specs``), cutoffs and windows; a UsageError for
    what no replay can use. ``asks=False`` (a merge of shards, which asks no agent): every agent counts as
    available."""
    store = Store(cfg.window.store)
    tickers = check(cfg, store)
    specs = resolve_agents(cfg, governor) if specs is None else specs
    if not asks:
        specs = [dataclasses.replace(s, unavailable=None) for s in specs]
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
    return Setup(cfg, store, tickers, specs, found, protocol, spans, days_by_window)


def _finish_shard(out: Path, record: RunRecord, cells: list[Cell], booked: list[_Booked], skipped: dict[str, str],
                  t0: float) -> pd.DataFrame:
    """A shard's folder finished: its decisions and ``cells.json`` (each cell with its failed tickers), no report
    (``tr1 bench merge`` computes them over every shard)."""
    listing = [{"agent": c.spec.label, "window": c.window.name, "failed": b.failed} for c, b in zip(cells, booked)]
    write_json(out / SHARD_CELLS, {"shard": record.config["shard"], "cells": listing})
    failed = {}
    for c, b in zip(cells, booked):
        for t, e in b.failed.items():
            failed.setdefault(c.spec.label, {})[t] = f"{c.window.name} {e}" if len(record.windows) > 1 else e
    record = dataclasses.replace(record, skipped=skipped, failed=failed, wall_time_s=round(time.time() - t0, 1))
    finish_run(out, record.meta(), "failed" if failed or skipped else "complete")
    summary = pd.DataFrame()
    summary.attrs.update(run_id=record.run_id, failed=failed, skipped=skipped, shard=len(cells))
    return summary


def run(cfg: RunConfig, executor=None, specs: list[AgentSpec] | None = None,
        extra: Callable[[Path, pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """The whole benchmark; returns the summary table (also written under ``--out``).

    Every run is a list of windows (:func:`tr1_env.evaluation.windows.windows`; one unless ``--walk-forward``): each
    agent is built and fitted afresh per window, its books continue the window before's (the position held into
    a boundary earns that session; flat at the first window and after a gap), and the per-ticker tables, the
    leaderboard and the page are written over all windows together. An agent x ticker whose replay failed in any
    window is left out of every table (its other windows' decisions are saved for the next run) and an agent with
    a failure is left out of the leaderboard. ``summary.attrs`` holds ``run_id``, ``failed`` (agent -> ticker -> error)
    and ``skipped`` (agent -> why).

    The cells (an agent over a window) run on ``--executor`` (or ``executor``: a merge's, which reads shards);
    ``--shard I/N`` runs the I-th of N shards' cells and writes their decisions only (``summary.attrs["shard"]``:
    its number of cells); ``--dry-run`` returns an empty table whose ``attrs["dry_run"]`` is the cost estimate.

    ``specs``: the agents, when not those ``cfg`` names (a forward ledger's recorded decisions); ``extra(out, board)``
    writes further files into the run's folder before it is closed, so its manifest lists them.
    """
    t0 = time.time()
    out = check_out(cfg.outputs.out, cfg.outputs.force)  # before anything is read or written
    rates, tokens = cfg.api.rates()
    governor = ApiGovernor(rates, tokens, cfg.api.max_cost_usd)
    asks = executor is None or executor.asks
    ready = setup(cfg, governor, asks, specs)
    cfg, store, tickers, specs, found = ready.cfg, ready.store, ready.tickers, ready.specs, ready.cutoffs
    protocol, days_by_window, shard = ready.protocol, ready.days_by_window, cfg.distribution.shard_of()
    cells = plan(specs, protocol, ready.spans, days_by_window, shard)
    executor = executor or make_executor(cfg, store, governor)

    def folder_of(w: Window) -> Path:
        return out if len(protocol) == 1 else out / "windows" / w.name

    if any(c.spec.api for c in cells):  # what the API calls cost so far and will cost, before the first one
        cost = estimate(cells, cfg, folder_of)
        if cfg.api.dry_run:
            summary = pd.DataFrame()
            summary.attrs.update(dry_run=cost.line(cfg))
            return summary
        charge_saved(governor, cfg, cost.spent, cost.unpriced)
        print(cost.line(cfg), file=sys.stderr)
    elif cfg.api.dry_run:
        summary = pd.DataFrame()
        summary.attrs.update(dry_run="API cost: no API model in this run ($0.00)")
        return summary
    if (out / "config.json").exists() and (problems := verify_run(out)):
        print(f"note: {out} held an unfinished or mixed run ({problems[0]}); its reports are replaced",
              file=sys.stderr)
    with executor:  # open from the coverage over the cells to the statistics, which it maps over its workers
        executor.fit_ahead(cells, lambda c: [t for t in c.days if not decisions_path(c.spec, folder_of(c.window),
                                                                                     t).exists()])
        whole = {t: store.trading_days(t, cfg.window.start, cfg.window.end) for t in tickers}
        cover = coverage(store, tickers, whole, cfg.window.start, cfg.window.end, executor.map, cfg.window.store)
        facts = RunFacts(protocol, cover, cutoffs=found,
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
        bench: dict[Window, dict[str, pd.DataFrame]] = {}
        for w, days in days_by_window.items():  # in order: each window's buy-and-hold continues the one before
            before = bench[protocol[protocol.index(w) - 1]] if bench else None
            bench[w] = {t: market.benchmark(t, d, cfg, market.carried(t, before and before.get(t), d))
                        for t, d in days.items()}
        executor.book_with(market)
        booked = replay_cells(cells, cfg, market, folder_of, executor, len(protocol) == 1)
        if shard is not None:
            return _finish_shard(out, record, cells, booked, skipped, t0)
        per_window = _window_results(cells, booked, protocol, specs, bench)
        failed = _merge_failures(per_window)
        facts = dataclasses.replace(facts, skipped=skipped, failed=failed)
        # an agent x ticker that failed in one window is in no table: its chained book would miss that window
        labels = {s.label for s in specs}
        results = _chain([r.books for r in per_window], lambda a, t: a in labels and t not in failed.get(a, {}))
        bench = {t: pd.concat([r.bench[t] for r in per_window]) for t in tickers}
        summary = write_reports(results, bench, cfg.replace(tearsheets=len(protocol) == 1 and cfg.outputs.tearsheets),
                                out, facts, record.run_id, executor.map)
        ranked = {w: {a: {t: v for t, v in per.items() if t not in failed.get(a, {})} for a, per in r.books.items()
                      if a not in failed and per} for w, r in zip(protocol, per_window)}
        sheets = write_portfolio_tearsheets(ranked, cfg, out / "tearsheets") if cfg.outputs.tearsheets else {}
        board = write_leaderboard(ranked, cfg, out, page_notes(cfg, facts), sheets, record.run_id, found,
                                  signals_by_window(ranked, market.closes, cfg, executor.map), executor.map)
    write_text(out / "leaderboard.md", leaderboard_markdown(md_frame(board), cfg))
    if extra is not None:
        extra(out, board)
    pseudonyms = {t: names for r in per_window for t, names in r.pseudonyms.items()}
    record = dataclasses.replace(record, skipped=skipped, failed=failed, pseudonyms=pseudonyms,
                                 wall_time_s=round(time.time() - t0, 1))
    finish_run(out, record.meta(), "failed" if failed or skipped or summary.empty else "complete")
    summary.attrs.update(run_id=record.run_id, failed=failed, skipped=skipped)
    return summary


def not_run(failed: dict[str, dict], skipped, unit: str, where: str) -> list[str]:
    """The parts of a non-zero exit's line: each agent's failed replays (agent -> ``unit`` -> error, named
    ``agent where unit``) and the skipped agents."""
    calls = [f"{a} {where} {u}" for a, per in failed.items() for u in per]
    return ([f"{len(calls)} agent x {unit} replay(s) failed: {', '.join(calls)}"] if calls else []) + (
        [f"{len(skipped)} agent(s) skipped: {', '.join(skipped)}"] if skipped else [])


def outcome(summary: pd.DataFrame, cfg: RunConfig) -> str | None:
    """None when every requested agent x ticker ran, else the one-line reason for a non-zero exit."""
    skipped = list(summary.attrs.get("skipped", {}))
    if summary.empty:
        return "nothing was replayed" + (f" ({len(skipped)} agent(s) skipped: {', '.join(skipped)})" if skipped else "")
    parts = not_run(summary.attrs.get("failed", {}), skipped, "ticker", "on")
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
            board = run_portfolio(cfg)
            if "shard" in board.attrs:
                print(f"shard {cfg.distribution.shard}: {board.attrs['shard']} cells in {cfg.outputs.out} "
                      f"(wall time {time.time() - start:.0f} s); merge the shards with tr1 bench merge")
            else:
                print((Path(cfg.outputs.out) / "leaderboard_portfolio.md").read_text())
                print(f"wall time {time.time() - start:.0f} s; outputs in {cfg.outputs.out}")
            parts = not_run(board.attrs["failed"], board.attrs["skipped"], "window", "in")
            if parts:
                print(f"{parser.prog}: error: {'; '.join(parts)} (rerun to retry)", file=sys.stderr)
                return 1
            return 0
        summary = run(cfg)
    except (UsageError, FolderRefused) as exc:
        return _usage(parser, exc)
    except BudgetExhausted as exc:  # the decisions so far are saved and LLM calls cached: a rerun resumes
        print(f"{parser.prog}: error: {exc}; stopped, rerun with a larger budget to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; rerun the same command to resume from {cfg.outputs.out}", file=sys.stderr)
        return 130
    if "dry_run" in summary.attrs:
        print(summary.attrs["dry_run"])
        return 0
    if "shard" in summary.attrs:
        print(f"shard {cfg.distribution.shard}: {summary.attrs['shard']} cells in {cfg.outputs.out} "
              f"(wall time {time.time() - start:.0f} s); merge the shards with tr1 bench merge")
        reason = outcome(summary, cfg) if summary.attrs["failed"] or summary.attrs["skipped"] else None
        if reason:
            print(f"{parser.prog}: error: {reason}", file=sys.stderr)
        return 1 if reason else 0
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
