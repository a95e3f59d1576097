"""The walk-forward verdict: one equal-weight portfolio series per agent, tested against buy-and-hold.

Writes ``windows.csv`` (agent x ticker x window metrics), ``leaderboard.csv`` (:func:`tr1_env.evaluation.stats.compare`
on the portfolio series) and ``leaderboard.html`` (a static page rendered by a jinja2 template from these
tables; the template computes nothing). The CSV, the page and the markdown all read one table, :data:`COLUMNS`:
a new statistic is one row there (and its computation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmarks.escaping import html_environment
from benchmarks.mapping import Mapper, in_order
from benchmarks.plots import equity_png
from benchmarks.report import BENCHMARK, slug, write_csv, write_tearsheets, write_text
from tr1_env.contamination.cutoffs import Cutoff
from tr1_env.core.actions import Action
from tr1_env.evaluation.backtest import holding_returns
from tr1_env.evaluation.metrics import cumulative_return, hit_rate, max_drawdown, sharpe
from tr1_env.evaluation.signals import decision_rows, signal_tests
from tr1_env.evaluation.stats import compare
from tr1_env.evaluation.windows import Window
from tr1_env.scoring.labels import LabelConfig, make_labels

if TYPE_CHECKING:
    from benchmarks.config import RunConfig

#: The label horizon of the signal tests' ``ic_h``: the heaviest-weighted horizon of the Trading-R1 labels (7).
SIGNAL_HORIZON = LabelConfig().horizons[int(np.argmax(LabelConfig().weights))]
#: (daily accounting, decisions) per window, agent and ticker.
WindowResults = dict[Window, dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]]]


def portfolio(per_ticker: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.Series:
    """The equal-weight portfolio of one agent's per-ticker books, rebalanced daily: the mean daily net return."""
    return pd.concat({t: f["return"] for t, (f, _) in per_ticker.items()}, axis=1).mean(axis=1).rename("return")


def portfolios(results: WindowResults) -> pd.DataFrame:
    """Date x agent daily portfolio returns over every window, windows in order (one series per agent)."""
    agents = list(dict.fromkeys(a for per in results.values() for a in per))
    return pd.concat([pd.DataFrame({a: portfolio(results[w][a]) for a in agents if a in results[w]})
                      for w in results]).sort_index()


