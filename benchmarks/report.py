"""The replay's outputs: summary.csv, a paper-style summary.md, quantstats tearsheets and equity plots.

Everything here reads finished backtests; nothing decides or trades. Files are written through
:mod:`benchmarks.run_folder` (atomic, listed in the run's manifest); labels reach them escaped for each
format (:mod:`benchmarks.escaping`).
"""

from __future__ import annotations

import hashlib
import html
import json
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from benchmarks.config import BENCHMARK, RunConfig
from benchmarks.costs import cost_table
from benchmarks.escaping import Markdown, md_cell, plot_label
from benchmarks.mapping import Mapper, in_order
from benchmarks.notes import RunFacts, summary_notes
from benchmarks.plots import pyplot
from benchmarks.run_folder import claim, remove, write_csv, write_json, write_text
from tr1_env.contamination.cutoffs import Cutoff
from tr1_env.context.anonymize import DEFAULT_LEVEL, LABEL_SUFFIX
from tr1_env.core.actions import Action
from tr1_env.evaluation.backtest import holding_returns
from tr1_env.evaluation.metrics import (
    annual_volatility,
    cumulative_return,
    hit_rate,
    investorbench,
    max_drawdown,
    quantstats_stats,
    sharpe,
    sharpe_ci,
    sharpe_diff_ci,
    sharpe_diff_test,
)
from tr1_env.util.files import atomic_write

COLUMNS = ["agent", "ticker", "cr", "sharpe", "sharpe_lo", "sharpe_hi", "hit_rate", "mdd", "av", "n_days"]
MEMO_COLUMNS = ["agent", "ticker", "comparison", "statistic", "a", "b", "diff", "lo", "hi", "n_a", "n_b", "agreement"]

#: An agent's results per ticker: (daily accounting from tr1_env.evaluation.backtest, decisions by date).
Results = dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]]


def slug(label: str) -> str:
    """A file-name-safe agent label (``hf:/models/x`` -> ``hf_models_x``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def summarize(agent: str, ticker: str, frame: pd.DataFrame, decisions: pd.DataFrame, bench: pd.DataFrame,
              cfg: RunConfig) -> dict:
    """One summary row: the paper's metrics, the bootstrap CI and test, then extras (InvestorBench, quantstats)."""
    bench = bench.loc[frame.index]  # over the agent's own days (an agent's span may be shorter than the benchmark's)
    r, b = frame["return"].to_numpy(), bench["return"].to_numpy()
    held, stats = holding_returns(frame), cfg.statistics
    lo, hi = sharpe_ci(r, stats.risk_free, stats.bootstrap, 1 - stats.alpha, stats.block, cfg.seed)
    diff, p = sharpe_diff_test(r, b, stats.risk_free, stats.bootstrap, stats.block, cfg.seed)
    ib = investorbench(frame["position"], frame["asset_return"])
    metas = [m for m in decisions["meta"] if isinstance(m, dict)]
    failed = sum(bool(m.get("parse_failed")) for m in metas)
    forced = sum(bool(m.get("parse_failed") and m.get("forced_decision")) for m in metas)
    return {
        "agent": agent, "ticker": ticker, "cr": cumulative_return(r), "sharpe": sharpe(r, stats.risk_free),
        "sharpe_lo": lo, "sharpe_hi": hi,
        "hit_rate": hit_rate([Action[a].direction for a in held["action"]], held["forward_return"]),
        "mdd": max_drawdown(r), "av": annual_volatility(r), "n_days": len(r),
        "sharpe_minus_bh": diff, "p_value": p, "beats_bh": bool(np.isfinite(p) and diff > 0 and p < stats.alpha),
        "n_decisions": len(decisions), "directional": int(sum(Action[a].direction != 0 for a in decisions["action"])),
        "parse_failed": failed, "forced": forced, "ib_cr": ib["cr"], "ib_sharpe": ib["sharpe"], "ib_av": ib["av"],
        **quantstats_stats(frame["return"], bench["return"], stats.risk_free),
    }


