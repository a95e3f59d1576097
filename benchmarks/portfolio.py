"""The portfolio track of ``benchmarks/run.py --portfolio``: each agent is one book over the universe plus cash.

Per window (one, or the walk-forward's), every portfolio agent (the baselines of
:data:`baselines.portfolio.PORTFOLIO_BASELINES`, and the SB3 and LLM books of :mod:`benchmarks.portfolio_agents`)
decides target weights at each session's close from the closes up to that close (cut there: nothing later is
passed), on the tickers that are members that day (:mod:`tr1_env.data.universe`), and the weights are booked by
:func:`tr1_env.evaluation.portfolio.portfolio_book` under the run's :class:`~tr1_env.execution.Execution` (every
``--execution`` setting), the Portfolio env's accounting. Walk-forward books are continuous, as the single-ticker
ones: the weights held at a window's last close drift through the next window's first session, at the equity
reached, and the refitted agent trades from them at that session's close (the first window, and the one after a
gap, start in cash). The leaderboard is :mod:`benchmarks.leaderboard`'s, on the books' daily returns, against
``--portfolio-benchmark`` (1/N of the universe bought and held, or the index ETF), plus each book's annualised
turnover; ``costs.csv`` and the leaderboard's cost table say what each book paid (:mod:`benchmarks.costs`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from baselines.portfolio import PORTFOLIO_BASELINES, PortfolioPolicy
from benchmarks.budget import charge_saved
from benchmarks.config import RunConfig
from benchmarks.costs import cost_table
from benchmarks.escaping import md_frame
from benchmarks.leaderboard import (
    COLUMNS,
    SIGNAL_HORIZON,
    Column,
    family_note,
    heatmap,
    markdown,
    portfolios,
    render_page,
    weight_ic_column,
)
from benchmarks.notes import synthetic_note
from benchmarks.portfolio_agents import LLMBook, SB3Book
from benchmarks.portfolio_cells import BookCell, Decided, InProcessBooks, book_executor, record
from benchmarks.report import cost_markdown
from benchmarks.roster import BUILTIN_LLMS, MODEL_CLASSES, UsageError, cutoffs, llm_specs
from benchmarks.run_folder import (
    SHARD_CELLS,
    RunRecord,
    begin_run,
    check_out,
    finish_run,
    new_run_id,
    write_csv,
    write_json,
    write_text,
)
from tr1_agent.api_limits import ApiGovernor
from tr1_env.data.store import Store
from tr1_env.data.universe import load_universe, membership, universe
from tr1_env.evaluation.backtest import continues
from tr1_env.evaluation.metrics import cumulative_return, max_drawdown, sharpe
from tr1_env.evaluation.portfolio import Legs, portfolio_book
from tr1_env.evaluation.signals import ic_tests, weight_rows
from tr1_env.evaluation.stats import compare
from tr1_env.evaluation.windows import Window
from tr1_env.execution.llm_cost import model_price
from tr1_env.util.cli_args import flat_dict
from tr1_env.util.redact import redact_url

#: Leaderboard columns of the tests of five-way calls: none applies to weights.
CALL_TESTS = ("accuracy", "macro_f1", "hit_rate")

__all__ = ["PORTFOLIO_COLUMNS", "Universe", "decide", "portfolio_books", "portfolio_plan", "replay_portfolio",
           "run_portfolio"]

_WEIGHT_IC = {"ic": weight_ic_column("ic", "active-weight IC 1d [{level}% CI] (p / Holm p)"),
              "ic_h": weight_ic_column("ic_h", f"active-weight IC {SIGNAL_HORIZON}d (p / Holm p)", interval=False)}
#: The single-ticker leaderboard's columns, the IC of the calls replaced by the IC of the active weights (with its
#: Holm-adjusted p), plus the book's turnover; accuracy and hit rate (five-way calls) stay in the CSV, empty, hidden.
PORTFOLIO_COLUMNS: tuple[Column, ...] = (
    *(d for c in COLUMNS[:-1] for d in (
        (c, Column(f"{c.name}_holm")) if c.name in ("ic_p", "ic_h_p") else
        (replace(c, optional=True) if c.name in CALL_TESTS else _WEIGHT_IC.get(c.name, c),))),
    Column("turnover", "turnover / yr", lambda r: f"{r.turnover:.1f}x"), COLUMNS[-1])
#: Sessions per year, to annualise turnover.
YEAR = 252


class Universe:
    """The book's prices over every session some ticker trades: ``closes`` masked outside membership (what the
    agents see; the index ETF's column too when it is no member), ``opens``, and ``priced``, the closes the books
    earn: the same, but the index ETF's never masked (the index_etf agent holds it either way)."""

    def __init__(self, store: Store, cfg: RunConfig):
        pc = cfg.portfolio
        try:
            file = load_universe(pc.universe) if pc.universe else None
            self.spans = universe(store, cfg.window.tickers or None, file)
        except ValueError as exc:
            raise UsageError(f"--universe: {exc}" if pc.universe else str(exc)) from None
        self.tickers = tuple(dict.fromkeys(self.spans["ticker"]))
        self.index = pc.index_etf if pc.index_etf in store.tickers else None  # a user's store may have no SPY
        if self.index is None and pc.portfolio_benchmark == "index_etf":
            raise UsageError(f"--index-etf: {pc.index_etf} is not in the store")
        columns = [*self.tickers, *([self.index] if self.index and self.index not in self.tickers else [])]
        self.closes = pd.DataFrame({t: store.closes(t) for t in columns}).sort_index()
        self.opens = pd.DataFrame({t: store.closes(t, "open") for t in columns}).reindex(self.closes.index)
        inside = pd.DataFrame(False, index=self.closes.index, columns=columns)
        for r in self.spans.itertuples(index=False):
            inside.loc[(inside.index >= r[1]) & (inside.index <= r[2]), r.ticker] = True
        self.priced = self.closes.where(inside.assign(**{self.index: True}) if self.index else inside)
        self.closes = self.closes.where(inside)
        self.dividends = {t: store.dividends(t) for t in columns} if cfg.total_return() else None
        self.liquidity = None  # per ticker on its own sessions, as the single-ticker books read it
        if cfg.execution.needs_liquidity:
            pairs = {t: cfg.execution.liquidity(store.closes(t), store.closes(t, "volume")) for t in columns}
            self.liquidity = tuple(pd.DataFrame({t: p[k] for t, p in pairs.items()}) for k in (0, 1))

    def held(self, days: pd.DatetimeIndex) -> np.ndarray:
        """Days x columns: who may be held from each close (the index ETF only if it is a member)."""
        return membership(self.spans, tuple(self.closes.columns), days)


    def days(self, window: Window) -> pd.DatetimeIndex:
        """The sessions of ``window`` (every session some ticker trades); a UsageError under two."""
        days = self.closes.index[(self.closes.index >= window.start) & (self.closes.index <= window.end)]
        if len(days) < 2:
            raise UsageError(f"fewer than two sessions in {window.name}")
        return days


