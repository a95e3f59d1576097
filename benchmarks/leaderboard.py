"""The walk-forward verdict: one equal-weight portfolio series per agent, tested against buy-and-hold.

Writes ``windows.csv`` (agent x ticker x window metrics), ``leaderboard.csv`` (:func:`tr1_env.stats.compare`
on the portfolio series) and ``leaderboard.html`` (a static page rendered by a jinja2 template from these
tables; the template computes nothing).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmarks.escaping import html_environment
from benchmarks.report import BENCHMARK, _pyplot, slug, write_csv, write_tearsheets, write_text
from tr1_env.actions import Action
from tr1_env.backtest import holding_returns
from tr1_env.cutoffs import Cutoff
from tr1_env.metrics import cumulative_return, hit_rate, max_drawdown, sharpe
from tr1_env.protocol import Window
from tr1_env.stats import compare

if TYPE_CHECKING:
    from benchmarks.config import RunConfig

LEADERBOARD = ["agent", "n_windows", "n_tickers", "cr", "sharpe", "sharpe_lo", "sharpe_hi",
               "excess_sharpe_vs_buy_and_hold", "spa_p", "in_mcs", "deflated_sharpe", "verdict", "pre_cutoff_share"]
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
                             "sharpe": sharpe(r, cfg.risk_free),
                             "hit_rate": hit_rate([Action[a].direction for a in held["action"]],
                                                  held["forward_return"]),
                             "mdd": max_drawdown(r), "n_days": len(r)})
    return pd.DataFrame(rows)


def heatmap(results: WindowResults, cfg: RunConfig) -> pd.DataFrame:
    """Window x agent: the portfolio's Sharpe in that window minus buy-and-hold's."""
    out = {}
    for w, per in results.items():
        bench = sharpe(portfolio(per[BENCHMARK]), cfg.risk_free)
        out[w.name] = {a: sharpe(portfolio(t), cfg.risk_free) - bench for a, t in per.items() if a != BENCHMARK}
    return pd.DataFrame(out).T


def _colour(x: float, scale: float = 8.0) -> str:
    """Diverging red-white-green background for an excess Sharpe (grey when undefined)."""
    if not np.isfinite(x):
        return "#e5e5e5"
    v = max(-1.0, min(1.0, x / scale))
    r, g, b = (255, round(255 * (1 + v)), round(255 * (1 + v))) if v < 0 else (round(255 * (1 - v)), 255,
                                                                                round(255 * (1 - v)))
    return f"#{r:02x}{g:02x}{b:02x}"


def _equity_png(returns: pd.DataFrame) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 5))
    for agent in returns.columns:
        eq = (1 + returns[agent]).cumprod()
        ax.plot(eq.index, eq.to_numpy(), **({"color": "k", "ls": "--", "lw": 1.8, "label": f"{agent} (benchmark)"}
                                           if agent == BENCHMARK else {"lw": 1.1, "label": agent}))
    ax.set(ylabel="equity (start = 1)", title="Equal-weight portfolio per agent, net of costs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


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


def pre_cutoff_shares(results: WindowResults, cutoffs: dict[str, Cutoff]) -> dict[str, float]:
    """The contamination flag of every LLM agent over the whole span: the share of its decision days (all windows
    and tickers) on or before its model's training cutoff."""
    days: dict[str, list] = {}
    for per_agent in results.values():
        for agent, per_ticker in per_agent.items():
            if agent in cutoffs:
                days.setdefault(agent, []).extend(d for _, decisions in per_ticker.values() for d in decisions.index)
    return {agent: cutoffs[agent].share_before(d) for agent, d in days.items()}