def _summary_row(agent: str, ticker: str, frame: pd.DataFrame, decisions: pd.DataFrame,
                 bench: dict[str, pd.DataFrame], cfg: RunConfig) -> dict:
    """:func:`summarize` of one agent x ticker, ``bench`` every ticker's (shared by the rows a mapper sends)."""
    return summarize(agent, ticker, frame, decisions, bench[ticker], cfg)


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.2f}"


def _num(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, every cell through :func:`md_cell` (a label cannot end a row or add markup)."""
    lines = ["| " + " | ".join(map(md_cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(md_cell, r)) + " |" for r in rows])


def markdown(summary: pd.DataFrame, cfg: RunConfig, notes: list[str]) -> str:
    """The paper's Tables 3-4 re-laid: one table per metric (agents x tickers, best in bold), then CIs and ``notes``
    (:func:`benchmarks.notes.summary_notes`)."""
    agents, tickers = list(dict.fromkeys(summary["agent"])), list(dict.fromkeys(summary["ticker"]))
    cell = summary.set_index(["agent", "ticker"])
    metrics = [("cr", "Cumulative return (CR, %)", _pct, max), ("sharpe", "Sharpe ratio (SR)", _num, max),
               ("hit_rate", "Hit rate (HR, %)", _pct, max), ("mdd", "Maximum drawdown (MDD, %)", _pct, min)]
    best = {(t, m): pick(v for v in cell.xs(t, level="ticker")[m] if np.isfinite(v))
            for t in tickers for m, _, _, pick in metrics if cell.xs(t, level="ticker")[m].notna().any()}
    per_metric = []
    for m, name, fmt, _ in metrics:
        rows = [[a, *["failed" if (a, t) not in cell.index  # its replay failed: listed in the notes
                      else Markdown(f"**{fmt(v)}**") if best.get((t, m)) == (v := cell.loc[(a, t), m]) else fmt(v)
                      for t in tickers]] for a in agents]
        per_metric += [f"## {name}", _table(["Agent", *tickers], rows)]

    level = round(100 * (1 - cfg.statistics.alpha))
    ci_rows = [[a, *[Markdown(f"{_num(c.sharpe)} [{_num(c.sharpe_lo)}, {_num(c.sharpe_hi)}] p={_num(c.p_value)}"
                              f"{' *' if c.beats_bh else ''}") if (a, t) in cell.index else "failed"
                     for t in tickers for c in [cell.loc[(a, t)] if (a, t) in cell.index else None]]]
               for a in agents]
    ib_rows = [[a, *[f"{_pct(cell.loc[(a, t), 'ib_cr'])} / {_num(cell.loc[(a, t), 'ib_sharpe'])}"
                     if (a, t) in cell.index else "failed" for t in tickers]] for a in agents]
    return "\n\n".join([
        f"# Held-out replay {cfg.window.start} to {cfg.window.end}", *per_metric,
        f"## Sharpe with {level}% bootstrap CI and test against {BENCHMARK}",
        _table(["Agent", *tickers], ci_rows),
        "## InvestorBench metrics (FLAG-TRADER): CR = sum of log rewards, %, / Sharpe (rf 0, no costs)",
        _table(["Agent", *tickers], ib_rows),
        "## Notes", "\n".join(f"- {n}" for n in notes)]) + "\n"


def readme_table(summary: pd.DataFrame) -> str:
    """The README's default-run table (agents x tickers, "CR % / Sharpe"), so published figures come from a run."""
    cell = summary.set_index(["agent", "ticker"])
    tickers = list(dict.fromkeys(summary["ticker"]))

    def figures(agent: str, ticker: str) -> str:
        if (agent, ticker) not in cell.index:
            return "failed"
        return f"{100 * cell.loc[(agent, ticker), 'cr']:+.1f} / {_num(cell.loc[(agent, ticker), 'sharpe'])}"

    agents = dict.fromkeys(summary["agent"])
    return _table(["agent", *tickers], [[a, *[figures(a, t) for t in tickers]] for a in agents])



def drawing_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes for plots and tearsheets: matplotlib and quantstats draw on one core each.

    Forked where the OS allows (workers inherit the loaded modules; they never touch torch), one per core.
    """
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    return ProcessPoolExecutor(max(1, min(jobs, os.cpu_count() or 1)), mp_context=context)


def _plot_ticker(ticker: str, curves: dict[str, pd.Series], benchmark: pd.Series, start: pd.Timestamp,
                 path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for agent, eq in curves.items():
        ax.plot(pd.concat([pd.Series([1.0], [start]), eq]), label=plot_label(agent), lw=1.2)
    ax.plot(pd.concat([pd.Series([1.0], [start]), benchmark]), "k--", label=f"{BENCHMARK} (benchmark)", lw=1.5)
    ax.set(title=f"{ticker}: equity, net of costs", ylabel="equity (start = 1)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))  # claimed by plot_equity
    plt.close(fig)


def plot_equity(results: Results, bench: dict[str, pd.DataFrame], folder: Path,
                pool: ProcessPoolExecutor | None = None) -> None:
    """One PNG per ticker: every agent's equity curve, the buy-and-hold benchmark dashed (drawn in ``pool``)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(ticker, {agent: per[ticker][0]["equity"] for agent, per in results.items()
                      if ticker in per and agent != BENCHMARK},
             b["equity"], pd.Timestamp(b["decision_date"].iloc[0]),  # the first session: equity 1 at its close
             claim(folder / f"equity_{ticker}.png")) for ticker, b in bench.items()]
    list((pool.map if pool is not None else map)(_plot_ticker, *zip(*jobs)) if jobs else [])


