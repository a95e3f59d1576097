"""The portfolio track of ``benchmarks/run.py --portfolio``: each agent is one book over the universe plus cash.

Per window (one, or the walk-forward's), every portfolio agent (:data:`baselines.portfolio.PORTFOLIO_BASELINES`)
decides target weights at each session's close from the closes up to that close (cut there: nothing later is
passed), on the tickers that are members that day (:mod:`tr1_env.data.universe`), and the weights are booked by
:func:`tr1_env.evaluation.portfolio.portfolio_book` under the run's :class:`~tr1_env.execution.Execution`, the
Portfolio env's accounting. Each window's book starts in cash. The leaderboard is :mod:`benchmarks.leaderboard`'s,
on the books' daily returns, against ``--portfolio-benchmark`` (1/N of the universe bought and held, or the index
ETF), plus each book's annualised turnover.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from baselines.portfolio import PORTFOLIO_BASELINES, PortfolioPolicy
from benchmarks.config import RunConfig
from benchmarks.escaping import md_frame
from benchmarks.leaderboard import COLUMNS, Column, family_note, heatmap, markdown, portfolios, render_page
from benchmarks.notes import synthetic_note
from benchmarks.roster import UsageError
from benchmarks.run_folder import RunRecord, begin_run, check_out, finish_run, new_run_id, write_csv, write_text
from tr1_env.data.store import Store
from tr1_env.data.universe import load_universe, membership, universe
from tr1_env.evaluation.metrics import cumulative_return, max_drawdown, sharpe
from tr1_env.evaluation.portfolio import Legs, portfolio_book
from tr1_env.evaluation.stats import compare
from tr1_env.evaluation.windows import Window
from tr1_env.util.cli_args import flat_dict

#: Leaderboard columns of the tests of five-way calls.
CALL_TESTS = ("ic", "ic_h", "accuracy", "macro_f1", "hit_rate")

__all__ = ["PORTFOLIO_COLUMNS", "Universe", "decide", "run_portfolio"]

#: The single-ticker leaderboard's columns plus the book's turnover; the tests of five-way calls (IC, accuracy,
#: hit rate) stay in the CSV, shown only where an agent has them.
PORTFOLIO_COLUMNS: tuple[Column, ...] = (
    *(replace(c, optional=True) if c.name in CALL_TESTS else c for c in COLUMNS[:-1]),
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
        self.index = pc.index_etf
        if self.index not in store.tickers:
            raise UsageError(f"--index-etf: {self.index} is not in the store")
        columns = [*self.tickers, *([self.index] if self.index not in self.tickers else [])]
        self.closes = pd.DataFrame({t: store.closes(t) for t in columns}).sort_index()
        self.opens = pd.DataFrame({t: store.closes(t, "open") for t in columns}).reindex(self.closes.index)
        inside = pd.DataFrame(False, index=self.closes.index, columns=columns)
        for r in self.spans.itertuples(index=False):
            inside.loc[(inside.index >= r[1]) & (inside.index <= r[2]), r.ticker] = True
        self.priced = self.closes.where(inside.assign(**{self.index: True}))
        self.closes = self.closes.where(inside)
        self.dividends = {t: store.dividends(t) for t in columns} if cfg.window.total_return else None

    def held(self, days: pd.DatetimeIndex) -> np.ndarray:
        """Days x columns: who may be held from each close (the index ETF only if it is a member)."""
        return membership(self.spans, tuple(self.closes.columns), days)


def decide(policy: PortfolioPolicy, closes: pd.DataFrame, held: np.ndarray, days: pd.DatetimeIndex) -> np.ndarray:
    """The policy's weights at each close of ``days`` but the last, each from the closes up to that close only."""
    out = np.zeros((len(days) - 1, closes.shape[1]))
    for i, day in enumerate(days[:-1]):
        w = np.asarray(policy(closes.loc[:day], held[i], days[0]), float)
        if w.shape != (closes.shape[1],) or not np.isfinite(w).all() or w.min() < -1e-12 or w.sum() > 1 + 1e-9:
            raise ValueError(f"weights on {day:%Y-%m-%d} are no long-only allocation of at most 1: {w}")
        out[i] = w
    return out


def _agents(cfg: RunConfig) -> dict[str, PortfolioPolicy]:
    names = cfg.agents.agents or tuple(PORTFOLIO_BASELINES)
    unknown = [n for n in names if n not in PORTFOLIO_BASELINES]
    if unknown or cfg.agents.model or cfg.agents.agent:
        raise UsageError(f"--portfolio replays the portfolio agents {', '.join(PORTFOLIO_BASELINES)}; not "
                         f"{', '.join([*unknown, *cfg.agents.model, *cfg.agents.agent])}")
    bench = cfg.portfolio.portfolio_benchmark
    policies = {n: PORTFOLIO_BASELINES[n] for n in dict.fromkeys((bench, *names))}
    if "index_etf" in policies:
        policies["index_etf"] = lambda c, h, s, f=policies["index_etf"]: f(c, h, s, ticker=cfg.portfolio.index_etf)
    return policies