def write_leaderboard(results: WindowResults, cfg: RunConfig, out: Path, notes: list[str],
                      tearsheets: dict[str, str], run_id: str = "",
                      cutoffs: dict[str, Cutoff] | None = None) -> pd.DataFrame:
    """windows.csv, leaderboard.csv, leaderboard.html under ``out`` (each written atomically; the page carries
    the run id); returns the leaderboard. ``cutoffs`` (LLM agent -> its model's cutoff) fill the
    ``pre_cutoff_share`` column: NaN for agents that learnt nothing before the span."""
    windows = window_table(results, cfg)
    write_csv(out / "windows.csv", windows, index=False, float_format="%.6g")
    returns = portfolios(results)
    table = compare(returns, BENCHMARK, cfg.alpha, max(cfg.bootstrap, 100), cfg.block, cfg.seed, cfg.risk_free)
    counts = windows.groupby("agent").agg(n_windows=("window_start", "nunique"), n_tickers=("ticker", "nunique"))
    board = table.join(counts).rename(columns={"excess_sharpe": "excess_sharpe_vs_buy_and_hold"})
    board["pre_cutoff_share"] = pd.Series(pre_cutoff_shares(results, cutoffs or {}), dtype=float)
    board = board.reset_index()[LEADERBOARD]
    write_csv(out / "leaderboard.csv", board, index=False, float_format="%.6g")
    mde = table.attrs["min_detectable_sharpe"]
    family = (f"SPA over all {len(board) - 1} agents at once: p = {_fmt(table.attrs['spa_p_all'], 3)}. "
              f"Over {len(returns)} days, a one-sided test at {cfg.alpha:g} (Bonferroni over the agents) detects an "
              f"annualised Sharpe of the daily difference agent - {BENCHMARK} of {mde:.2f} with 80% power; smaller "
              "edges cannot be told apart from luck here.")
    notes = [*notes, *sample_spread(board)]
    heat = heatmap(results, cfg)
    level = round(100 * (1 - cfg.alpha))
    rows = [{"cells": [r.agent, str(r.n_windows), str(r.n_tickers), _fmt(r.cr, pct=True), _fmt(r.sharpe),
                       f"[{_fmt(r.sharpe_lo)}, {_fmt(r.sharpe_hi)}]", _fmt(r.excess_sharpe_vs_buy_and_hold),
                       _fmt(r.spa_p, 3), _fmt(bool(r.in_mcs)), _fmt(r.deflated_sharpe),
                       "" if np.isnan(r.pre_cutoff_share) else f"{100 * r.pre_cutoff_share:.0f}%", r.verdict],
             "verdict": r.verdict.split()[0], "tearsheet": tearsheets.get(r.agent)} for r in board.itertuples()]
    page = _template().render(
        title=f"tr1 {'walk-forward ' if len(results) > 1 else ''}leaderboard, {cfg.start} to {cfg.end}",
        run_id=run_id, header=["agent", "windows", "tickers", "CR", "Sharpe", f"{level}% CI", "excess Sharpe",
                               "SPA p", f"in MCS ({level}%)", "deflated Sharpe", "decision days before cutoff",
                               "verdict"],
        rows=rows, family=family, notes=list(dict.fromkeys([*notes])),
        heat_agents=list(heat.columns), heat_rows=[{"window": w, "cells": [
            {"text": _fmt(heat.loc[w, a]), "colour": _colour(heat.loc[w, a])} for a in heat.columns]}
            for w in heat.index],
        equity_png=_equity_png(returns),
        per_ticker=sorted(p.relative_to(out).as_posix() for p in (out / "tearsheets").glob("*.html")
                          if not p.name.endswith("__portfolio.html"))
        if (out / "tearsheets").exists() else [])
    write_text(out / "leaderboard.html", page)
    board.attrs = {**table.attrs, "family": family}
    return board


def sample_spread(board: pd.DataFrame) -> list[str]:
    """For LLMs replayed with ``--samples``: the spread of the Sharpe over samples (``label #seed`` rows), the
    model's own noise, to set beside each row's CI (the market's)."""
    base = board["agent"].str.extract(r"^(.*) #\d+$")[0]
    out = []
    for name, group in board[base.notna()].groupby(base[base.notna()], sort=False):
        sr = group["sharpe"].to_numpy(dtype=float)
        out.append(f"{name}: Sharpe over {len(sr)} samples mean {np.nanmean(sr):.2f}, sd {np.nanstd(sr, ddof=1):.2f}, "
                   f"range [{np.nanmin(sr):.2f}, {np.nanmax(sr):.2f}] (sampling spread; each row's CI is market noise).")
    return out


def markdown(board: pd.DataFrame, cfg: RunConfig) -> str:
    """The leaderboard as a markdown table (README, terminal)."""
    level = round(100 * (1 - cfg.alpha))
    llm = board["pre_cutoff_share"].notna().any()
    lines = [f"| agent | CR % | Sharpe [{level}% CI] | excess Sharpe | SPA p | in MCS | DSR | "
             + ("pre-cutoff days | " if llm else "") + "verdict vs buy-and-hold |",
             "|---|---|---|---|---|---|---|" + ("---|" if llm else "") + "---|"]
    for r in board.itertuples():
        flag = ("" if np.isnan(r.pre_cutoff_share) else f"{100 * r.pre_cutoff_share:.0f}%") + " | " if llm else ""
        lines.append(f"| {r.agent} | {_fmt(r.cr, pct=True)} | {_fmt(r.sharpe)} [{_fmt(r.sharpe_lo)}, "
                     f"{_fmt(r.sharpe_hi)}] | {_fmt(r.excess_sharpe_vs_buy_and_hold)} | {_fmt(r.spa_p, 3)} | "
                     f"{_fmt(bool(r.in_mcs))} | {_fmt(r.deflated_sharpe)} | {flag}{r.verdict} |")
    return "\n".join(lines) + "\n\n" + board.attrs.get("family", "") + "\n"


def _template():
    return html_environment(Path(__file__).parent / "templates").get_template("leaderboard.html.j2")