def _tearsheet(returns: pd.Series, benchmark: pd.Series, risk_free: float, title: str, path: Path) -> str | None:
    """Draw one tearsheet (at a path its run claimed); the error (for the report's notes) if quantstats could not."""
    plt = pyplot()
    title = html.escape(title)  # quantstats pastes the title into its page as it is
    import quantstats as qs

    # quantstats cannot regress a series on itself (buy-and-hold) or on a constant: those get a solo report
    for against in (benchmark, None):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                # match_dates=False: the whole window, as in summary.csv (quantstats would otherwise start where
                # the first series stops being flat)
                atomic_write(path, lambda tmp: qs.reports.html(
                    returns, benchmark=against, rf=risk_free, output=str(tmp), match_dates=False,
                    title=title if against is not None else f"{title} (no benchmark panel)"))
            return None
        except Exception as exc:  # noqa: BLE001 - quantstats' many failure modes on degenerate series
            error = f"{path.name} ({type(exc).__name__}: {str(exc)[:80]})"
        finally:
            plt.close("all")
    return error


def write_tearsheets(results: Results, bench: dict[str, pd.DataFrame], cfg: RunConfig, folder: Path,
                     pool: ProcessPoolExecutor | None = None) -> list[str]:
    """quantstats HTML per agent and ticker against buy-and-hold given as a Series (a ticker string would call Yahoo).

    Drawn in ``pool`` when given. A tearsheet whose inputs are unchanged since the last run is kept; returns
    the ones quantstats could not draw.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index_file = folder / "digests.json"
    try:
        digests = json.loads(index_file.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: every tearsheet is drawn again
        digests = {}
    expected = {f"{slug(a)}__{t}.html" for a, per in results.items() for t in per}
    portfolio = all(t == "portfolio" for per in results.values() for t in per)  # the leaderboard's share the folder
    for stale in folder.glob("*.html"):  # another run's agents or tickers
        if stale.name not in expected and stale.name.endswith("__portfolio.html") == portfolio:
            remove(stale)  # only if a run wrote it
    jobs = {}
    for agent, per in results.items():
        for ticker in per:
            path = folder / f"{slug(agent)}__{ticker}.html"
            returns = per[ticker][0]["return"].rename(agent)
            benchmark = bench[ticker]["return"].rename(BENCHMARK)
            digest = hashlib.sha256(pd.util.hash_pandas_object(pd.concat([returns, benchmark], axis=1)).to_numpy()
                                    .tobytes() + repr((cfg.statistics.risk_free, agent, ticker)).encode()).hexdigest()
            if not (path.exists() and digests.get(path.name) == digest):
                title = f"{agent} on {ticker}, {cfg.window.start} to {cfg.window.end}"
                jobs[path.name, digest] = (returns, benchmark, cfg.statistics.risk_free, title, claim(path))
    drawn = (pool.map if pool is not None else map)(_tearsheet, *zip(*jobs.values())) if jobs else []
    failed = []
    for (name, digest), error in zip(jobs, tqdm(drawn, total=len(jobs), desc="tearsheets", unit="html")):
        if error is None:
            digests[name] = digest
        else:
            failed.append(error)
    write_json(index_file, {k: v for k, v in digests.items() if (folder / k).exists()})
    return failed


def flag_contamination(summary: pd.DataFrame, results: Results, cutoffs: dict[str, Cutoff]) -> pd.DataFrame:
    """Every LLM row gets its model's cutoff, how it is known (flagged unless published or set), and the share of
    its decision days up to it."""
    summary = summary.copy()
    rows = [cutoffs.get(a) for a in summary["agent"]]
    summary["cutoff"] = [f"{c.date:%Y-%m-%d}" if c and c.date is not None else ("unknown" if c else "") for c in rows]
    summary["cutoff_basis"] = [c.basis if c else "" for c in rows]
    summary["cutoff_flagged"] = [c.flagged if c else np.nan for c in rows]  # not a published cutoff
    summary["pre_cutoff_share"] = [c.share_before(results[a][t][1].index) if c else np.nan
                                   for c, a, t in zip(rows, summary["agent"], summary["ticker"])]
    return summary


def _pooled(series: list[pd.Series]) -> pd.Series:
    """An equal-weight portfolio of the tickers' daily returns (days all of them traded)."""
    return pd.concat(series, axis=1, join="inner").mean(axis=1)