def decide(policy: PortfolioPolicy, closes: pd.DataFrame, held: np.ndarray, days: pd.DatetimeIndex,
           start: pd.Timestamp | None = None) -> np.ndarray:
    """The policy's weights at each close of ``days`` but the last, each from the closes up to that close only (a
    NaN row: no order); ``start`` is the book's first session (``days[0]`` unless it continues an earlier window's)."""
    out = np.zeros((len(days) - 1, closes.shape[1]))
    for i, day in enumerate(days[:-1]):
        w = np.asarray(policy(closes.loc[:day], held[i], days[0] if start is None else start), float)
        if w.shape == (closes.shape[1],) and np.isnan(w).all():  # no order: the book's weights drift on
            out[i] = w
            continue
        if w.shape != (closes.shape[1],) or not np.isfinite(w).all() or w.min() < -1e-12 or w.sum() > 1 + 1e-9:
            raise ValueError(f"weights on {day:%Y-%m-%d} are no long-only allocation of at most 1: {w}")
        out[i] = w
    return out


class PolicyBook:
    """A baseline of :mod:`baselines.portfolio`: a pure function of the closes cut at each decision close."""

    llm, model = False, None

    def __init__(self, label: str, policy: PortfolioPolicy, closes: pd.DataFrame):
        self.label, self.policy, self.closes = label, policy, closes

    def weights(self, window: Window, days: pd.DatetimeIndex, held: np.ndarray, legs: Legs, start: pd.Timestamp,
                carried: np.ndarray) -> np.ndarray:
        return decide(self.policy, self.closes.loc[:window.end], held, days, start)


