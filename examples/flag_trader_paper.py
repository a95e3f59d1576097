"""FLAG-TRADER on the paper's protocol: PPO warm-up per seed, then each checkpoint replayed on held-out days.

    OMP_NUM_THREADS=1 python examples/flag_trader_paper.py             # MSFT, 3 seeds, CPU preset (~45 min)
    python examples/flag_trader_paper.py --preset paper                # tr1 train flag-ppo's defaults (a GPU)
    OMP_NUM_THREADS=1 python examples/flag_trader_paper.py --ticker NVDA --seeds 0 --train-start 2022-06-01 \\
        --train-end 2024-05-31 --test-start 2024-06-01 --test-end 2024-08-31 --episode-length 32

Per seed, ``tr1 train flag-ppo`` warms the policy up on ``--train-start..--train-end`` (``OUT/seed<k>``), then
the benchmark harness (``benchmarks/run.py --model flag:OUT/seed<k>``) replays it on ``--test-start..--test-end``
next to buy-and-hold on the same days (``OUT/seed<k>/replay``). The table gives InvestorBench's CR and Sharpe
(log rewards, no costs, rf 0: the paper's metrics) with a stationary-bootstrap CI at the harness's settings,
the harness's own net-of-cost Sharpe (rf 4%) with its CI and the p-value of its difference to buy-and-hold,
the mean +- std over seeds, and the paper's numbers where the run is the paper's (SPEC: MSFT, Jul-Sep 2020
warm-up, Oct 2020 - May 2021 test). A rerun skips finished seeds (and refuses an ``OUT`` trained with other
settings); ``OUT/results.md`` and ``results.json`` hold the table. Every flag of ``tr1 train flag-ppo`` is
accepted (``--lr``, ``--trainable-layers``, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tr1_agent.flag_trader.config import FlagPPOConfig
from tr1_env.evaluation.metrics import investorbench, sharpe_ci
from tr1_env.execution import trading_reward
from tr1_env.util.cli_args import add_dataclass_args, from_args
from tr1_env.util.files import jsonable

#: CPU-sized settings (~15 min per MSFT seed on one shared core): a ~520-token prompt (3 sessions, 2 headlines)
#: instead of ~990, two PPO updates of 32 steps (about one pass over the 63-session warm-up) instead of 3840 steps.
PRESETS = {
    "cpu": {"window": 3, "news_items": 2, "total_timesteps": 64, "rollout_steps": 32, "minibatch_size": 8,
            "update_epochs": 2, "lr": 3e-5, "save_every": 0},
    "paper": {},  # FlagPPOConfig's defaults
}
#: (CR %, Sharpe) as published (SPEC.md section 2) for (ticker, train start, train end, test start, test end).
PAPER_WINDOWS = ("2020-07-01", "2020-09-30", "2020-10-01", "2021-05-28")
PAPER = {"MSFT": {"FLAG-TRADER": (20.1, 1.37), "buy and hold": (15.3, 1.04)},
         "JNJ": {"FLAG-TRADER": (33.7, 3.34)}, "UVV": {"FLAG-TRADER": (46.8, 1.46)}}
_SKIP = ("tickers", "seed", "output_dir", "evaluate")


def ib_row(frame: pd.DataFrame, n_boot: int, level: float, block: float, seed: int) -> dict[str, float]:
    """InvestorBench CR and Sharpe of a harness returns frame, with a stationary-bootstrap CI of the Sharpe.

    The CI resamples the daily log rewards ``position x ln(1 + asset return)`` (no costs, rf 0), whose annualised
    mean over standard deviation is InvestorBench's Sharpe, with the harness's resamples, level and block length.
    """
    ib = investorbench(frame["position"], frame["asset_return"])
    rewards = trading_reward(frame["position"].to_numpy(float), np.log1p(frame["asset_return"].to_numpy(float)))
    lo, hi = sharpe_ci(rewards, rf=0.0, n_boot=n_boot, level=level, mean_block=block, seed=seed)
    return {"ib_cr": ib["cr"], "ib_sharpe": ib["sharpe"], "ib_sharpe_lo": lo, "ib_sharpe_hi": hi}


def run_seed(cfg: FlagPPOConfig, bootstrap: int) -> dict:
    """One seed's table row: trained unless ``cfg.output_dir`` holds a finished run (``metrics.json``), replayed
    unless it holds the row (``result.json``)."""
    from benchmarks.config import RunConfig
    from benchmarks.report import slug
    from benchmarks.run import run
    from tr1_agent.flag_trader.ppo import train_flag_trader

    out, ticker = Path(cfg.output_dir), cfg.tickers[0]
    saved = out / "flag_trader.json"
    if saved.exists() and json.loads(saved.read_text())["config"] != json.loads(json.dumps(asdict(cfg), default=str)):
        raise SystemExit(f"{out} holds a run with other settings: pass another --out")
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    if not (out / "metrics.json").exists():
        shutil.rmtree(out / "replay", ignore_errors=True)  # decisions of an older checkpoint at this path
        train_flag_trader(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    bench = RunConfig.of(agents=("buy_and_hold",), model=(f"flag:{out}",), tickers=(ticker,), start=cfg.test_start,
                         end=cfg.test_end, execution=cfg.execution, bootstrap=bootstrap, tearsheets=False,
                         out=str(out / "replay"))
    start = time.perf_counter()
    summary = run(bench).set_index("agent")
    replay_seconds = time.perf_counter() - start
    rows = {}
    for agent in summary.index:
        frame = pd.read_csv(out / "replay" / "returns" / f"{slug(agent)}__{ticker}.csv")
        s = summary.loc[agent]
        rows["flag" if agent.startswith("flag:") else agent] = {
            **ib_row(frame, bootstrap, 1 - bench.statistics.alpha, bench.statistics.block, bench.seed),
            "sharpe": s["sharpe"], "sharpe_lo": s["sharpe_lo"], "sharpe_hi": s["sharpe_hi"], "p_value": s["p_value"],
            "days": int(s["n_days"]), "long": int((frame["position"] > 0).sum()),
            "flat": int((frame["position"] == 0).sum()), "short": int((frame["position"] < 0).sum())}
    result = {**rows["flag"], "seed": cfg.seed, "train_seconds": metrics["train_seconds"],
              "replay_seconds": replay_seconds, "global_step": metrics["global_step"],
              "trainable_layers": metrics["trainable_layers"], "trainable_params": metrics["trainable_params"],
              "total_params": metrics["total_params"], "buy_and_hold": rows["buy_and_hold"]}
    (out / "result.json").write_text(json.dumps(jsonable(result), indent=2))
    return result


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "n/a"


def table(results: list[dict], cfg: FlagPPOConfig) -> str:
    """The markdown table: per seed, mean +- std over seeds, buy-and-hold on the same days, the paper's numbers."""
    head = ("| | CR % | Sharpe [95% CI] | net Sharpe, rf 4% [95% CI] | p vs B&H | days long/flat/short "
            "| train s | replay s |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        lines.append(f"| seed {r['seed']} | {100 * r['ib_cr']:.1f} | {r['ib_sharpe']:.2f} "
                     f"{_ci(r['ib_sharpe_lo'], r['ib_sharpe_hi'])} | {r['sharpe']:.2f} "
                     f"{_ci(r['sharpe_lo'], r['sharpe_hi'])} | {r['p_value']:.2f} | {r['long']}/{r['flat']}/"
                     f"{r['short']} | {r['train_seconds']:.0f} | {r['replay_seconds']:.0f} |")
    if len(results) > 1:
        cr, sr, net = (np.array([r[k] for r in results], float) for k in ("ib_cr", "ib_sharpe", "sharpe"))
        traded = np.isfinite(sr)  # a seed that never holds a position has no Sharpe (zero volatility)

        def spread(x: np.ndarray) -> str:
            return f"{x.mean():.2f} +- {x.std(ddof=1):.2f}" if len(x) > 1 else (f"{x[0]:.2f}" if len(x) else "n/a")

        sharpe_of = "" if traded.all() else f" ({traded.sum()} of {len(results)} seeds traded)"
        lines.append(f"| mean +- std ({len(results)} seeds) | {100 * cr.mean():.1f} +- {100 * cr.std(ddof=1):.1f} | "
                     f"{spread(sr[traded])}{sharpe_of} | {spread(net[np.isfinite(net)])} | | | | |")
    bh = results[0]["buy_and_hold"]
    lines.append(f"| buy and hold (harness) | {100 * bh['ib_cr']:.1f} | {bh['ib_sharpe']:.2f} "
                 f"{_ci(bh['ib_sharpe_lo'], bh['ib_sharpe_hi'])} | {bh['sharpe']:.2f} "
                 f"{_ci(bh['sharpe_lo'], bh['sharpe_hi'])} | | {bh['long']}/{bh['flat']}/{bh['short']} | | |")
    ticker = cfg.tickers[0]
    if (cfg.train_start, cfg.train_end, cfg.test_start, cfg.test_end) == PAPER_WINDOWS:
        for name, (cr, sr) in PAPER.get(ticker, {}).items():
            lines.append(f"| paper: {name} | {cr:.1f} | {sr:.2f} | | | | | |")
    r = results[0]
    lines.append("")
    lines.append(f"{ticker}, warm-up {cfg.train_start}..{cfg.train_end}, test {cfg.test_start}..{cfg.test_end} "
                 f"({r['days']} days); {cfg.model}, {r['trainable_layers']} trainable layers "
                 f"({r['trainable_params']:,} of {r['total_params']:,} parameters, "
                 f"{100 * r['trainable_params'] / r['total_params']:.1f}%), {r['global_step']} PPO steps per seed; "
                 f"wall {sum(x['train_seconds'] + x['replay_seconds'] for x in results) / 60:.0f} min in all.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="cpu", help="defaults of the run's settings "
                        f"(cpu: {PRESETS['cpu']}; paper: tr1 train flag-ppo's); any flag overrides them")
    parser.add_argument("--ticker", default="MSFT", help="the paper trains one policy per asset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the Sharpe CIs")
    parser.add_argument("--out",
                        help="one folder per seed; rerunning resumes (default: runs/flag_TICKER_TESTSTART_PRESET)")
    add_dataclass_args(parser, FlagPPOConfig, skip=_SKIP)
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per PPO update
    base = replace(from_args(FlagPPOConfig, args, skip=_SKIP), tickers=(args.ticker,), evaluate=False)
    out = Path(args.out or f"runs/flag_{args.ticker.lower()}_{base.test_start}_{preset}")
    results = []
    for seed in args.seeds:
        cfg = replace(base, seed=seed, output_dir=str(out / f"seed{seed}"))
        results.append(run_seed(cfg, args.bootstrap))
        print(f"seed {seed}: CR {100 * results[-1]['ib_cr']:.1f}%, Sharpe {results[-1]['ib_sharpe']:.2f}", flush=True)
    text = table(results, base)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"config": asdict(base), "preset": preset, "seeds": results},
                                                 indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