def memorisation(results: Results, bench: dict[str, pd.DataFrame], cutoffs: dict[str, Cutoff],
                 cfg: RunConfig) -> pd.DataFrame:
    """What the model may be remembering, per LLM and ticker (and ``all``: the equal-weight portfolio of several).

    ``anonymized - plain``: Sharpe on anonymized contexts minus Sharpe on the plain ones, same days, paired
    bootstrap CI, and the share of decisions that agree. ``pre - post cutoff``: the information ratio against
    buy-and-hold on the days up to the model's cutoff minus after it (independent bootstrap CIs).
    """
    stats = cfg.statistics
    rows, boot = [], dict(n_boot=stats.bootstrap, level=1 - stats.alpha, mean_block=stats.block, seed=cfg.seed)
    returns = {a: {t: frame["return"] for t, (frame, _) in per.items()} for a, per in results.items()}
    market = {t: b["return"] for t, b in bench.items()}

    def series(per_ticker: dict[str, pd.Series], t: str) -> pd.Series:
        return _pooled(list(per_ticker.values())) if t == "all" else per_ticker[t]

    for plain in [a for a in cutoffs if not a.endswith(LABEL_SUFFIX) and a + LABEL_SUFFIX in results]:
        anon = plain + LABEL_SUFFIX
        tickers = [t for t in results[plain] if t in results[anon]]
        for t in [*tickers, *(["all"] if len(tickers) > 1 else [])]:
            a, b = series(returns[anon], t).align(series(returns[plain], t), join="inner")
            actions = [results[anon][u][1]["action"].align(results[plain][u][1]["action"], join="inner")
                       for u in (tickers if t == "all" else [t])]
            same = np.concatenate([(x == y).to_numpy() for x, y in actions])
            diff, lo, hi = sharpe_diff_ci(a, b, stats.risk_free, paired=True, **boot)
            rows.append([plain, t, "anonymized - plain", "Sharpe", sharpe(a, stats.risk_free),
                         sharpe(b, stats.risk_free),
                         diff, lo, hi, len(a), len(b), float(same.mean()) if len(same) else np.nan])
    for agent, cutoff in cutoffs.items():
        if cutoff.date is None:
            continue
        for t in [*results[agent], *(["all"] if len(results[agent]) > 1 else [])]:
            r = series(returns[agent], t)
            active = (r - series({u: market[u] for u in results[agent]}, t).reindex(r.index)).dropna()
            pre, post = active[active.index <= cutoff.date], active[active.index > cutoff.date]
            if len(pre) < 2 or len(post) < 2:
                continue
            diff, lo, hi = sharpe_diff_ci(pre, post, 0.0, paired=False, **boot)
            rows.append([agent, t, "pre - post cutoff", f"information ratio vs {BENCHMARK}", sharpe(pre, 0.0),
                         sharpe(post, 0.0), diff, lo, hi, len(pre), len(post), np.nan])
    return pd.DataFrame(rows, columns=MEMO_COLUMNS)