#: The trained agents of the portfolio track (baselines.sb3.PortfolioSB3), in the default roster.
TRAINED = ("ppo", "a2c")


def portfolio_books(cfg: RunConfig, store: Store, uni: Universe, governor: ApiGovernor | None = None
                    ) -> tuple[list, dict[str, str]]:
    """The run's books in order (the benchmark first) and the agents skipped with why. ``--agents`` takes the
    portfolio baselines, ppo, a2c and the built-in LLMs (default: the baselines and the SB3 agents), ``--model`` any
    LLM of the single-ticker roster (API models share ``governor``: the run's rate limits and budget); a plug-in
    (``--agent``) has no portfolio interface and is refused."""
    names = cfg.agents.agents if cfg.agents.agents is not None else (*PORTFOLIO_BASELINES, *TRAINED)
    known = (*PORTFOLIO_BASELINES, *TRAINED, *BUILTIN_LLMS)
    unknown = [n for n in names if n not in known]
    if unknown or cfg.agents.agent:
        raise UsageError(f"--portfolio replays {', '.join(known)} and --model LLMs; not "
                         f"{', '.join([*unknown, *cfg.agents.agent])}")
    llm_mode = cfg.portfolio.portfolio_llm_mode
    flag = [m for m in cfg.agents.model if m.partition(":")[0] in MODEL_CLASSES]
    if flag and llm_mode == "allocation":
        raise UsageError(f"{', '.join(flag)}: a FLAG-TRADER checkpoint makes per-ticker calls; use "
                         "--portfolio-llm-mode decisions")
    bench = cfg.portfolio.portfolio_benchmark
    columns = tuple(uni.closes.columns)
    books: list = []
    skipped: dict[str, str] = {}
    for name in dict.fromkeys((bench, *names, *cfg.agents.model)):
        if name in PORTFOLIO_BASELINES:
            policy = PORTFOLIO_BASELINES[name]
            if name == "index_etf":
                if uni.index is None:
                    skipped[name] = f"--index-etf {cfg.portfolio.index_etf} is not in the store"
                    continue
                policy = partial(policy, ticker=cfg.portfolio.index_etf)
            books.append(PolicyBook(name, policy, uni.closes))
        elif name in TRAINED:
            books.append(SB3Book(name, cfg, store, columns))
        else:
            for spec in llm_specs(name, cfg, governor):
                if spec.unavailable:
                    skipped[spec.label] = spec.unavailable
                else:
                    books.append(LLMBook(spec, cfg, store, columns, Path(cfg.outputs.out)))
    return books, skipped


