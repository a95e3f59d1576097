"""The leaderboard's power curve: planted agents with a known edge, replayed through the walk-forward and its tests.

A planted agent reads the next session's close on a seeded share ``p`` of its ticker-days (STRONG_BUY before a rise,
STRONG_SELL before a fall) and takes a uniformly random action on the others. Its decisions go through the same
windows (:meth:`benchmarks.config.RunConfig.protocol`), accounting (:func:`tr1_env.evaluation.backtest.backtest`,
costs and fills), equal-weight portfolio, :func:`tr1_env.evaluation.stats.compare` and signal tests
(:func:`benchmarks.leaderboard.signal_table`) as a replayed agent's; only the observation step is skipped, since the
agent reads none. Each seed is one family (buy-and-hold and one planted agent per share), like a leaderboard of that
many agents. The table gives, per share and test, how often the edge is found; its ``p = 0`` row is the
false-positive rate. Planted agents read the future on purpose: they exist here and in tests, and are never offered
as an agent.

    python benchmarks/calibrate.py [--seeds 20] [--shares 0 0.01 0.02 0.05 0.1 0.2] [--csv power.csv]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmarks.config import RunConfig
from benchmarks.leaderboard import BENCHMARK, SIGNAL_HORIZON, portfolios, signal_board, signal_table
from tr1_env.core.actions import Action
from tr1_env.data.store import Store
from tr1_env.evaluation.backtest import backtest, buy_and_hold, decision_days
from tr1_env.evaluation.stats import compare
from tr1_env.execution import Execution
from tr1_env.util.cli_args import add_dataclass_args, from_args

#: Detection rule of each test: the leaderboard row -> found (a positive, significant edge).
TESTS = {
    "verdict beats": lambda r, alpha: r["verdict"] == "beats",
    "SPA p < alpha": lambda r, alpha: r["spa_p"] < alpha,
    "IC > 0, p < alpha": lambda r, alpha: r["ic"] > 0 and r["ic_p"] < alpha,
    f"IC {SIGNAL_HORIZON}d > 0, p < alpha": lambda r, alpha: r["ic_h"] > 0 and r["ic_h_p"] < alpha,
    "hit rate CI > 50%": lambda r, alpha: r["hit_rate_lo"] > 0.5,
    "accuracy CI > prior": lambda r, alpha: r["accuracy_lo"] > r["accuracy_prior"],
}


@dataclass
class CalibrationConfig:
    """The planted agents and the walk-forward they are replayed through; each field is also a flag."""

    shares: tuple[float, ...] = field(default=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2), metadata={
        "help": "shares of ticker-days on which a planted agent reads the next session's close"})
    seeds: int = field(default=20, metadata={"help": "families (one planted agent per share each) to replay"})
    start: str = field(default="2023-07-01", metadata={"help": "first day of the walk-forward"})
    end: str = field(default="2025-06-30", metadata={"help": "last day of the walk-forward"})
    walk_forward: str = field(default="quarterly", metadata={"help": "windows: quarterly or monthly"})
    tickers: tuple[str, ...] = field(default=(), metadata={"help": "tickers (default: every store ticker)"})
    execution: Execution = field(default_factory=Execution, metadata={"help": "fills and costs, as the replay's"})
    bootstrap: int = field(default=1000, metadata={"help": "stationary-bootstrap resamples of every test"})
    alpha: float = field(default=0.05, metadata={"help": "family-wise significance level of every test"})
    csv: str | None = field(default=None, metadata={"help": "also write the power table here"})


def planted_actions(closes: pd.Series, days: pd.DatetimeIndex, share: float, rng: np.random.Generator) -> pd.Series:
    """One planted agent's actions on ``days``' decision sessions: the next close's direction on a ``share`` of
    them (STRONG_BUY before a rise, STRONG_SELL otherwise), a uniformly random action on the rest."""
    decided = decision_days(days)
    px = closes.reindex(days).to_numpy(dtype=float)
    up = px[1:] > px[:-1]
    knows = rng.random(len(decided)) < share
    guess = rng.integers(0, len(Action), len(decided))
    codes = np.where(knows, np.where(up, int(Action.STRONG_BUY), int(Action.STRONG_SELL)), guess)
    return pd.Series([Action(int(c)).name for c in codes], index=decided, name="action")


def run_config(cfg: CalibrationConfig, store: Store) -> RunConfig:
    """The replay settings the planted agents share with ``benchmarks/run.py``."""
    return RunConfig.of(agents=(), tickers=cfg.tickers or store.tickers, start=cfg.start, end=cfg.end,
                        walk_forward=(cfg.walk_forward,), execution=cfg.execution, bootstrap=cfg.bootstrap,
                        alpha=cfg.alpha, tearsheets=False)


def family(cfg: CalibrationConfig, seed: int, store: Store) -> pd.DataFrame:
    """One seed's leaderboard rows (return and signal tests) of buy-and-hold and a planted agent per share."""
    run = run_config(cfg, store)
    weights = run.agents.weight_map()
    closes = {t: store.closes(t) for t in run.window.tickers}
    opens = {t: store.closes(t, "open") for t in run.window.tickers}
    rng = np.random.default_rng(seed)
    results, before = {}, {}  # before: the last window's books, which each window's continue (as run.py's do)
    for window in run.window.protocol():
        per: dict[str, dict] = {BENCHMARK: {}}
        for t in run.window.tickers:
            days = store.trading_days(t, window.start, window.end)
            previous = before.get(BENCHMARK, {}).get(t, (None,))[0]
            per[BENCHMARK][t] = (buy_and_hold(closes[t], days, run.execution, None, opens[t], previous=previous),
                                 pd.DataFrame({"action": ["STRONG_BUY"]}))
            for share in cfg.shares:
                label = f"planted {share:g}"
                actions = planted_actions(closes[t], days, share, rng)
                frame = backtest(actions.map(Action.parse), closes[t], days, run.execution, weights, None, opens[t],
                                 previous=before.get(label, {}).get(t, (None,))[0])
                per.setdefault(label, {})[t] = (frame, actions.to_frame())
        results[window], before = per, per
    run = dataclasses.replace(run, seed=seed)
    stats = run.statistics
    table = compare(portfolios(results), BENCHMARK, stats.alpha, stats.bootstrap, stats.block, seed, stats.risk_free)
    return table.join(signal_board(signal_table(results, closes, run), run))


