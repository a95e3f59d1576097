"""Scoring a forward ledger: a replay of its decisions, with the replay's reports, plus days to a verdict.

Each agent of the ledger becomes a :class:`LedgerAgent` that answers, on every session of the span, the first
decision the ledger holds for that agent, ticker and session stamped before its deadline; a later ``--force``
entry for a session already decided is ignored, and a session without a decision (missed, or failed) keeps the
position held (no order was sent). :func:`benchmarks.run.run` books those answers with the house's ``Execution``
and writes summary, costs, windows, leaderboard and notes exactly as for any replay; ``forward.csv`` and
``forward.md`` add, per agent, the sessions decided, missed and failed, the superseding entries ignored and the
days to a verdict (:func:`tr1_env.evaluation.stats.days_to_verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from benchmarks.config import StatisticsConfig
from benchmarks.forward import LEDGER, ForwardRefused
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision, Observation
from tr1_env.evaluation.ledger import Ledger, verify
from tr1_env.evaluation.stats import days_to_verdict
from tr1_env.execution import Execution

__all__ = ["LedgerAgent", "ScoreConfig", "effective_decisions", "score"]


@dataclass
class ScoreConfig:
    """Where the ledger and the closes are, where the reports go, and the house's accounting and tests."""

    folder: str = field(metadata={"help": "forward folder (its ledger.jsonl)"})
    store: str = field(metadata={"help": "store folder with the closes the decisions traded on"})
    out: str | None = field(default=None, metadata={"help": "report folder (default: FOLDER/score)"})
    force: bool = field(default=False, metadata={
        "help": "write into an --out folder no tr1 run owns, beside its files"})
    tearsheets: bool = field(default=False, metadata={"help": "also write quantstats tearsheets"})
    execution: Execution = field(default_factory=Execution, metadata={
        "help": "costs (tr1_env.execution); the fill is the ledger's (next-open for decisions at the close, close "
                "for decisions before it)"})
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig, metadata={"help": StatisticsConfig.__doc__})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})


def effective_decisions(entries: list[dict]) -> tuple[dict[str, dict[tuple[str, str], dict]], dict[str, int]]:
    """Per agent, (ticker, day) -> the entry that decides it: the first ``decided`` entry stamped before its
    deadline. Also the number of later entries ignored per agent (``--force`` and retries of decided sessions)."""
    chosen: dict[str, dict[tuple[str, str], dict]] = {}
    ignored: dict[str, int] = {}
    for e in entries:
        if e.get("status") != "decided":
            continue
        mine = chosen.setdefault(e["agent"], {})
        if (e["ticker"], e["day"]) in mine or pd.Timestamp(e["ts"]) > pd.Timestamp(e["deadline"]):
            ignored[e["agent"]] = ignored.get(e["agent"], 0) + 1
            continue
        mine[(e["ticker"], e["day"])] = e
    return chosen, ignored


class LedgerAgent(Agent):
    """Answers what the ledger recorded; a session it holds no decision for keeps the position (no order)."""

    def __init__(self, decisions: dict[tuple[str, str], dict], weights: dict[Action, float]):
        self.decisions, self.weights = decisions, weights

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        out = []
        for obs in observations:
            e = self.decisions.get((obs.ticker, f"{obs.date:%Y-%m-%d}"))
            if e is None:
                keep = next(a for a, w in self.weights.items() if w == obs.position)
                out.append(Decision(keep, meta={"forward": "no decision: the position is kept"}))
            else:
                out.append(Decision(Action[e["decision"]], e.get("completion"), e.get("meta") or {}))
        return out