def replay_portfolio(protocol: list[Window], uni: Universe, books: list, cfg: RunConfig, executor=None,
                     shard: Path | None = None) -> dict[Window, tuple[dict[str, pd.DataFrame], dict[str, str]]]:
    """Window -> (agent -> its book over the window, :func:`~tr1_env.evaluation.portfolio.portfolio_book`'s columns
    plus ``decision_date``; agent -> why its decisions failed: those have no book).

    Each agent's windows are decided in order by ``executor`` (:mod:`benchmarks.portfolio_cells`; default: in this
    process), the agents side by side, and booked here. A book continues its window before's where the two touch (no
    gap between): those weights earn the boundary session with no order, and the agent decides from the weights they
    drifted to; the chain's first session is the start a policy may read (1/N bought and held buys there only). An
    LLM's window saved in the run folder under the same fingerprint is reloaded, a new one saved as it comes back;
    with ``shard`` (a shard's folder) each cell is also recorded there for ``tr1 bench merge``."""
    executor = executor or InProcessBooks(uni, books, cfg)
    by_label = {b.label: b for b in books}
    columns = [f"w_{t}" for t in uni.closes.columns]
    spans, start = [], None  # per window: days, members, the boundary's legs when it continues, chain start, legs
    for k, window in enumerate(protocol):
        days = uni.days(window)
        joined = k > 0 and continues(pd.DataFrame(index=spans[-1][0]), uni.closes.index.to_series(), days)
        edge = days.insert(0, uni.closes.index[uni.closes.index < days[0]][-1])[:2] if joined else None
        start = start if joined else days[0]
        spans.append((days, uni.held(days), None if edge is None else Legs(
            uni.priced.loc[edge], uni.opens.loc[edge], cfg.execution, uni.dividends, uni.liquidity), start, Legs(
            uni.priced.loc[days], uni.opens.loc[days], cfg.execution, uni.dividends, uni.liquidity)))
    frames: dict[tuple[str, int], pd.DataFrame] = {}
    errors: dict[tuple[str, int], str] = {}

    def book(label: str, k: int, before: pd.DataFrame | None, cell: BookCell, decided: Decided, saved: bool) -> None:
        if shard is not None:
            record(shard, cell, decided)
        if decided.error is not None:
            errors[label, k] = decided.error
            print(f"failed {label} in {cell.window.name}: {decided.error}", file=sys.stderr)
        else:
            if decided.payload is not None and not saved:
                by_label[label].keep(cell.window, decided.payload)
            days, legs = spans[k][0], spans[k][4]
            frame = portfolio_book(decided.weights, legs, cfg.execution, before).assign(
                decision_date=pd.Series(days[:-1], index=days[1:]))
            frames[label, k] = frame if before is None else pd.concat(
                [before.iloc[-1:].assign(decision_date=pd.NaT), frame])
        if k + 1 < len(protocol):
            ready.append((label, k + 1))

    ready, inflight = [(b.label, 0) for b in books], 0
    with executor:
        while ready or inflight:
            while ready and inflight < executor.capacity:
                label, k = ready.pop(0)
                days, held, boundary, start, _ = spans[k]
                before = frames.get((label, k - 1)) if boundary is not None else None
                if before is not None:  # the boundary session: the weights held into it drift on, no order
                    before = portfolio_book(np.full((1, len(columns)), np.nan), boundary, cfg.execution, before)
                carried = np.zeros(len(columns)) if before is None else before[columns].iloc[-1].to_numpy(dtype=float)
                cell = BookCell(label, protocol[k], start, carried)
                llm = by_label[label].llm and executor.asks
                if llm and (saved := by_label[label].saved(cell.window, held, carried)) is not None:
                    book(label, k, before, cell, Decided(np.array(saved["weights"], float), saved), True)
                else:
                    executor.submit((label, k, before, cell), cell)
                    inflight += 1
            if inflight:
                for (label, k, before, cell), decided in executor.wait():
                    inflight -= 1
                    book(label, k, before, cell, decided, False)
    labels = [b.label for b in books]
    return {w: ({a: frames[a, k] for a in labels if (a, k) in frames},
                {a: errors[a, k] for a in labels if (a, k) in errors}) for k, w in enumerate(protocol)}