def contamination_markdown(summary: pd.DataFrame, memo: pd.DataFrame, cutoffs: dict[str, Cutoff],
                           cfg: RunConfig) -> str:
    """The contamination section of summary.md: each LLM's cutoff and flag, then the memorisation checks."""
    level = round(100 * (1 - cfg.statistics.alpha))
    rows = []
    for agent, c in cutoffs.items():
        share = summary.loc[summary["agent"] == agent, "pre_cutoff_share"]
        rows.append([agent, "unknown (pass --cutoff)" if c.date is None else f"{c.date:%Y-%m-%d}", c.basis,
                     _pct(share.mean()) if len(share) else "n/a", c.source])
    parts = ["## Contamination: training cutoffs",
             _table(["Agent", "Cutoff", "Basis", "Decision days up to the cutoff %", "Source"], rows),
             "A model may have read how the market moved on any decision day up to its cutoff; a release date is only "
             "an upper bound of the cutoff. `--post-cutoff` moves the window after the latest cutoff, `--memorisation` "
             f"replays each LLM on anonymized contexts too (level {cfg.contamination.anonymize or DEFAULT_LEVEL}: "
             "tr1_env.context.anonymize)."]
    if len(memo):
        fmt = [[r.agent, r.ticker, r.comparison, r.statistic, _num(r.a), _num(r.b),
                Markdown(f"{_num(r.diff)} [{_num(r.lo)}, {_num(r.hi)}]"), f"{r.n_a}/{r.n_b}",
                _pct(r.agreement) if np.isfinite(r.agreement) else ""] for r in memo.itertuples(index=False)]
        parts += [f"## Memorisation checks (difference with {level}% bootstrap CI)",
                  _table(["Agent", "Ticker", "Comparison", "Statistic", "a", "b", "a - b [CI]", "days a/b",
                          "same decision %"], fmt),
                  "anonymized - plain: the same days, so a CI away from 0 means the names, dates or price levels "
                  "changed the model's calls (a gain from the plain context is consistent with memory). "
                  "pre - post cutoff: information ratio against buy-and-hold before and after the cutoff."]
    return "\n\n".join(parts) + "\n"


def _usd(x: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:,.{digits}f}"


