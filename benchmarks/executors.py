"""Where a run's cells run: one after another in this process, or as Ray tasks on a local Ray or a cluster.

A cell is one agent over one window, all its tickers together (an agent is fitted once per window over its
tickers). Only the agent's part runs here: building, fitting and asking it (:func:`benchmarks.replay.decide`),
which returns decision records and writes nothing. The run (:mod:`benchmarks.run`) keeps the rest in one place,
whatever the executor: it reloads saved decisions, saves the new ones into its folder, books them and computes
the statistics. A walk-forward's books are continuous (the position held into a boundary is the next window's
first position), so the run submits an agent's cell for a window once its cell for the window before is booked;
the agents themselves run side by side.

On Ray each cell is a task of one CPU (and one GPU for a local model, hf:/vllm:/flag:, on a cluster that has
GPUs). The store is opened by path in each worker process, once (the embedded one, or ``--store``, which must be
the same path on every node of a cluster). A task whose worker process dies (killed, out of memory) is run again
by Ray up to ``--cell-retries`` times; a cell that still fails has its tickers reported as failed, and since a
task writes nothing, a retried cell is never counted twice. Ctrl-C cancels the tasks in flight.

What the run computes per item after (or beside) the cells goes through the executor's :meth:`~Serial.map`: in
this process one item after another, on Ray as tasks whose shared inputs enter the object store once. On Ray a
cell of an agent that is no LLM also books its decisions (the run's market, shared once, and the books carried
into the window) and renders its returns files, which the run writes after checking that the decisions it saved
and read back are those the worker booked.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from benchmarks.config import RunConfig
from benchmarks.mapping import in_order
from benchmarks.replay import Observations, decide
from benchmarks.roster import AgentSpec, UsageError
from tr1_agent.api_limits import BudgetExhausted
from tr1_env.data.store import Store
from tr1_env.evaluation.windows import Window

__all__ = ["Cell", "InProcess", "Outcome", "RayExecutor", "Serial", "Task", "make_executor", "store_at"]

RAY_EXTRA = "pip install 'tr1[ray]'"


@dataclass(frozen=True)
class Cell:
    """One agent over one window (all its tickers); ``previous``: the index, in the run's list of cells, of the
    same agent's cell for the window before (its books carry into this one), or None."""

    spec: AgentSpec
    window: Window
    days: dict[str, pd.DatetimeIndex]
    previous: int | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.label} in {self.window.name}"


@dataclass(frozen=True)
class Task:
    """What a worker needs to run a cell's agent: its settings, the tickers left (``days``) and the positions it
    holds into the window."""

    spec: AgentSpec
    cfg: RunConfig
    window: Window
    days: dict[str, pd.DatetimeIndex]
    held: dict[str, float]
    max_chars: int
    fingerprint: str  # of the decisions it makes (benchmarks.replay.pending)
    carried: dict[str, pd.DataFrame | None] = field(default_factory=dict)  # the books it continues, per ticker


@dataclass
class Outcome:
    """A cell's answer: decision records per ticker, the failed tickers with their errors, the pseudonyms its
    anonymized observations used (ticker -> mapping) and, when its worker booked them, per ticker the actions it
    booked, the book and its returns file's text."""

    records: dict[str, list[dict]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    pseudonyms: dict[str, dict] = field(default_factory=dict)
    books: dict[str, tuple[pd.Series, pd.DataFrame, str]] = field(default_factory=dict)


def run_task(task: Task, store: Store, observations: Observations) -> Outcome:
    records, failed = decide(task.spec, task.cfg, task.window, store, task.days, observations, list(task.days),
                             task.held, task.max_chars)
    return Outcome(records, failed, {t: p.mapping for t, p in observations.pseudonyms.items() if t in task.days})


class Serial:
    """What every executor that runs in this process shares: items mapped one after another, the books kept by
    the run."""

    map = staticmethod(in_order)

    def book_with(self, market) -> None:
        """The run books every cell itself."""

    def fit_ahead(self, cells: list[Cell], left: Callable[[Cell], list[str]]) -> None:
        """Each cell fits its agent when it runs."""


class InProcess(Serial):
    """The cells one after another in this process, in the run's order; one set of observations per window,
    shared by its agents."""

    capacity = 1
    asks = True  # asks the agents (a merge's executor reads shards instead)

    def __init__(self, store: Store, seed: int):
        self.store, self.seed = store, seed
        self._observations: tuple[str, Observations] | None = None
        self._done: list[tuple[int, Outcome]] = []

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc) -> None:
        self._observations = None

    def submit(self, index: int, task: Task) -> None:
        if self._observations is None or self._observations[0] != task.window.name:
            self._observations = (task.window.name, Observations(self.store, self.seed))
        self._done.append((index, run_task(task, self.store, self._observations[1])))

    def wait(self) -> list[tuple[int, Outcome]]:
        done, self._done = self._done, []
        return done

    def busy(self) -> bool:
        return bool(self._done)