def signal_board(books: dict[Window, dict[str, pd.DataFrame]], uni: Universe, bench: str, cfg: RunConfig
                 ) -> pd.DataFrame:
    """Agent -> the rank IC of its active weights (the position its order reached minus ``bench``'s, decision day by
    decision day) with the next session's and the next ``SIGNAL_HORIZON`` sessions' returns (HAC intervals and
    p-values), and the p-values Holm-adjusted over the agents (one family per horizon)."""
    prefix = [f"p_{t}" for t in uni.closes.columns]
    tests = {}
    for agent in dict.fromkeys(a for per in books.values() for a in per):
        rows = []
        for per in books.values():
            if agent in per:
                frame = per[agent][per[agent]["decision_date"].notna()]  # a boundary session decides nothing
                decided = pd.DatetimeIndex(frame["decision_date"])  # each row's position was decided the close before
                weights = pd.DataFrame(frame[prefix].to_numpy(), decided, uni.closes.columns)
                reference = pd.DataFrame(per[bench].loc[frame.index, prefix].to_numpy(), decided, uni.closes.columns)
                held = pd.DataFrame(uni.held(decided.append(frame.index[-1:]))[:-1], decided, uni.closes.columns)
                rows.append(weight_rows(weights, reference, held, uni.closes, SIGNAL_HORIZON))
        tests[agent] = {"n_calls": float(sum(len(r) for r in rows)),
                        **ic_tests(pd.concat(rows), SIGNAL_HORIZON, cfg.statistics.alpha)}
    board = pd.DataFrame(tests).T
    for key in ("ic_p", "ic_h_p"):
        tested = board[key].notna()
        board[f"{key}_holm"] = np.nan
        if tested.any():
            board.loc[tested, f"{key}_holm"] = multipletests(board.loc[tested, key], method="holm")[1]
    return board


def worker_books(cfg: RunConfig, governor: ApiGovernor | None = None) -> tuple[Universe, dict]:
    """A Ray worker's universe and books (label -> book) for the run's settings, its API models drawing on
    ``governor`` (the run's, shared as a Ray actor)."""
    store = Store(cfg.window.store)
    uni = Universe(store, cfg)
    return uni, {b.label: b for b in portfolio_books(cfg, store, uni, governor)[0]}


def portfolio_plan(cfg: RunConfig) -> list[str]:
    """The run's cells by name (``agent in window``), window by window in the books' order: what a merge expects."""
    store = Store(cfg.window.store)
    books, _ = portfolio_books(cfg, store, Universe(store, cfg))
    return [f"{b.label} in {w.name}" for w in cfg.window.protocol() for b in books]