def score(cfg: ScoreConfig) -> pd.DataFrame:
    """The replay of the ledger's decisions (its summary table, as :func:`benchmarks.run.run` returns it)."""
    from benchmarks.config import RunConfig
    from benchmarks.roster import AgentSpec
    from benchmarks.run import run
    from tr1_env.data.store import Store

    folder = Path(cfg.folder)
    path = folder / LEDGER
    problems = verify(path)
    if problems:
        raise ForwardRefused(f"{path} does not verify ({len(problems)} problem(s); first: {problems[0]}): run "
                             "`tr1 forward verify`")
    entries = Ledger(path).entries()
    chosen, ignored = effective_decisions(entries)
    if not chosen:
        raise ForwardRefused(f"{path}: no decision to score")
    fills = {e["fill"] for e in entries}
    if len(fills) != 1:
        raise ForwardRefused(f"{path}: decisions with different fills ({', '.join(sorted(fills))}) are not one book")
    store = Store(cfg.store)
    tickers = tuple(dict.fromkeys(t for per in chosen.values() for t, _ in per))
    first = min(d for per in chosen.values() for _, d in per)
    last = min(store.trading_days(t)[-1] for t in tickers)
    if store.trading_days(tickers[0], first, last).size < 2:
        raise ForwardRefused(f"no close after the first decision ({first}) in {cfg.store} yet: nothing to score")
    rc = RunConfig.of(agents=(), tickers=tickers, start=first, end=f"{last:%Y-%m-%d}", store=cfg.store,
                      out=cfg.out or str(folder / "score"), force=cfg.force, tearsheets=cfg.tearsheets,
                      execution=cfg.execution, statistics=cfg.statistics, seed=cfg.seed).replace(fill=fills.pop())
    weights = rc.agents.weight_map()
    head = Ledger(path).head()[1]
    models = {e["agent"]: e.get("model") for e in entries}
    specs = [AgentSpec(label, lambda d=decided: LedgerAgent(d, weights), models.get(label) is not None,
                       {"ledger": str(path.resolve()), "head": head, "agent": label, "max_chars": 0},
                       model=models.get(label), numeric=True) for label, decided in chosen.items()]
    sessions = {t: store.trading_days(t, first, last)[:-1] for t in tickers}  # decided sessions of the span
    counts = _counts(entries, chosen, ignored, sessions)
    return run(rc, specs=specs, extra=lambda out, board: _write(out, board, counts, rc))


def _counts(entries: list[dict], chosen: dict, ignored: dict[str, int], sessions: dict[str, pd.DatetimeIndex]
            ) -> pd.DataFrame:
    """Per agent: ticker-sessions in the span, decided ones, failed ones (a failure and no decision), the rest
    missed, and the ledger entries the scorer ignored."""
    rows = []
    for agent, decided in chosen.items():
        span = {(t, f"{d:%Y-%m-%d}") for t, days in sessions.items() for d in days}
        failed = {(e["ticker"], e["day"]) for e in entries if e["agent"] == agent and e.get("status") == "failed"}
        got = span & set(decided)
        rows.append({"agent": agent, "sessions": len(span), "decided": len(got), "failed": len((span & failed) - got),
                     "missed": len(span - got - failed), "ignored_entries": ignored.get(agent, 0)})
    return pd.DataFrame(rows).set_index("agent")


def _write(out: Path, board: pd.DataFrame, counts: pd.DataFrame, rc) -> None:
    from benchmarks.escaping import md_cell
    from benchmarks.run_folder import write_csv, write_text

    rows = board.set_index("agent")
    table = counts.join(rows[["n_days", "excess_sharpe_vs_buy_and_hold", "min_detectable_excess_sharpe", "verdict"]],
                        how="left")
    table["days_to_verdict"] = [days_to_verdict(int(r.n_days), r.excess_sharpe_vs_buy_and_hold,
                                                r.min_detectable_excess_sharpe, r.verdict, rc.statistics.min_days)
                                if isinstance(r.verdict, str) else np.nan for r in table.itertuples()]
    write_csv(out / "forward.csv", table.reset_index(), index=False, float_format="%.6g")

    def cell(x) -> str:
        return "never (no difference)" if x == np.inf else ("n/a" if not np.isfinite(x) else f"{int(x)}")

    lines = ["# Forward test: days to a verdict", "",
             "| agent | sessions | decided | failed | missed | ignored entries | days | excess Sharpe | detectable | "
             "verdict | days to a verdict |", "|" + "---|" * 11]
    for r in table.itertuples():
        lines.append("| " + " | ".join(md_cell(str(x)) for x in (
            r.Index, r.sessions, r.decided, r.failed, r.missed, r.ignored_entries, r.n_days,
            f"{r.excess_sharpe_vs_buy_and_hold:+.2f}", f"{r.min_detectable_excess_sharpe:.2f}", r.verdict,
            cell(r.days_to_verdict))) + " |")
    lines += ["", "Days to a verdict: the further sessions after which the verdict could change if the excess Sharpe "
              "stayed as observed (the detectable difference at 80% power falls as 1/sqrt(n); "
              "tr1_env.evaluation.stats.days_to_verdict); 0 for a decided verdict. A session without a decision "
              "(missed or failed) keeps the position held."]
    write_text(out / "forward.md", "\n".join(lines) + "\n")
