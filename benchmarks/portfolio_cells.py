"""Where the portfolio track's cells run: one agent's book over one window, in this process, as Ray tasks, or read
from the shards of a job array.

A cell's weights depend on the weights its agent's book holds into the window (an LLM is shown them; walk-forward
books are continuous), so the run (:func:`benchmarks.portfolio.replay_portfolio`) books each window on the driver and
submits an agent's next window once its window before is booked; the agents run side by side. The booking (a
vectorised pass over the window) costs far less than deciding, so it stays on the driver with the saving, as on the
per-ticker track: a worker decides and writes nothing, a finished window's decisions are saved the moment it comes
back (a run stopped by Ctrl-C resumes from its saved windows), and the files are those of an in-process run byte for
byte. On Ray a worker builds the run's universe and books once per process from the run's settings (the store by
path), so nothing large travels with a task.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.config import RunConfig
from benchmarks.executors import RAY_EXTRA, RayExecutor, driver_paths, import_from
from benchmarks.portfolio_agents import DecisionFailed
from benchmarks.report import slug
from benchmarks.roster import UsageError
from benchmarks.run_folder import write_text
from tr1_env.evaluation.portfolio import Legs
from tr1_env.evaluation.windows import Window

__all__ = ["BookCell", "Decided", "InProcessBooks", "RayBooks", "book_executor", "decide_cell", "record",
           "saved_path"]


@dataclass(frozen=True)
class BookCell:
    """One agent's window: the book's first session (``start``, the chain's when it continues an earlier window) and
    the weights it holds into the window (``carried``; zeros: in cash)."""

    label: str
    window: Window
    start: pd.Timestamp
    carried: np.ndarray


@dataclass
class Decided:
    """A cell's answer: the weights (sessions but the last x the book's columns), what an LLM's book saves
    (``payload``: its decisions file), or the error of a failed decision."""

    weights: np.ndarray | None = None
    payload: dict | None = None
    error: str | None = None


def decide_cell(book, uni, cfg: RunConfig, cell: BookCell) -> Decided:
    """The cell's weights from ``book``; a failed decision (:class:`DecisionFailed`) is an answer, not an error."""
    days = uni.days(cell.window)
    legs = Legs(uni.priced.loc[days], uni.opens.loc[days], cfg.execution, uni.dividends, uni.liquidity)
    try:
        if book.llm:
            return Decided(*book.ask(cell.window, days, uni.held(days), legs, cell.carried))
        return Decided(book.weights(cell.window, days, uni.held(days), legs, cell.start, cell.carried))
    except DecisionFailed as exc:
        return Decided(error=str(exc))


def saved_path(out: Path, label: str, window: Window) -> Path:
    """A shard's record of one cell (its weights, an LLM's decisions file, or its error), which the merge reads."""
    return out / "portfolio" / "cells" / f"{slug(label)}__{window.name}.json"


class InProcessBooks:
    """The cells one after another in this process, with the run's own books."""

    capacity = 1
    asks = True

    def __init__(self, uni, books: list, cfg: RunConfig):
        self.uni, self.books, self.cfg, self._done = uni, {b.label: b for b in books}, cfg, []

    def __enter__(self) -> InProcessBooks:
        return self

    def __exit__(self, *exc) -> None:
        self._done = []

    def submit(self, key, cell: BookCell) -> None:
        self._done.append((key, decide_cell(self.books[cell.label], self.uni, self.cfg, cell)))

    def wait(self) -> list:
        done, self._done = self._done, []
        return done


_WORKER: dict[str, object] = {}  # per Ray worker process: the run's settings, its universe and books


def _ray_book_cell(build, cfg: RunConfig, cell: BookCell, paths: list[str], governor) -> Decided:
    """A cell in a Ray worker: the universe and books (``build(cfg, governor)``) made once per process for the run's
    settings and limits (``governor``: the run's, shared as a Ray actor; None when it limits nothing)."""
    import_from(paths)
    if _WORKER.get("run") != (cfg, governor):
        _WORKER.update(zip(("run", "uni", "books"), ((cfg, governor), *build(cfg, governor))))
    return decide_cell(_WORKER["books"][cell.label], _WORKER["uni"], cfg, cell)


class RayBooks(RayExecutor):
    """The cells as Ray tasks of one CPU (one GPU for a local model on a cluster with GPUs), on the Ray that
    :class:`~benchmarks.executors.RayExecutor` starts or joins; a worker that dies more than ``--cell-retries``
    times fails its cell, and Ctrl-C cancels the tasks in flight."""

    def __init__(self, cfg: RunConfig, books: list, build, governor=None):
        super().__init__(cfg, governor)
        self.build, self.local = build, {b.label for b in books if b.llm and b.spec.local_model}

    def __enter__(self) -> RayBooks:
        super().__enter__()
        self.remote = self.ray.remote(_ray_book_cell)
        return self

    def submit(self, key, cell: BookCell) -> None:
        ref = self.remote.options(num_cpus=1, num_gpus=1 if self.gpus and cell.label in self.local else 0,
                                  max_retries=self.cfg.distribution.cell_retries, retry_exceptions=False,
                                  name=f"{cell.label} {cell.window.name}"
                                  ).remote(self.build, self.cfg, cell, driver_paths(),
                                           self.governor if self.governor is not None and self.governor.active
                                           else None)
        self._inflight[ref] = (key, cell)

    def crashed(self, cell: BookCell, error: str) -> Decided:
        return Decided(error=error)


def book_executor(cfg: RunConfig, uni, books: list, build, governor=None):
    """The executor ``--executor`` names for the portfolio track (on Ray, each worker makes the universe and books by
    ``build(cfg, governor)``, ``governor`` shared by every worker); a UsageError when Ray is not installed."""
    if cfg.distribution.executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UsageError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}")
        return RayBooks(cfg, books, build, governor)
    return InProcessBooks(uni, books, cfg)


def record(out: Path, cell: BookCell, decided: Decided) -> None:
    """A shard's cell written for the merge (the weights it held into the window: a merge replays the same chain)."""
    path = saved_path(out, cell.label, cell.window)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({
        "carried": cell.carried.round(12).tolist(), "error": decided.error, "payload": decided.payload,
        "weights": None if decided.weights is None else decided.weights.tolist()}, default=str))