def power_table(cfg: CalibrationConfig, store: Store | None = None) -> pd.DataFrame:
    """Share -> the detection rate of each test over ``cfg.seeds`` families (the p = 0 row: false positives),
    with the mean Sharpe and excess Sharpe of the planted agents."""
    store = store or Store()
    rows = {share: [] for share in sorted(cfg.shares)}  # ascending: the markdown's "smallest share" reads in order
    for seed in range(cfg.seeds):
        board = family(cfg, seed, store)
        for share in cfg.shares:
            r = board.loc[f"planted {share:g}"]
            rows[share].append({"sharpe": r["sharpe"], "excess_sharpe": r["excess_sharpe"],
                                **{test: bool(rule(r, cfg.alpha)) for test, rule in TESTS.items()}})
    out = pd.DataFrame({share: pd.DataFrame(found).mean() for share, found in rows.items()}).T
    out.index.name = "share"
    return out


def markdown(table: pd.DataFrame, cfg: CalibrationConfig) -> str:
    """The power table as markdown, and the smallest share each test finds in at least 80% of the families."""
    tests = list(TESTS)
    lines = ["| planted share p | Sharpe | excess Sharpe | " + " | ".join(tests) + " |",
             "|" + "---|" * (3 + len(tests))]
    for share, r in table.iterrows():
        lines.append(f"| {share:.0%} | {r['sharpe']:.2f} | {r['excess_sharpe']:+.2f} | "
                     + " | ".join(f"{r[t]:.0%}" for t in tests) + " |")
    found = {t: next((f"{s:.0%}" for s, r in table.iterrows() if s > 0 and r[t] >= 0.8), "none") for t in tests}
    return "\n".join(lines) + "\n\nSmallest share found in at least 80% of the families: " + "; ".join(
        f"{t}: {p}" for t, p in found.items()) + f" ({cfg.seeds} families per share, alpha {cfg.alpha:g}).\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calibrate.py", description=__doc__.split("\n")[0])
    add_dataclass_args(parser, CalibrationConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    """0: the table was printed; 2: unusable arguments."""
    parser = build_parser()
    try:
        cfg = from_args(CalibrationConfig, parser.parse_args(argv))
        if cfg.seeds < 1 or not all(0 <= s <= 1 for s in cfg.shares):
            raise ValueError(f"--seeds must be >= 1 and --shares in [0, 1], got {cfg.seeds} and {cfg.shares}")
        run_config(cfg, Store())  # RunConfig's own checks: alpha, costs, tickers
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    start = time.time()
    table = power_table(cfg)
    if cfg.csv:
        table.to_csv(cfg.csv, float_format="%.4g")
    print(markdown(table, cfg))
    print(f"wall time {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