def run_portfolio(cfg: RunConfig, executor=None) -> pd.DataFrame:
    """The portfolio track: every window replayed, ``leaderboard_portfolio.csv/.md/.html``, the per-window
    ``windows_portfolio.csv`` and each agent's book under ``portfolio/``; returns the leaderboard.

    The cells (an agent over a window) run on ``--executor`` (or ``executor``: a merge's, which reads shards);
    ``--shard I/N`` decides the I-th of N shards' agents (dealt round-robin) and records their cells only (no
    report; ``attrs["shard"]``: its number of cells), which ``tr1 bench merge`` joins."""
    t0 = time.time()
    if cfg.api.dry_run:  # refused rather than ignored: a dry run must never ask
        raise UsageError("--dry-run estimates the single-ticker track's API calls; the portfolio track has no "
                         "estimate (its saved windows' cost is printed before the first call)")
    out = check_out(cfg.outputs.out, cfg.outputs.force)
    store = Store(cfg.window.store)
    uni = Universe(store, cfg)
    governor = ApiGovernor(*cfg.api.rates(), cfg.api.max_cost_usd)
    books, skipped = portfolio_books(cfg, store, uni, governor)
    api = [b for b in books if b.llm and b.spec.api]
    if api:  # the saved windows' calls count against --max-cost-usd, as the single-ticker run's saved decisions
        spent = sum(b.spent() for b in api)
        charge_saved(governor, cfg, spent, [b.spec.model for b in api if model_price(b.spec.model) is None])
        print(f"API cost: ${spent:.2f} so far (the saved windows of {', '.join(b.label for b in api)})",
              file=sys.stderr)
    found = cutoffs([b.spec for b in books if b.llm], cfg)
    protocol = cfg.window.protocol()
    record = RunRecord(new_run_id(), {**flat_dict(cfg), "base_url": redact_url(cfg.agents.base_url)},
                       [w.name for w in protocol], {"universe": list(uni.tickers)},
                       "total" if cfg.total_return() else "price",
                       cutoffs={label: dataclasses.asdict(c) for label, c in found.items()})
    begin_run(out, record.meta())
    for label, why in skipped.items():
        print(f"skipping {label}: {why}", file=sys.stderr)
    shard = cfg.distribution.shard_of()
    mine = books if shard is None else books[shard[0] - 1::shard[1]]
    executor = executor or book_executor(cfg, uni, mine, worker_books, governor)
    replayed = replay_portfolio(protocol, uni, mine, cfg, executor, None if shard is None else out)
    if shard is not None:
        return _finish_shard(out, record, replayed, skipped, t0)
    failed = _failures(replayed)
    # an agent that failed in any window has no whole book: it is in no table (its saved windows are kept)
    agents = [b.label for b in books if b.label not in failed]
    books_by_window = {w: {a: per[a] for a in agents} for w, (per, _) in replayed.items()}
    (out / "portfolio").mkdir(exist_ok=True)
    chained = {name: pd.concat([b[name] for b in books_by_window.values()]) for name in agents}
    for name, frame in chained.items():
        write_csv(out / "portfolio" / f"{name}.csv", frame, date_format="%Y-%m-%d", float_format="%.8g")
    costs = cost_table({name: {"portfolio": (frame, frame["decision_date"].dropna().to_frame())}
                        for name, frame in chained.items()}, cfg)
    write_csv(out / "costs.csv", costs, index=False, float_format="%.6g")
    bench = cfg.portfolio.portfolio_benchmark
    results = {w: {a: {"portfolio": (frame, None)} for a, frame in per.items()} for w, per in books_by_window.items()}
    returns = portfolios(results)
    windows = pd.DataFrame([{"agent": a, "window_start": f"{w.start:%Y-%m-%d}", "window_end": f"{w.end:%Y-%m-%d}",
                             "cr": cumulative_return(f["return"]),
                             "sharpe": sharpe(f["return"], cfg.statistics.risk_free),
                             "mdd": max_drawdown(f["return"]), "turnover": YEAR * f["turnover"].mean(),
                             "n_days": len(f)} for w, per in books_by_window.items() for a, f in per.items()])
    write_csv(out / "windows_portfolio.csv", windows, index=False, float_format="%.6g")
    stats = cfg.statistics
    table = compare(returns, bench, stats.alpha, max(stats.bootstrap, 100), stats.block, cfg.seed, stats.risk_free,
                    min_days=stats.min_days, trials=stats.trials)
    turnover = {a: YEAR * frame["turnover"].mean() for a, frame in chained.items()}
    llms = {b.label: b for b in books if b.llm and b.label in agents}
    board = table.rename(columns={"excess_sharpe": "excess_sharpe_vs_buy_and_hold"}).assign(
        n_windows=len(protocol), n_tickers=len(uni.tickers), turnover=pd.Series(turnover),
        pre_cutoff_share=pd.Series({a: found[a].share_before(b.decided) for a, b in llms.items()}, dtype=float))
    signals = signal_board(books_by_window, uni, bench, cfg)
    board = board.join(signals.drop(columns=list(board.columns), errors="ignore"))
    board = board.reset_index().reindex(columns=[c.name for c in PORTFOLIO_COLUMNS])
    write_csv(out / "leaderboard_portfolio.csv", board, index=False, float_format="%.6g")
    family = portfolio_family_note(table, len(returns), stats.alpha, bench)
    notes = [*synthetic_note(store.synthetic),
             f"Portfolio track over {len(uni.tickers)} tickers ({', '.join(uni.tickers)}) plus cash; benchmark: "
             f"{bench} ({'1/N of the universe bought and held' if bench == 'buy_and_hold' else uni.index}). Weights "
             "drift with prices between decisions; turnover is the mean daily sum |target - drifted weight| x "
             f"{YEAR}. Walk-forward books are continuous (the weights held at a window's last close earn the next "
             f"window's first session). Execution: {cfg.execution.describe()}; "
             f"{'total' if cfg.total_return() else 'price'} returns."]
    if llms:
        notes.append(f"LLM agents decide by {cfg.portfolio.portfolio_llm_mode} (--portfolio-llm-mode): " + (
            "one prompt over the universe answered with JSON weights, read strictly; an invalid answer is a failed "
            "decision" if cfg.portfolio.portfolio_llm_mode == "allocation" else
            "a Trading-R1 call per ticker; each of the n tickers gets 1/n times its call's weight (STRONG_BUY 1, "
            "BUY 0.5, HOLD and the sells 0)") + "; 'decision days before cutoff' is the share of an LLM's decision "
            "days on or before its training cutoff.")
    if failed or skipped:
        notes.append("Not ranked: " + "; ".join([*(f"{a} (failed in {', '.join(e)})" for a, e in failed.items()),
                                                 *(f"{a} (skipped: {why})" for a, why in skipped.items())]) +
                     " (rerun to retry).")
    title = f"tr1 portfolio {'walk-forward ' if len(protocol) > 1 else ''}leaderboard, {cfg.window.start} to " \
            f"{cfg.window.end}"
    write_text(out / "leaderboard_portfolio.html", render_page(
        title, record.run_id, board, cfg, family, notes, heatmap(results, cfg, bench), returns, {}, [], bench,
        PORTFOLIO_COLUMNS, "one book per agent over the universe plus cash"))
    board.attrs = {**table.attrs, "family": family, "failed": failed, "skipped": skipped}
    write_text(out / "leaderboard_portfolio.md", markdown(md_frame(board), cfg, PORTFOLIO_COLUMNS) + "\n"
               + cost_markdown(costs, cfg, "agent (one book over the universe)"))
    finish_run(out, replace(record, wall_time_s=round(time.time() - t0, 1), failed=failed, skipped=skipped).meta(),
               "failed" if failed or skipped else "complete")
    return board