_STORES: dict[str | None, Store] = {}  # per process: the store at each path (None: the embedded one), opened once
_WORKER: dict[tuple, Observations] = {}  # per Ray worker process: the windows' observations, latest used last
#: Windows whose observations a worker always keeps: a worker alternates between two windows around a boundary.
KEPT_WINDOWS = 2
#: Observations a worker keeps beyond those windows (about 9 KB each when numeric): on a small universe every
#: window's, since Ray sends a window's cells to any worker in any order and each would otherwise build them again.
KEPT_OBSERVATIONS = 50_000


def store_at(path: str | None, store: Store | None = None) -> Store:
    """This process's store at ``path`` (``--store``; None: the embedded one): ``store`` from now on when given
    (the run's own, in its process), else the one opened at the first call (a Ray worker's, by path)."""
    if store is not None or path not in _STORES:
        _STORES[path] = store if store is not None else Store(path)
    return _STORES[path]


def driver_paths() -> list[str]:
    """The driver's import path, sent with each task: plug-in agents import from its working directory."""
    return list(dict.fromkeys(sys.path))


def import_from(paths: list[str]) -> None:
    """In a Ray worker: the driver's import path (:func:`driver_paths`) ahead of the worker's own."""
    for path in paths:
        if path not in sys.path:
            sys.path.insert(0, path)


def _warm(store_path: str | None) -> None:
    """A Ray worker's imports (the agents, the statistics) and store, done while the run's driver prepares."""
    import baselines  # noqa: F401
    import benchmarks.leaderboard  # noqa: F401

    store_at(store_path)


def _ray_cell(task: Task, store_path: str | None, paths: list[str], market, *fits) -> Outcome:
    """A cell in a Ray worker: the store opened once per process, observations kept for the windows used last; an
    agent that is no LLM has its decisions booked here on ``market`` (the run's, from the object store). ``fits``:
    the cell's fits run ahead (:meth:`RayExecutor.fit_ahead`), finished before Ray starts this task."""
    import_from(paths)
    store, key = store_at(store_path), (store_path, task.window.name, task.cfg.seed)
    _WORKER[key] = _WORKER.pop(key) if key in _WORKER else Observations(store, task.cfg.seed)
    outcome = run_task(task, store, _WORKER[key])
    while len(_WORKER) > KEPT_WINDOWS and sum(map(len, _WORKER.values())) > KEPT_OBSERVATIONS:
        _WORKER.pop(next(iter(_WORKER)))  # the least recently used window
    if market is not None and not task.spec.llm:  # an LLM's books read its calls' costs: the run books those
        outcome.books = market.book_records(outcome.records, task.days, task.cfg, task.carried)
    return outcome


def _ray_fit(spec: AgentSpec, window: Window, tickers: list[str], store_path: str | None, paths: list[str]) -> None:
    """An agent's training for a window ahead of its cell, in a Ray worker (``train_before``: the fit without the
    replay's envs, which only the cell reads): what it trains lands in its cache (SB3's, under ``$TR1_CACHE``),
    which the cell's own fit then reloads."""
    import_from(paths)
    spec.build().train_before(store_at(store_path), tickers, window.start)


def _map_chunk(fn: Callable[..., Any], chunk: list[tuple], names: tuple[str, ...], *shared) -> list:
    """Part of a :meth:`RayExecutor.map` in a worker (``shared`` resolved from the object store)."""
    return in_order(fn, chunk, **dict(zip(names, shared)))