def cost_markdown(table: pd.DataFrame, cfg: RunConfig, per: str = "agent x ticker") -> str:
    """The cost table of ``summary.md`` (and of the portfolio leaderboard): one row per book, USD, what the returns
    include; ``per`` says what a book is."""
    header = ["Agent", "Ticker", "Commission", "Slippage + impact", "Borrow", "Cash interest", "Unfilled",
              "LLM $ / decision", "LLM $ (run)", "Total (bps of capital)"]
    rows = [[r.agent, r.ticker, _usd(r.commission_usd), _usd(r.slippage_usd + r.impact_usd), _usd(r.borrow_usd),
             _usd(r.interest_usd), _usd(r.unfilled_usd), _usd(r.llm_usd_per_decision, 4), _usd(r.llm_usd, 4),
             f"{_usd(r.total_usd)} ({r.total_bps:.1f})"] for r in table.itertuples()]
    returns = "total returns (dividends at ex-date)" if cfg.total_return() else "price returns (no dividends)"
    return "\n\n".join([
        "## What the books paid (USD)", _table(header, rows),
        f"USD on a ${cfg.execution.capital:,.0f} book per {per}; {returns}. Unfilled: value of the orders "
        "the volume cap left undone. LLM: tokens x tr1_env/data/model_prices.csv (n/a: model or token counts "
        f"unknown), {'charged to' if cfg.execution.charge_llm_cost else 'not charged to'} the book "
        "(--charge-llm-cost). Total: commission + slippage + impact + borrow - interest (+ LLM when charged)."]) + "\n"


def write_reports(results: Results, bench: dict[str, pd.DataFrame], cfg: RunConfig, out: Path, facts: RunFacts,
                  run_id: str = "", mapper: Mapper = in_order) -> pd.DataFrame:
    """summary.csv, summary.md, plots/ and tearsheets/ under ``out`` (and memorisation.csv when an LLM ran);
    returns the summary table. ``facts``: the run's windows, coverage, absences and the LLM rows' cutoffs;
    ``mapper`` runs the summary rows (an executor's workers; in order here by default)."""
    pyplot()  # before quantstats imports pyplot
    cutoffs = {label: c for label, c in facts.cutoffs.items() if label in results}
    rows = mapper(_summary_row, [(a, t, frame, decisions) for a, per in results.items()
                                 for t, (frame, decisions) in per.items()], bench=bench, cfg=cfg)
    summary = pd.DataFrame(rows, columns=None if rows else COLUMNS)
    if rows:
        summary = flag_contamination(summary, results, cutoffs)
    write_csv(out / "summary.csv", summary, index=False, float_format="%.6g")
    costs = cost_table(results, cfg)
    write_csv(out / "costs.csv", costs, index=False, float_format="%.6g")
    memo = memorisation(results, bench, cutoffs, cfg) if cutoffs else pd.DataFrame(columns=MEMO_COLUMNS)
    if cutoffs:
        write_csv(out / "memorisation.csv", memo, index=False, float_format="%.6g")
    with drawing_pool(len(bench) + (len(rows) if cfg.outputs.tearsheets else 0)) as pool:
        plot_equity(results, bench, out / "plots", pool)
        failed = write_tearsheets(results, bench, cfg, out / "tearsheets", pool) if cfg.outputs.tearsheets else []
    if not cfg.outputs.tearsheets:  # none of another run's per-ticker sheets stays beside this run's reports
        for stale in (out / "tearsheets").glob("*.html"):
            if not stale.name.endswith("__portfolio.html"):
                remove(stale)
    extra = {"tearsheets": "quantstats failed on " + "; ".join(failed)} if failed else {}
    text = markdown(summary, cfg, summary_notes(cfg, facts, summary, extra)) if rows else "No agent was replayed.\n"
    if rows and cutoffs:
        text += "\n" + contamination_markdown(summary, memo, cutoffs, cfg)
    if rows:
        text += "\n" + cost_markdown(costs, cfg)
    write_text(out / "summary.md", f"{text}\nRun id: {run_id}\n")
    return summary