def _failures(replayed: dict) -> dict[str, dict[str, str]]:
    """Agent -> window -> why its decisions failed there."""
    failed: dict[str, dict[str, str]] = {}
    for w, (_, errors) in replayed.items():
        for label, error in errors.items():
            failed.setdefault(label, {})[w.name] = error
    return failed


def _finish_shard(out: Path, record: RunRecord, replayed: dict, skipped: dict[str, str], t0: float) -> pd.DataFrame:
    """A shard's folder finished: its cells (under ``portfolio/cells``) and ``cells.json``, no report."""
    cells = [{"agent": a, "window": w.name, "failed": {w.name: errors[a]} if a in errors else {}}
             for w, (books, errors) in replayed.items() for a in [*books, *errors]]
    write_json(out / SHARD_CELLS, {"shard": record.config["shard"], "cells": cells})
    failed = _failures(replayed)
    finish_run(out, replace(record, wall_time_s=round(time.time() - t0, 1), failed=failed, skipped=skipped).meta(),
               "failed" if failed or skipped else "complete")
    summary = pd.DataFrame()
    summary.attrs.update(failed=failed, skipped=skipped, shard=len(cells))
    return summary


def portfolio_family_note(table: pd.DataFrame, n_days: int, alpha: float, benchmark: str) -> str:
    """The single-ticker family note with the portfolio track's signal test in place of the calls' tests."""
    return family_note(table, n_days, alpha, benchmark, signals=(
        "Active-weight IC tests the weights themselves: the daily rank correlation, across the tickers that may be "
        f"held (at least 5), of the position each book's order reached minus {benchmark}'s with the next session's "
        f"and the {SIGNAL_HORIZON}-session return, averaged over decision days, Newey-West CI and p; 'Holm p' "
        "adjusts it over the agents (one family per horizon)."))