class RayExecutor:
    """The cells as Ray tasks: on the cluster at ``address``, or on a local Ray of ``workers`` CPUs started here
    (and stopped at the end) when none is given; a Ray already initialised in this process is used as it is."""

    capacity = sys.maxsize
    asks = True

    def __init__(self, cfg: RunConfig, governor=None):
        self.cfg, self.governor = cfg, governor
        self._inflight: dict[object, tuple[int, Task]] = {}
        self._fits: dict[int, list] = {}  # a cell's fits running ahead, by its index
        self._started = False
        self._market = None

    def __enter__(self) -> RayExecutor:
        import ray

        self.ray = ray
        dist = self.cfg.distribution
        if not ray.is_initialized():
            kwargs = ({"address": dist.ray_address} if dist.ray_address
                      else {"num_cpus": dist.workers or None, "include_dashboard": False})
            ray.init(**kwargs, log_to_driver=True, configure_logging=False)
            self._started = True
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.remote, self.mapper = ray.remote(_ray_cell), ray.remote(_map_chunk)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        warm = ray.remote(_warm).options(num_cpus=1)
        self._warming = [warm.remote(self.cfg.window.store) for _ in range(min(cpus, 64))]
        if self.governor is not None and self.governor.active:
            self.governor.share()
        return self

    def fit_ahead(self, cells: list[Cell], left: Callable[[Cell], list[str]]) -> None:
        """The fits of every cell whose agent trains per window (``AgentSpec.fits_ahead``: SB3) start now, over the
        tickers ``left`` to replay (none saved), a task per ticker (one per cell when the agent pools its tickers),
        instead of each waiting for the window before to be booked: only the cell's decisions need the positions
        carried in. A cell then waits for its own fits. (A ticker saved under another fingerprint is fitted by its
        cell, which replays it.)"""
        paths = driver_paths()
        fit = self.ray.remote(_ray_fit).options(num_cpus=1, max_retries=self.cfg.distribution.cell_retries)
        for index, cell in enumerate(cells):
            if cell.spec.fits_ahead and (tickers := left(cell)):
                groups = [tickers] if cell.spec.settings.get("pool") else [[t] for t in tickers]
                self._fits[index] = [fit.remote(cell.spec, cell.window, group, self.cfg.window.store, paths)
                                     for group in groups]

    def submit(self, index: int, task: Task) -> None:
        gpu = 1 if self.gpus and task.spec.local_model else 0
        ref = self.remote.options(num_cpus=1, num_gpus=gpu, max_retries=self.cfg.distribution.cell_retries,
                                  retry_exceptions=False, name=f"{task.spec.label} {task.window.name}"
                                  ).remote(task, self.cfg.window.store, driver_paths(), self._market,
                                           *self._fits.pop(index, ()))
        self._inflight[ref] = (index, task)

    def book_with(self, market) -> None:
        """The cells of agents that are no LLM are booked by their workers on ``market`` (put in the object store
        once; it has ``book_records``)."""
        self._market = self.ray.put(market)

    def map(self, fn: Callable[..., Any], items: list[tuple], **shared) -> list:
        """``[fn(*item, **shared) for item in items]`` as tasks of one CPU, a few items each (about four tasks per
        CPU of the cluster, so a slow item delays little), ``shared`` put in the object store once."""
        if len(items) < 2:
            return in_order(fn, items, **shared)
        refs = [self.ray.put(value) for value in shared.values()]
        n = min(len(items), 4 * max(1, int(self.ray.cluster_resources().get("CPU", 1))))
        chunks = [items[k * len(items) // n:(k + 1) * len(items) // n] for k in range(n)]
        parts = [self.mapper.options(num_cpus=1, max_retries=self.cfg.distribution.cell_retries)
                 .remote(fn, chunk, tuple(shared), *refs) for chunk in chunks]
        try:
            done = self.ray.get(parts)
        except BaseException:  # Ctrl-C or an item's error: none of the cluster's tasks keeps running
            for ref in parts:
                self.ray.cancel(ref, force=True)
            raise
        return [result for part in done for result in part]

    def busy(self) -> bool:
        return bool(self._inflight)

    def wait(self) -> list[tuple[int, Outcome]]:
        """The cells finished since the last call (at least one, waiting for it); a cell whose worker died more
        than ``--cell-retries`` times is an outcome with every ticker failed."""
        ready, _ = self.ray.wait(list(self._inflight), num_returns=1)
        out = []
        for ref in ready:
            index, task = self._inflight.pop(ref)
            try:
                out.append((index, self.ray.get(ref)))
            except self.ray.exceptions.RayTaskError as exc:  # the run stops on the worker's error, as in-process
                if isinstance(exc.cause, BudgetExhausted):
                    raise exc.cause from None  # one line, not the remote traceback
                raise
            except (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError,
                    self.ray.exceptions.OutOfMemoryError) as exc:
                error = f"the cell's worker died {self.cfg.distribution.cell_retries + 1} times ({type(exc).__name__})"
                out.append((index, self.crashed(task, error)))
        return out

    def crashed(self, task: Task, error: str) -> Outcome:
        """The answer of a cell whose worker died too often: every ticker failed with ``error``."""
        return Outcome(failed={t: error for t in task.days})

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is not None:  # Ctrl-C, a stopped budget, an error: nothing of the cluster's keeps running
            for ref in [*self._inflight, *(ref for refs in self._fits.values() for ref in refs)]:
                self.ray.cancel(ref, force=True)
        self._inflight.clear()
        self._fits.clear()
        if self._started:
            self.ray.shutdown()


def make_executor(cfg: RunConfig, store: Store, governor=None):
    """The executor ``--executor`` names (Ray imported only when it starts); a UsageError when Ray is not installed."""
    if cfg.distribution.executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UsageError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}")
        return RayExecutor(cfg, governor)
    return InProcess(store, cfg.seed)
