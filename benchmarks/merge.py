"""``tr1 bench merge OUT_1 ... OUT_N --out OUT``: the shards of a job array made into one run's reports.

Each shard (``benchmarks/run.py --shard I/N``) writes its cells' decisions and ``cells.json``. The merge checks that
the shards were run with the same settings and that every cell of the run is in exactly one of them (a missing or
duplicated cell is named and refused, exit 2, before anything is written), then replays the whole run into OUT with
an executor that reads each cell from its shard instead of asking the agent: the decisions are saved into OUT,
booked and the statistics computed over every cell, so OUT holds the files an unsharded run writes. On the portfolio
track a shard records each cell's weights (:mod:`benchmarks.portfolio_cells`), which the merge books the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.config import RunConfig
from benchmarks.executors import Outcome, Serial, Task
from benchmarks.portfolio import portfolio_plan, run_portfolio
from benchmarks.portfolio_cells import BookCell, Decided, InProcessBooks, saved_path
from benchmarks.report import slug
from benchmarks.roster import UsageError
from benchmarks.run import not_run, outcome, plan, run, setup
from benchmarks.run_folder import MANIFEST, SHARD_CELLS, FolderRefused

__all__ = ["FromShardBooks", "FromShards", "MergeRefused", "main", "merge", "register"]

#: Settings of how or where a shard ran, not of what it replayed: they may differ between shards.
LOCAL = ("executor", "ray_address", "workers", "cell_retries", "shard", "out", "force", "dry_run")


class MergeRefused(ValueError):
    """Shards that do not make one run (other settings, a cell missing or in two shards): one line, exit 2."""


class FromShards(Serial):
    """An executor that asks no agent: each cell's decisions (and failed tickers) as its shard saved them."""

    capacity = sys.maxsize
    asks = False

    def __init__(self, cells: dict[str, tuple[Path, dict[str, str]]], single: bool):
        self.cells, self.single, self._done = cells, single, []

    def __enter__(self) -> FromShards:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, index: int, task: Task) -> None:
        folder, failed = self.cells[f"{task.spec.label} in {task.window.name}"]
        folder = folder if self.single else folder / "windows" / task.window.name
        out = Outcome()
        for t in task.days:
            if t in failed:
                out.failed[t] = failed[t]
                continue
            path = folder / "decisions" / f"{slug(task.spec.label)}__{t}.json"
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise MergeRefused(f"{path}: unreadable ({type(exc).__name__}); rerun its shard") from None
            if saved.get("fingerprint") != task.fingerprint:
                raise MergeRefused(f"{path}: decided under other settings than the merged run (another store path or "
                                   "version?); rerun its shard")
            out.records[t] = saved["decisions"]
        self._done.append((index, out))

    def wait(self) -> list[tuple[int, Outcome]]:
        done, self._done = self._done, []
        return done


class FromShardBooks(InProcessBooks):
    """A merge's cells, asked of no agent: each as its shard recorded it (:func:`saved_path`)."""

    asks = False

    def __init__(self, cells: dict[str, Path]):
        self.cells, self._done = cells, []

    def submit(self, key, cell: BookCell) -> None:
        path = saved_path(self.cells[f"{cell.label} in {cell.window.name}"], cell.label, cell.window)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise MergeRefused(f"{path}: unreadable ({type(exc).__name__}); rerun its shard") from None
        if saved["carried"] != cell.carried.round(12).tolist():
            raise MergeRefused(f"{path}: decided from other weights than the merged run holds; rerun its shard")
        weights = None if saved["weights"] is None else np.array(saved["weights"], float)
        self._done.append((key, Decided(weights, saved["payload"], saved["error"])))


def _settings(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k not in LOCAL}


