"""One agent's replay over one window: its decisions per ticker, asked day by day or reloaded from the run folder.

Each agent decides at the close of each decision day from that day's observation alone (tickers batched per
day); the observations are built once per run window and shared by every agent (:class:`Observations`). What
decides an agent's answers is its fingerprint; a saved replay with the same one is reloaded instead of asked
again (:func:`pending`), so a killed run resumes where it stopped. Asking (:func:`decide`) writes nothing, so an
executor may run it anywhere (:mod:`benchmarks.executors`); the run saves what it returns (:func:`save`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import weakref
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.config import RunConfig
from benchmarks.report import slug
from benchmarks.roster import AgentSpec
from benchmarks.run_folder import load_decisions, save_decisions
from tr1_env.context.anonymize import Pseudonyms, anonymize
from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.market import indicators
from tr1_env.context.reference import build_context, numeric_observation
from tr1_env.core.actions import Action
from tr1_env.core.agents import AgentError, Observation
from tr1_env.data.store import Store, split_adjust
from tr1_env.evaluation.backtest import decision_days
from tr1_env.evaluation.windows import Window

__all__ = ["Observations", "Pending", "context_budget", "decide", "decisions_path", "pending", "save"]


#: Per store, each ticker's indicator frame per split basis (and its dates): they cover the store's whole history,
#: so every window's :class:`Observations` shares them instead of computing them again.
_FRAMES: weakref.WeakKeyDictionary[Store, dict[tuple[str, int], tuple[pd.DataFrame, np.ndarray]]] = \
    weakref.WeakKeyDictionary()


class Observations:
    """Each ticker-day's observation built once per context budget and shared by every agent of the run.

    Anonymized observations use one :class:`~tr1_env.context.anonymize.Pseudonyms` per ticker (the ticker's
    replay is the episode), seeded by the run's seed, so every anonymized agent reads the same names.
    """

    def __init__(self, store: Store, seed: int = 0):
        self.store, self.seed = store, seed
        self._cache: dict[tuple[str, pd.Timestamp, int, str | None], Observation] = {}
        self._frames = _FRAMES.setdefault(store, {})
        self.pseudonyms: dict[str, Pseudonyms] = {}
        self._building = threading.Lock()

    def __len__(self) -> int:
        """The observations built so far (what a Ray worker weighs before keeping a window's)."""
        return len(self._cache)

    def get(self, ticker: str, day: pd.Timestamp, max_chars: int, position: float,
            anonymized: str | None = None, headlines: bool = True) -> Observation:
        """``max_chars=0``: the numeric observation (bars, indicators, headlines; no text), its indicator frame
        computed once per ticker and split basis (for the store, every window) instead of once per day;
        ``headlines=False`` leaves its headlines empty (for agents that read prices alone: most of a numeric
        observation's cost)."""
        key = (ticker, day, max_chars, anonymized, headlines)
        if key not in self._cache and not max_chars:
            view = self.store.asof(ticker, day)
            basis = (ticker, self.store.count_visible("splits", view.ticker, view.time))
            if basis not in self._frames:  # every session to the store's end, on the splits known at ``day``
                splits = self.store.visible("splits", view.ticker, view.time)
                prices = self.store.visible("prices", view.ticker, pd.Timestamp.max.tz_localize("UTC"))
                frame = indicators(split_adjust(prices, splits)).copy()  # one block per dtype: cheap daily slices
                self._frames[basis] = frame, frame["date"].to_numpy()
            frame, dates = self._frames[basis]
            naive = isinstance(day, pd.Timestamp) and day.tzinfo is None and day == day.normalize()
            known = day if naive else None  # else the view's close gives it
            self._cache[key] = numeric_observation(view, frame, headlines=headlines, dates=dates, day=known)
        if key not in self._cache:
            with self._building:  # an API agent's threads: a ticker's pseudonyms are first met in day order
                if key not in self._cache:
                    context = build_context(self.store, ticker, day, cfg=ContextConfig(max_chars=max_chars))
                    if anonymized:
                        names = self.pseudonyms.setdefault(ticker, Pseudonyms.for_episode(ticker, self.seed))
                        context = anonymize(context, names, anonymized)
                    self._cache[key] = context.observation()
        return dataclasses.replace(self._cache[key], position=position)


def _fingerprint(spec: AgentSpec, cfg: RunConfig, window: Window, every: int, max_chars: int,
                 held: dict[str, float]) -> str:
    """What decides an agent's actions; a saved replay with another fingerprint is stale and redone. The
    positions carried into the window count only when one is not flat, so flat starts keep their keys."""
    key = {"agent": spec.settings, "start": f"{window.start:%Y-%m-%d}", "end": f"{window.end:%Y-%m-%d}",
           "every": every, "max_chars": max_chars,
           "weights": list(cfg.agents.weights),
           "store": str(Path(cfg.window.store).resolve()) if cfg.window.store else "embedded",
           **({"held": dict(sorted(held.items()))} if any(held.values()) else {})}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def context_budget(spec: AgentSpec, cfg: RunConfig) -> int:
    """The characters of context an agent reads: an LLM's own budget or ``--llm-max-chars``; 0 (the numeric
    observation, no text) for agents that read bars alone, the default budget for other plug-ins."""
    if spec.llm:
        return spec.settings.get("max_chars", cfg.agents.llm_max_chars)
    return 0 if spec.numeric else ContextConfig().max_chars


@dataclasses.dataclass(frozen=True)
class Pending:
    """One agent's replay over one window as the run folder holds it: the fingerprint, the tickers whose saved
    decisions match it (``done``) and the rest (``todo``, in order), each with its decisions file."""

    fingerprint: str
    max_chars: int
    held: dict[str, float]
    paths: dict[str, Path]
    done: dict[str, pd.DataFrame]
    todo: list[str]


def decisions_path(spec: AgentSpec, out: Path, ticker: str) -> Path:
    """Where a window's folder ``out`` keeps an agent x ticker's decisions."""
    return out / "decisions" / f"{slug(spec.label)}__{ticker}.json"


def pending(spec: AgentSpec, cfg: RunConfig, window: Window, days: dict[str, pd.DatetimeIndex], out: Path,
            held: dict[str, float] | None = None) -> Pending:
    """What is left of one agent's replay over ``window``: saved decisions with this fingerprint are reloaded."""
    held = {t: float(held.get(t, 0.0)) if held else 0.0 for t in days}
    max_chars = context_budget(spec, cfg)
    fingerprint = _fingerprint(spec, cfg, window, spec.every, max_chars, held)
    paths = {t: decisions_path(spec, out, t) for t in days}
    done = {t: d for t in days if (d := load_decisions(paths[t], fingerprint)) is not None}
    return Pending(fingerprint, max_chars, held, paths, done, [t for t in days if t not in done])


def decide(spec: AgentSpec, cfg: RunConfig, window: Window, store: Store, days: dict[str, pd.DatetimeIndex],
           observations: Observations, todo: list[str], held: dict[str, float], max_chars: int
           ) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The agent built, fitted and asked day by day over ``todo``: each ticker's decision records, and the tickers
    whose replay failed (an :class:`AgentError`) with the error, dropped from the rest of the replay. Nothing is
    written: this is the part of a replay an executor may run anywhere (:mod:`benchmarks.executors`).

    A day's tickers are asked together (one batch: a local model decodes them at once), except an API model's: each
    ticker's days follow one another (a day's observation holds the position the day before decided) but the tickers
    do not wait for each other, so ``--api-concurrency`` calls stay in flight instead of a day's last few."""
    agent = spec.build()
    agent.fit(store, todo, window.start, window.end)  # trains on data up to window.train_until
    for t in todo:
        agent.reset(t)
    schedule = {t: sorted(decision_days(days[t], spec.every)) for t in todo}
    weights = cfg.agents.weight_map()
    position = {t: held[t] for t in todo}
    records: dict[str, list[dict]] = {t: [] for t in todo}
    failed: dict[str, str] = {}

    def ask(day: pd.Timestamp, batch: list[str]) -> None:
        try:
            decisions = agent.act([observations.get(t, day, max_chars, position[t], spec.anonymize,
                                                       not spec.prices_only) for t in batch])
        except AgentError as exc:  # keep what succeeded; the failed tickers leave this replay
            ok = exc.decisions is not None and len(exc.decisions) == len(batch)
            decisions = exc.decisions if ok else [None] * len(batch)
            error = " ".join(str(exc).split())
            failed.update({t: f"{day:%Y-%m-%d}: {error}" for t, d in zip(batch, decisions) if d is None})
        if len(decisions) != len(batch):
            raise RuntimeError(f"{spec.label} returned {len(decisions)} decisions for {len(batch)} observations")
        for t, d in zip(batch, decisions):
            if d is None:
                continue
            action = Action(int(d.action))
            records[t].append({"date": f"{day:%Y-%m-%d}", "action": action.name, "position_before": position[t],
                               "thesis": d.thesis, "meta": d.meta})
            position[t] = weights[action]

    lanes = min(getattr(agent, "concurrency", 1), len(todo)) if spec.api else 1
    if lanes > 1:  # each ticker's next day asked when its day before is answered, ``lanes`` at once, in turn
        def ahead() -> None:  # the observations built in day order while the calls wait (a context holds no position)
            for day in sorted(set().union(*map(set, schedule.values()))):
                for t in todo:
                    if day in schedule[t] and t not in failed and not stop.is_set():
                        observations.get(t, day, max_chars, 0.0, spec.anonymize, not spec.prices_only)

        stop = threading.Event()
        with ThreadPoolExecutor(lanes + 1) as pool:
            builder = pool.submit(ahead)
            running = {pool.submit(ask, schedule[t][0], [t]): (t, 0) for t in todo if schedule[t]}
            try:
                while running:
                    for step in wait(running, return_when=FIRST_COMPLETED).done:
                        t, k = running.pop(step)
                        step.result()
                        if k + 1 < len(schedule[t]) and t not in failed:
                            running[pool.submit(ask, schedule[t][k + 1], [t])] = (t, k + 1)
            finally:  # an error or Ctrl-C: nothing more is asked
                stop.set()
                for step in running:
                    step.cancel()
            builder.result()
    else:
        for day in sorted(set().union(*map(set, schedule.values()))):  # the run's one bar counts the cells
            if batch := [t for t in todo if day in schedule[t] and t not in failed]:
                ask(day, batch)
    return {t: records[t] for t in todo if t not in failed}, {t: failed[t] for t in todo if t in failed}


def save(state: Pending, records: dict[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """Every ticker's decisions: the saved ones and ``records`` (now saved, and as a reload would read them)."""
    done = dict(state.done)
    for t, rows in records.items():
        done[t] = save_decisions(state.paths[t], state.fingerprint, rows)
    return {t: done[t] for t in state.paths if t in done}