def replay_portfolio_window(window: Window, uni: Universe, policies: dict[str, PortfolioPolicy], cfg: RunConfig
                            ) -> dict[str, pd.DataFrame]:
    """Agent -> its book over ``window`` (:func:`~tr1_env.evaluation.portfolio.portfolio_book`'s columns)."""
    days = uni.closes.index[(uni.closes.index >= window.start) & (uni.closes.index <= window.end)]
    if len(days) < 2:
        raise UsageError(f"fewer than two sessions in {window.name}")
    held = uni.held(days)
    legs = Legs(uni.priced.loc[days], uni.opens.loc[days], cfg.execution, uni.dividends)
    return {name: portfolio_book(decide(policy, uni.closes.loc[:window.end], held, days), legs, cfg.execution)
            for name, policy in policies.items()}


def run_portfolio(cfg: RunConfig) -> pd.DataFrame:
    """The portfolio track: every window replayed, ``leaderboard_portfolio.csv/.md/.html``, the per-window
    ``windows_portfolio.csv`` and each agent's book under ``portfolio/``; returns the leaderboard."""
    t0 = time.time()
    unmodelled = cfg.execution.unmodelled_by_weights()
    if unmodelled:
        raise UsageError(f"--portfolio books fills and --cost-bps only; {', '.join(unmodelled)} would be ignored, "
                         "so it is refused (the single-ticker replay models them)")
    out = check_out(cfg.outputs.out, cfg.outputs.force)
    store = Store(cfg.window.store)
    uni = Universe(store, cfg)
    policies = _agents(cfg)
    protocol = cfg.window.protocol()
    record = RunRecord(new_run_id(), flat_dict(cfg), [w.name for w in protocol], {"universe": list(uni.tickers)},
                       "total" if cfg.window.total_return else "price")
    begin_run(out, record.meta())
    books = {w: replay_portfolio_window(w, uni, policies, cfg) for w in protocol}
    (out / "portfolio").mkdir(exist_ok=True)
    for name in policies:
        write_csv(out / "portfolio" / f"{name}.csv", pd.concat([b[name] for b in books.values()]),
                  date_format="%Y-%m-%d", float_format="%.8g")
    bench = cfg.portfolio.portfolio_benchmark
    results = {w: {a: {"portfolio": (frame, None)} for a, frame in per.items()} for w, per in books.items()}
    returns = portfolios(results)
    windows = pd.DataFrame([{"agent": a, "window_start": f"{w.start:%Y-%m-%d}", "window_end": f"{w.end:%Y-%m-%d}",
                             "cr": cumulative_return(f["return"]),
                             "sharpe": sharpe(f["return"], cfg.statistics.risk_free),
                             "mdd": max_drawdown(f["return"]), "turnover": YEAR * f["turnover"].mean(),
                             "n_days": len(f)} for w, per in books.items() for a, f in per.items()])
    write_csv(out / "windows_portfolio.csv", windows, index=False, float_format="%.6g")
    stats = cfg.statistics
    table = compare(returns, bench, stats.alpha, max(stats.bootstrap, 100), stats.block, cfg.seed, stats.risk_free,
                    min_days=stats.min_days, trials=stats.trials)
    turnover = {a: YEAR * pd.concat([per[a] for per in books.values()])["turnover"].mean() for a in policies}
    board = table.rename(columns={"excess_sharpe": "excess_sharpe_vs_buy_and_hold"}).assign(
        n_windows=len(protocol), n_tickers=len(uni.tickers), turnover=pd.Series(turnover))
    board = board.reset_index().reindex(columns=[c.name for c in PORTFOLIO_COLUMNS])
    write_csv(out / "leaderboard_portfolio.csv", board, index=False, float_format="%.6g")
    family = family_note(table, len(returns), stats.alpha, bench)
    notes = [*synthetic_note(store.synthetic),
             f"Portfolio track over {len(uni.tickers)} tickers ({', '.join(uni.tickers)}) plus cash; benchmark: "
             f"{bench} ({'1/N of the universe bought and held' if bench == 'buy_and_hold' else uni.index}). Weights "
             "drift with prices between decisions; turnover is the mean daily sum |target - drifted weight| x "
             f"{YEAR}. Execution: {cfg.execution.describe()}. IC, accuracy and hit rate are for five-way calls and "
             "are n/a here."]
    title = f"tr1 portfolio {'walk-forward ' if len(protocol) > 1 else ''}leaderboard, {cfg.window.start} to " \
            f"{cfg.window.end}"
    write_text(out / "leaderboard_portfolio.html", render_page(
        title, record.run_id, board, cfg, family, notes, heatmap(results, cfg, bench), returns, {}, [], bench,
        PORTFOLIO_COLUMNS, "one book per agent over the universe plus cash"))
    board.attrs = {**table.attrs, "family": family}
    write_text(out / "leaderboard_portfolio.md", markdown(md_frame(board), cfg, PORTFOLIO_COLUMNS))
    finish_run(out, replace(record, wall_time_s=round(time.time() - t0, 1)).meta(), "complete")
    return board