def read_shards(folders: list[str]) -> tuple[dict, dict[str, tuple[Path, dict[str, str]]]]:
    """The shards' common settings and every cell's shard folder and failures; MergeRefused for a folder that is
    no finished shard, settings that differ, or a cell in two shards."""
    settings, cells, counts = None, {}, set()
    for name in folders:
        folder = Path(name)
        try:
            meta = json.loads((folder / MANIFEST).read_text())
            listing = json.loads((folder / SHARD_CELLS).read_text())
        except (OSError, ValueError):
            raise MergeRefused(f"{folder}: not a shard's folder (no readable {MANIFEST} and {SHARD_CELLS}: run "
                               "benchmarks/run.py --shard I/N --out there)") from None
        if meta.get("status") not in ("complete", "failed"):
            raise MergeRefused(f"{folder}: shard {listing.get('shard')} did not finish; rerun it (it resumes)")
        counts.add(str(listing["shard"]).partition("/")[2])
        mine = _settings(meta["config"])
        if settings is None:
            settings, first = mine, folder
        elif mine != settings:
            key = next(k for k in sorted(settings.keys() | mine.keys()) if settings.get(k) != mine.get(k))
            raise MergeRefused(f"{folder}: --{key.replace('_', '-')} {mine.get(key)!r} differs from "
                               f"{settings.get(key)!r} in {first}: the shards are not of one run")
        for cell in listing["cells"]:
            key = f"{cell['agent']} in {cell['window']}"
            if key in cells:
                raise MergeRefused(f"cell {key} is in more than one shard ({cells[key][0]}, {folder}): "
                                   "merge each shard once")
            cells[key] = (folder, cell["failed"])
    if len(counts) > 1:
        raise MergeRefused(f"the shards were cut into different numbers of shards ({', '.join(sorted(counts))})")
    return settings or {}, cells


def merge(folders: list[str], out: str, force: bool = False):
    """The merged run's summary (as :func:`benchmarks.run.run` returns it), after every check."""
    settings, cells = read_shards(folders)
    cfg = RunConfig.of(**{k: v for k, v in settings.items() if k != "base_url"}, out=out, force=force)
    if settings.get("base_url"):  # redacted in config.json, as in the fingerprints it must match
        cfg = cfg.replace(base_url=settings["base_url"])
    if cfg.portfolio.portfolio:  # the portfolio track: each cell's weights as its shard recorded them
        _expect(portfolio_plan(cfg), cells)
        return run_portfolio(cfg, executor=FromShardBooks({key: folder for key, (folder, _) in cells.items()}))
    ready = setup(cfg, asks=False)
    _expect([c.name for c in plan(ready.specs, ready.protocol, ready.spans, ready.days_by_window)], cells)
    return run(cfg, executor=FromShards(cells, len(ready.protocol) == 1))


def _expect(expected: list[str], cells: dict) -> None:
    """MergeRefused unless the shards hold exactly the ``expected`` cells (by name)."""
    missing = [name for name in expected if name not in cells]
    if missing:
        raise MergeRefused(f"{len(missing)} cell(s) missing from the shards: {', '.join(missing[:10])}"
                           f"{' ...' if len(missing) > 10 else ''} (merge every shard; rerun an unfinished one)")
    extra = sorted(set(cells) - set(expected))
    if extra:
        raise MergeRefused(f"cell(s) not of this run: {', '.join(extra[:10])}")


def _add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="the shards' --out folders (benchmarks/run.py --shard I/N)")
    parser.add_argument("--out", required=True, help="the merged run's folder (the reports of an unsharded run)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder no tr1 run owns (as "
                        "run.py --force: nothing of yours is replaced)")


def _merge(ns: argparse.Namespace, prog: str) -> int:
    try:
        summary = merge(ns.shards, ns.out, ns.force)
    except (MergeRefused, UsageError, FolderRefused) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if "n_windows" in summary:  # the portfolio track's leaderboard
        print((Path(ns.out) / "leaderboard_portfolio.md").read_text())
        parts = not_run(summary.attrs["failed"], summary.attrs["skipped"], "window", "in")
        reason = f"{'; '.join(parts)} (rerun the shards to retry)" if parts else None
    else:
        print((Path(ns.out) / "leaderboard.md").read_text())
        reason = outcome(summary, RunConfig.of(out=ns.out))
    if reason:
        print(f"{prog}: error: {reason}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    """``tr1 bench merge`` (the ``tr1.commands`` entry point: tr1_env never imports the harness)."""
    bench = sub.add_parser("bench", help="benchmark runs: merge the shards of a job array").add_subparsers(
        dest="bench_command", required=True)
    parser = bench.add_parser("merge", help="merge shards (run.py --shard I/N) into one run's reports; a missing "
                              "or duplicated cell is named and refused (exit 2)")
    _add_args(parser)

    def command(ns: argparse.Namespace) -> None:
        if code := _merge(ns, "tr1 bench merge"):
            raise SystemExit(code)

    parser.set_defaults(func=command)


def main(argv: list[str] | None = None) -> int:
    """0: merged, every cell ran; 1: merged, some agent x ticker failed or was skipped; 2: refused."""
    parser = argparse.ArgumentParser(prog="tr1 bench merge", description=__doc__.split("\n")[0])
    _add_args(parser)
    return _merge(parser.parse_args(argv), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
