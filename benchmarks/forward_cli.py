"""``tr1 forward run|verify|score``: the forward test's commands, registered through the ``tr1.commands`` entry
point so that the environment's ``tr1`` never imports the harness."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.forward import (
    EXPORT,
    LEDGER,
    ForwardConfig,
    data_problems,
    read_manifest,
    run_forward,
)
from benchmarks.forward_score import ScoreConfig, score
from benchmarks.roster import UsageError
from benchmarks.run_folder import FolderRefused
from tr1_env.evaluation.ledger import Ledger, check_roots, verify
from tr1_env.util.cli_args import add_dataclass_args, from_args


def cmd_run(ns: argparse.Namespace) -> None:
    try:
        cfg = from_args(ForwardConfig, ns)
        out = run_forward(cfg)
    except (ValueError, RuntimeError) as exc:  # refused settings or folder, a missing key: nothing was decided
        print(f"tr1 forward run: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for day in out.missed:
        print(f"missed {day}: no decision before its deadline (never back-filled)", file=sys.stderr)
    for line in out.skipped:
        print(f"skipping {line}", file=sys.stderr)
    for line in out.failed:
        print(f"failed {line}", file=sys.stderr)
    print(out.note or f"{out.day:%Y-%m-%d}: {out.decided} decision(s) appended to {Path(cfg.folder) / LEDGER}")
    raise SystemExit(out.status)


def cmd_verify(ns: argparse.Namespace) -> None:
    folder = Path(ns.folder)
    head = read_manifest(folder).get("head")
    problems = verify(folder / LEDGER, (head["lines"], head["sha256"]) if head else None)
    problems += check_roots(folder / LEDGER, ns.roots or folder / EXPORT)
    if ns.store:
        problems += data_problems(folder / LEDGER, ns.store)
    for p in problems:
        print(p)
    n, digest = Ledger(folder / LEDGER).head()
    print(f"{'FAILED' if problems else 'ok'}: {n} lines, head sha256 {digest}" + (
        f", {len(problems)} problem(s)" if problems else ""))
    raise SystemExit(1 if problems else 0)




def cmd_score(ns: argparse.Namespace) -> None:
    try:
        cfg = from_args(ScoreConfig, ns, skip=("fill",))
        summary = score(cfg)
    except (ValueError, UsageError, FolderRefused) as exc:
        print(f"tr1 forward score: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    out = Path(cfg.out or Path(cfg.folder) / "score")
    print((out / "leaderboard.md").read_text())
    print((out / "forward.md").read_text())
    raise SystemExit(1 if summary.attrs.get("failed") else 0)


def register(sub) -> None:
    """``tr1 forward run|verify|score`` (the ``tr1.commands`` entry point)."""
    forward = sub.add_parser("forward", help="forward testing: a hash-chained ledger of decisions taken before "
                             "their outcome exists (docs/forward.md)").add_subparsers(dest="forward_command",
                                                                                      required=True)
    run = forward.add_parser("run", help="decide the session that is due and append it to the ledger (daily)")
    add_dataclass_args(run, ForwardConfig)
    run.set_defaults(func=cmd_run)
    check = forward.add_parser("verify", help="check the chain, the stamps, the deadlines and the data of every line; "
                               "exit 1 naming each bad line")
    check.add_argument("--folder", required=True, help="forward folder")
    check.add_argument("--roots", help="folder of published <day>.root files to check (default: the folder's export/)")
    check.add_argument("--store", help="also check that the store still shows, at each decision's instant, the data "
                       "the decision read")
    check.set_defaults(func=cmd_verify)
    score = forward.add_parser("score", help="book the ledger's decisions with the house's Execution and write the "
                               "replay's reports and leaderboard, plus days to a verdict")
    add_dataclass_args(score, ScoreConfig, skip=("fill",))  # the fill is the ledger's
    score.set_defaults(func=cmd_score)