def signal_table(results: WindowResults, closes: dict[str, pd.Series], cfg: RunConfig) -> pd.DataFrame:
    """Every agent x ticker x decision day of the run: ``agent, ticker`` and
    :func:`tr1_env.evaluation.signals.decision_rows`, the labels' thresholds fitted per window on the
    ``cfg.agents.train_years`` before it (no price after ``train_until``); the benchmark's single standing order has no
    rows."""
    frames, keys = [], {"agent": [], "ticker": []}
    for w, per in results.items():
        labels = {}  # a ticker's labels for the window, fitted once whoever decided on it
        for agent, tickers in per.items():
            for ticker, (_, decisions) in tickers.items():
                if isinstance(decisions.index, pd.DatetimeIndex):
                    if ticker not in labels:
                        labels[ticker] = make_labels(
                            closes[ticker], w.train_until - pd.Timedelta(days=round(365.25 * cfg.agents.train_years)),
                            w.train_until, w.start, w.end)["label"]
                    frames.append(decision_rows(decisions["action"], closes[ticker], SIGNAL_HORIZON, labels[ticker]))
                    keys["agent"].append(agent)
                    keys["ticker"].append(ticker)
    columns = ["agent", "ticker", "date", "score", "fwd_1", "fwd_h", "label"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    sizes = [len(f) for f in frames]  # the keys set once on the whole table, not on each ticker's rows
    return out.assign(**{k: np.repeat(np.array(v, dtype=object), sizes) for k, v in keys.items()})[columns]


def signals_by_window(results: WindowResults, closes: dict[str, pd.Series], cfg: RunConfig,
                      mapper: Mapper = in_order) -> pd.DataFrame:
    """:func:`signal_table` window by window through ``mapper`` (an executor's workers), joined in window order."""
    parts = [p for p in mapper(signal_table, [({w: per},) for w, per in results.items()], closes=closes, cfg=cfg)
             if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else signal_table({}, closes, cfg)


def _agent_signals(signals: pd.DataFrame, cfg: RunConfig) -> dict:
    stats = cfg.statistics
    return signal_tests(signals, SIGNAL_HORIZON, stats.alpha, max(stats.bootstrap, 100), stats.block, cfg.seed)


def signal_board(signals: pd.DataFrame, cfg: RunConfig, mapper: Mapper = in_order) -> pd.DataFrame:
    """Agent -> the :data:`~tr1_env.evaluation.signals.SIGNAL_COLUMNS` of its rows of :func:`signal_table`, the
    agents' tests through ``mapper``."""
    groups = list(signals.groupby("agent", sort=False))
    tests = mapper(_agent_signals, [(g,) for _, g in groups], cfg=cfg)
    return pd.DataFrame(dict(zip([a for a, _ in groups], tests))).T


def window_table(results: WindowResults, cfg: RunConfig) -> pd.DataFrame:
    """windows.csv: one row per agent, ticker and window."""
    rows = []
    for w, per in results.items():
        for agent, tickers in per.items():
            for ticker, (frame, _) in tickers.items():
                r = frame["return"].to_numpy()
                held = holding_returns(frame)
                rows.append({"agent": agent, "ticker": ticker, "window_start": f"{w.start:%Y-%m-%d}",
                             "window_end": f"{w.end:%Y-%m-%d}", "cr": cumulative_return(r),
                             "sharpe": sharpe(r, cfg.statistics.risk_free),
                             "hit_rate": hit_rate([Action[a].direction for a in held["action"]],
                                                  held["forward_return"]),
                             "mdd": max_drawdown(r), "n_days": len(r)})
    return pd.DataFrame(rows)


def heatmap(results: WindowResults, cfg: RunConfig, benchmark: str = BENCHMARK) -> pd.DataFrame:
    """Window x agent: the portfolio's Sharpe in that window minus the benchmark's (buy-and-hold's)."""
    out = {}
    for w, per in results.items():
        bench = sharpe(portfolio(per[benchmark]), cfg.statistics.risk_free)
        out[w.name] = {a: sharpe(portfolio(t), cfg.statistics.risk_free) - bench for a, t in per.items()
                       if a != benchmark}
    return pd.DataFrame(out).T


def _colour(x: float, scale: float = 8.0) -> str:
    """Diverging red-white-green background for an excess Sharpe (grey when undefined)."""
    if not np.isfinite(x):
        return "#e5e5e5"
    v = max(-1.0, min(1.0, x / scale))
    r, g, b = (255, round(255 * (1 + v)), round(255 * (1 + v))) if v < 0 else (round(255 * (1 - v)), 255,
                                                                                round(255 * (1 - v)))
    return f"#{r:02x}{g:02x}{b:02x}"


def write_portfolio_tearsheets(per_window: WindowResults, cfg: RunConfig, folder: Path) -> dict[str, str]:
    """A quantstats tearsheet of each agent's equal-weight portfolio over all windows, against buy-and-hold's;
    returns agent -> path relative to the run folder."""
    returns = portfolios(per_window)
    results = {a: {"portfolio": (returns[[a]].rename(columns={a: "return"}), None)} for a in returns.columns}
    bench = {"portfolio": returns[[BENCHMARK]].rename(columns={BENCHMARK: "return"})}
    write_tearsheets(results, bench, cfg, folder)
    return {a: f"{folder.name}/{slug(a)}__portfolio.html" for a in returns.columns
            if (folder / f"{slug(a)}__portfolio.html").exists()}


def _fmt(x, digits: int = 2, pct: bool = False) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100 * x:+.1f}%" if pct else f"{x:.{digits}f}"


def _share(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


@dataclass(frozen=True)
class Column:
    """A leaderboard.csv column; with a ``header`` (``{level}``: the confidence level in %) also a column of the page
    and the markdown, whose ``cell`` prints it from the board's row (it may print the row's other columns beside it,
    a CI or a p-value). An ``optional`` column is shown only when some agent has a value."""

    name: str
    header: str | None = None
    cell: Callable[[Any], str] | None = None
    optional: bool = False


#: The leaderboard, in leaderboard.csv's order; the page and the markdown show the columns with a header in the same
#: order, but the verdict last (the page colours that cell by it).
COLUMNS: tuple[Column, ...] = (
    Column("agent", "agent", lambda r: r.agent),
    *map(Column, ("n_windows", "n_tickers", "n_days")),
    Column("span", "span", lambda r: r.span if isinstance(r.span, str) else "", optional=True),
    Column("cr", "CR", lambda r: _fmt(r.cr, pct=True)),
    Column("sharpe", "Sharpe [{level}% CI]", lambda r: f"{_fmt(r.sharpe)} [{_fmt(r.sharpe_lo)}, {_fmt(r.sharpe_hi)}]"),
    *map(Column, ("sharpe_lo", "sharpe_hi", "sharpe_ci_note")),
    Column("excess_sharpe_vs_buy_and_hold", "excess Sharpe (p)",
           lambda r: f"{_fmt(r.excess_sharpe_vs_buy_and_hold)} ({_fmt(r.excess_sharpe_p, 3)})"),
    Column("excess_sharpe_p"),
    Column("min_detectable_excess_sharpe", "detectable excess Sharpe", lambda r: _fmt(r.min_detectable_excess_sharpe)),
    Column("spa_p", "SPA p (mean return)", lambda r: _fmt(r.spa_p, 3)),
    Column("in_mcs", "in MCS ({level}%)", lambda r: _fmt(r.in_mcs)),
    Column("psr", "PSR / DSR", lambda r: f"{_fmt(r.psr)} / {_fmt(r.deflated_sharpe)}"),
    *map(Column, ("deflated_sharpe", "n_calls")),
    Column("ic", "IC [{level}% CI] (p)",
           lambda r: f"{_fmt(r.ic, 3)} [{_fmt(r.ic_lo, 3)}, {_fmt(r.ic_hi, 3)}] ({_fmt(r.ic_p, 3)})"),
    *map(Column, ("ic_lo", "ic_hi", "ic_p")),
    Column("ic_h", f"IC {SIGNAL_HORIZON}d (p)", lambda r: f"{_fmt(r.ic_h, 3)} ({_fmt(r.ic_h_p, 3)})"),
    *map(Column, ("ic_h_lo", "ic_h_hi", "ic_h_p")),
    Column("accuracy", "accuracy (prior / majority)",
           lambda r: f"{_share(r.accuracy)} ({_share(r.accuracy_prior)} / {_share(r.accuracy_majority)})"),
    *map(Column, ("accuracy_lo", "accuracy_hi", "accuracy_prior", "accuracy_majority")),
    Column("macro_f1", "macro-F1 (majority)", lambda r: f"{_fmt(r.macro_f1)} ({_fmt(r.macro_f1_majority)})"),
    *map(Column, ("macro_f1_lo", "macro_f1_hi", "macro_f1_majority")),
    Column("hit_rate", "hit rate [{level}% CI]",
           lambda r: f"{_share(r.hit_rate)} [{_share(r.hit_rate_lo)}, {_share(r.hit_rate_hi)}]"),
    *map(Column, ("hit_rate_lo", "hit_rate_hi")),
    Column("verdict", "verdict vs buy-and-hold", lambda r: r.verdict),
    Column("pre_cutoff_share", "decision days before cutoff",
           lambda r: "" if np.isnan(r.pre_cutoff_share) else f"{100 * r.pre_cutoff_share:.0f}%", optional=True),
)


def weight_ic_column(key: str, header: str, interval: bool = True) -> Column:
    """A signal column of the portfolio track (``ic`` or ``ic_h`` of active weights): the mean IC, its CI (with
    ``interval``), its p and its p Holm-adjusted over the agents (``<key>_p_holm``); "n/a" alone without an IC."""
    def cell(r) -> str:
        ci = f" [{_fmt(getattr(r, f'{key}_lo'), 3)}, {_fmt(getattr(r, f'{key}_hi'), 3)}]" if interval else ""
        return (f"{_fmt(getattr(r, key), 3)}{ci} ({_fmt(getattr(r, f'{key}_p'), 3)} / "
                f"{_fmt(getattr(r, f'{key}_p_holm'), 3)})" if np.isfinite(getattr(r, key)) else "n/a")

    return Column(key, header, cell, optional=True)


def display_table(board: pd.DataFrame, level: int, columns: tuple[Column, ...] | None = None
                  ) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of cells that the page and the markdown print (see :data:`COLUMNS`, the default of
    ``columns``)."""
    shown = [c for c in columns or COLUMNS if c.header is not None and not (c.optional and board[c.name].isna().all())]
    shown.sort(key=lambda c: c.name == "verdict")
    return [c.header.format(level=level) for c in shown], [[c.cell(r) for c in shown] for r in board.itertuples()]


def pre_cutoff_shares(results: WindowResults, cutoffs: dict[str, Cutoff]) -> dict[str, float]:
    """The contamination flag of every LLM agent over the whole span: the share of its decision days (all windows
    and tickers) on or before its model's training cutoff."""
    days: dict[str, list] = {}
    for per_agent in results.values():
        for agent, per_ticker in per_agent.items():
            if agent in cutoffs:
                days.setdefault(agent, []).extend(d for _, decisions in per_ticker.values() for d in decisions.index)
    return {agent: cutoffs[agent].share_before(d) for agent, d in days.items()}


#: The family note's sentence on the signal tests of five-way calls.
CALL_SIGNALS = ("IC, accuracy and hit rate test the calls themselves over every ticker-day (IC: daily rank correlation "
                f"of the call with the next session's and the {SIGNAL_HORIZON}-session return, Newey-West CI).")


def family_note(table: pd.DataFrame, n_days: int, alpha: float, benchmark: str = BENCHMARK,
                signals: str = CALL_SIGNALS) -> str:
    """The paragraph under the table: which test decides what, the whole-family SPA and what the span can detect;
    ``signals`` says what the signal columns test."""
    agents = len(table) - 1
    return (f"Verdict: the Sharpe-ratio difference to {benchmark} (studentized, block bootstrap), one two-sided "
            f"Romano-Wolf step-down over the {agents} agents at family-wise {alpha:g}; fewer than "
            f"{table.attrs['min_days']} days is 'too short'. SPA p tests the mean daily return instead (Hansen, "
            f"studentized); over all {agents} agents at once: p = {_fmt(table.attrs['spa_p_all'], 3)}. Over {n_days} "
            f"days, a one-sided mean-return test at {alpha:g} (Bonferroni over the agents) detects with 80% power an "
            f"information ratio of the daily difference agent - {benchmark} of {table.attrs['min_detectable_ir']:.2f}; "
            "'detectable excess Sharpe' is the Sharpe difference the verdict detects with 80% power at each agent's "
            f"correlation with {benchmark}. {signals} Deflated Sharpe for "
            f"{table.attrs['n_trials']} trial(s); the benchmark is no trial (its PSR is shown).")


def compare_by_span(returns: pd.DataFrame, cfg: RunConfig) -> tuple[pd.DataFrame, str]:
    """:func:`~tr1_env.evaluation.stats.compare` and its note, once per span: agents replayed over different days
    (``--history-start``) are each compared with buy-and-hold over their own days only, one family per span
    (longest first; buy-and-hold's row is its longest span's). ``span`` (``first..last day``) is set only when
    the spans differ, so a run whose agents share one span keeps its table."""
    stats = cfg.statistics
    days = {a: (returns[a].first_valid_index(), returns[a].last_valid_index()) for a in returns.columns}
    groups: dict[tuple, list[str]] = {}
    for agent in returns.columns:
        groups.setdefault(days[agent], []).append(agent)
    tables, notes = [], []
    for (lo, hi), agents in sorted(groups.items(), key=lambda g: g[0][0]):
        frame = returns.loc[lo:hi, list(dict.fromkeys([BENCHMARK, *agents]))]
        table = compare(frame, BENCHMARK, stats.alpha, max(stats.bootstrap, 100), stats.block, cfg.seed,
                        stats.risk_free, min_days=stats.min_days, trials=stats.trials)
        note = family_note(table, len(frame), stats.alpha)
        if len(groups) > 1:
            table["span"] = f"{lo:%Y-%m-%d}..{hi:%Y-%m-%d}"
            note = f"Span {lo:%Y-%m-%d}..{hi:%Y-%m-%d} ({', '.join(a for a in agents if a != BENCHMARK)}): {note}"
        tables.append(table if not tables else table.drop(index=BENCHMARK))
        notes.append(note)
    out = pd.concat(tables)
    out.attrs = tables[0].attrs
    return out, " ".join(notes)


def write_leaderboard(results: WindowResults, cfg: RunConfig, out: Path, notes: list[str],
                      tearsheets: dict[str, str], run_id: str = "",
                      cutoffs: dict[str, Cutoff] | None = None, signals: pd.DataFrame | None = None,
                      mapper: Mapper = in_order) -> pd.DataFrame:
    """windows.csv, leaderboard.csv, leaderboard.html under ``out`` (each written atomically; the page carries
    the run id); returns the leaderboard. ``cutoffs`` (LLM agent -> its model's cutoff) fill the
    ``pre_cutoff_share`` column: NaN for agents that learnt nothing before the span. ``signals``
    (:func:`signal_table`) fill the signal-test columns (NaN without). ``mapper`` runs the windows' rows and the
    agents' signal tests (an executor's workers; in order here by default)."""
    parts = [p for p in mapper(window_table, [({w: per},) for w, per in results.items()], cfg=cfg) if len(p)]
    windows = pd.concat(parts, ignore_index=True) if parts else window_table({}, cfg)
    write_csv(out / "windows.csv", windows, index=False, float_format="%.6g")
    returns = portfolios(results)
    table, family = compare_by_span(returns, cfg)
    counts = windows.groupby("agent").agg(n_windows=("window_start", "nunique"), n_tickers=("ticker", "nunique"))
    board = table.join(counts).rename(columns={"excess_sharpe": "excess_sharpe_vs_buy_and_hold"})
    if signals is not None and len(signals):
        board = board.join(signal_board(signals, cfg, mapper))
    board["pre_cutoff_share"] = pd.Series(pre_cutoff_shares(results, cutoffs or {}), dtype=float)
    board = board.reset_index().reindex(columns=[c.name for c in COLUMNS])
    write_csv(out / "leaderboard.csv", board, index=False, float_format="%.6g")
    notes = [*notes, *sample_spread(board)]
    title = f"tr1 {'walk-forward ' if len(results) > 1 else ''}leaderboard, {cfg.window.start} to {cfg.window.end}"
    per_ticker = sorted(p.relative_to(out).as_posix() for p in (out / "tearsheets").glob("*.html")
                        if not p.name.endswith("__portfolio.html")) if (out / "tearsheets").exists() else []
    page = render_page(title, run_id, board, cfg, family, notes, heatmap(results, cfg), returns, tearsheets,
                       per_ticker)
    write_text(out / "leaderboard.html", page)
    board.attrs = {**table.attrs, "family": family}
    return board


def render_page(title: str, run_id: str, board: pd.DataFrame, cfg: RunConfig, family: str, notes: list[str],
                heat: pd.DataFrame, returns: pd.DataFrame, tearsheets: dict[str, str], per_ticker: list[str],
                benchmark: str = BENCHMARK, columns: tuple[Column, ...] | None = None, book: str | None = None
                ) -> str:
    """The leaderboard page: the board's :data:`COLUMNS` (or ``columns``), the window heatmap and the equity
    curves of ``returns`` against ``benchmark``; ``book`` names what each agent's series is (default: the
    equal-weight portfolio of its per-ticker books)."""
    header, cells = display_table(board, round(100 * (1 - cfg.statistics.alpha)), columns)
    rows = [{"cells": row, "verdict": r.verdict.split()[0], "tearsheet": tearsheets.get(r.agent)}
            for r, row in zip(board.itertuples(), cells)]
    return _template().render(
        title=title, run_id=run_id, header=header, rows=rows, family=family, notes=list(dict.fromkeys([*notes])),
        heat_agents=list(heat.columns), heat_rows=[{"window": w, "cells": [
            {"text": _fmt(heat.loc[w, a]), "colour": _colour(heat.loc[w, a])} for a in heat.columns]}
            for w in heat.index],
        equity_png=equity_png(returns, benchmark, *([f"{book}, net of costs"] if book else [])), per_ticker=per_ticker,
        **({"heading": f"Leaderboard: {book}"} if book else {}))


def sample_spread(board: pd.DataFrame) -> list[str]:
    """For LLMs replayed with ``--samples``: the spread of the Sharpe over samples (``label #seed`` rows), the
    model's own noise, to set beside each row's CI (the market's)."""
    base = board["agent"].str.extract(r"^(.*) #\d+$")[0]
    out = []
    for name, group in board[base.notna()].groupby(base[base.notna()], sort=False):
        sr = group["sharpe"].to_numpy(dtype=float)
        out.append(f"{name}: Sharpe over {len(sr)} samples mean {np.nanmean(sr):.2f}, "
                   f"sd {np.nanstd(sr, ddof=1):.2f}, range [{np.nanmin(sr):.2f}, {np.nanmax(sr):.2f}] "
                   "(sampling spread; each row's CI is market noise).")
    return out


def markdown(board: pd.DataFrame, cfg: RunConfig, columns: tuple[Column, ...] | None = None) -> str:
    """The leaderboard as a markdown table (README, terminal): the page's columns, without the windows."""
    header, rows = display_table(board, round(100 * (1 - cfg.statistics.alpha)), columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + board.attrs.get("family", "") + "\n"


def _template():
    return html_environment(Path(__file__).parent / "templates").get_template("leaderboard.html.j2")
