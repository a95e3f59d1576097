"""The trained and LLM agents of the portfolio track: each decides a window's target weights over the book's columns.

* :class:`SB3Book`: stable-baselines3 PPO or A2C on ``tr1/Portfolio-v0`` (:class:`baselines.sb3.PortfolioSB3`),
  retrained per window on the ``--train-years`` before it, cached like the single-ticker SB3 agents.
* :class:`LLMBook`: an LLM of the single-ticker roster (API models, the SmolLM2 built-ins, ``hf:``/``vllm:``
  checkpoints; ``flag:`` in decisions mode), by ``--portfolio-llm-mode``: ``allocation`` asks one prompt per
  decision day, the Portfolio env's text observation (:mod:`tr1_env.context.allocation_prompt`: the members' market
  rows and headlines, the current weights and cash), whose JSON answer is read strictly
  (:func:`tr1_env.core.allocation.parse_allocation`); ``decisions`` asks the Trading-R1 call of each member from its
  own context, as the single-ticker replay does, and maps the calls to weights by
  :func:`~tr1_env.core.allocation.decisions_to_weights`. Between decision days (``--llm-decision-every``, the
  SmolLM2 rows' own interval) the book is not traded: its targets are the weights it drifted to.

A failed call or an invalid allocation is a failed decision (:class:`DecisionFailed`): the agent's window is saved
nowhere (an invalid answer is not cached either), the harness reports it and leaves the agent out of the
leaderboard, and the next run asks again; the calls that succeeded are cached by the agent, and a finished window is
saved in the run folder under a fingerprint of what decides it, so a rerun asks nothing twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from baselines.sb3 import PortfolioSB3
from benchmarks.budget import known_cost
from benchmarks.config import RunConfig
from benchmarks.replay import Observations, context_budget
from benchmarks.report import slug
from benchmarks.roster import AgentSpec
from benchmarks.run_folder import write_text
from tr1_env.context.allocation_prompt import ALLOCATION_SYSTEM
from tr1_env.core.agents import AgentError
from tr1_env.core.allocation import AllocationError, decisions_to_weights
from tr1_env.data.store import Store
from tr1_env.envs.portfolio_env import PortfolioEnv, weights_from_action
from tr1_env.evaluation.backtest import decision_days
from tr1_env.evaluation.portfolio import Legs
from tr1_env.evaluation.windows import Window

__all__ = ["LLM_MODES", "DecisionFailed", "LLMBook", "SB3Book"]

#: ``--portfolio-llm-mode``: how an LLM's answers become a book.
LLM_MODES = ("allocation", "decisions")


class DecisionFailed(RuntimeError):
    """A failed call or an invalid allocation: the agent's window has no book (the message names the day)."""


def _columns(tickers: tuple[str, ...], weights: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """Weights over ``tickers`` (rows x tickers) placed in the book's ``columns`` (the others 0)."""
    out = np.zeros((len(weights), len(columns)))
    out[:, [columns.index(t) for t in tickers]] = weights
    return out


class SB3Book:
    """PPO or A2C over the universe, retrained per window (:class:`baselines.sb3.PortfolioSB3`)."""

    llm, model = False, None

    def __init__(self, algo: str, cfg: RunConfig, store: Store, columns: tuple[str, ...]):
        self.label, self.store, self.columns, self.tickers = algo, store, columns, cfg.window.tickers or None
        self.sb3 = PortfolioSB3(algo, cfg.agents.sb3_steps, cfg.agents.train_years, cfg.execution, cfg.seed,
                                cfg.portfolio.universe)

    def weights(self, window: Window, days: pd.DatetimeIndex, held: np.ndarray, legs: Legs, start: pd.Timestamp,
                carried: np.ndarray) -> np.ndarray:
        """The policy's targets; each window's policy is trained on an env that starts in cash."""
        tickers, weights = self.sb3.weights(self.store, self.tickers, window.start, window.end)
        if len(weights) != len(days) - 1:
            raise ValueError(f"{self.label}: the env has {len(weights) + 1} sessions in {window.name}, the book "
                             f"{len(days)}")
        return _columns(tickers, weights, self.columns)


class LLMBook:
    """An LLM row of the roster deciding one book per window (module docstring); ``decided`` collects its decision
    days (the contamination flag reads them)."""

    llm = True

    def __init__(self, spec: AgentSpec, cfg: RunConfig, store: Store, columns: tuple[str, ...], out: Path):
        self.spec, self.cfg, self.store, self.columns, self.out = spec, cfg, store, columns, out
        self.label, self.model, self.mode = spec.label, spec.model, cfg.portfolio.portfolio_llm_mode
        self.max_chars = context_budget(spec, cfg)
        self.decided: list[pd.Timestamp] = []
        self._agent = None

    @property
    def agent(self):
        """The model, built on first use (a run whose windows are all saved loads no model)."""
        if self._agent is None:
            self._agent = self.spec.build()
        return self._agent

    def _fingerprint(self, window: Window, held: np.ndarray, carried: np.ndarray) -> str:
        cfg = self.cfg
        key = {"agent": self.spec.settings, "mode": self.mode, "start": f"{window.start:%Y-%m-%d}",
               "end": f"{window.end:%Y-%m-%d}", "every": self.spec.every, "columns": list(self.columns),
               "held": hashlib.sha256(held.tobytes()).hexdigest(), "carried": carried.round(12).tolist(),
               "execution": dataclasses.asdict(cfg.execution),
               "seed": cfg.seed, "store": str(Path(cfg.window.store).resolve()) if cfg.window.store else "embedded",
               **({"max_chars": self.max_chars, "weights": list(cfg.agents.weights)} if self.mode == "decisions"
                  else {})}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def weights(self, window: Window, days: pd.DatetimeIndex, held: np.ndarray, legs: Legs, start: pd.Timestamp,
                carried: np.ndarray) -> np.ndarray:
        """The window's targets (NaN rows between decision days: no order), reloaded when saved under the same
        fingerprint, else asked day by day from ``carried``, the weights the book holds into the window, and saved."""
        saved = self.saved(window, held, carried)
        if saved is not None:
            return np.array(saved["weights"], float)
        weights, payload = self.ask(window, days, held, legs, carried)
        self.keep(window, payload)
        return weights

    def spent(self) -> float:
        """Dollars its saved windows' calls cost (every window saved in the run folder, whatever its fingerprint:
        what the run has spent before it starts), at the price table's price; calls without token counts count 0."""
        total = 0.0
        for path in (self.out / "portfolio" / "decisions").glob(f"{slug(self.label)}__*.json"):
            try:
                records = json.loads(path.read_text())["decisions"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a file cut short is asked again
            for r in records:  # decisions mode: a call per ticker, each meta naming its model; allocation: one call
                meta = r.get("meta") or {}
                total += known_cost(meta.values() if self.mode == "decisions" else [{"model": self.model, **meta}])
        return total

    def _path(self, window: Window) -> Path:
        return self.out / "portfolio" / "decisions" / f"{slug(self.label)}__{window.name}.json"  # spent() globs these

    def saved(self, window: Window, held: np.ndarray, carried: np.ndarray) -> dict | None:
        """The window's decisions file (:meth:`ask`'s) as the run folder holds it under this fingerprint, its
        decision days counted; or None."""
        path = self._path(window)
        try:
            saved = json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            saved = {}  # a file cut short is asked again
        if saved.get("fingerprint") != self._fingerprint(window, held, carried):
            return None
        self.decided += [pd.Timestamp(r["date"]) for r in saved["decisions"]]
        return saved

    def ask(self, window: Window, days: pd.DatetimeIndex, held: np.ndarray, legs: Legs, carried: np.ndarray
            ) -> tuple[np.ndarray, dict]:
        """The window's targets asked day by day, and the decisions file that saves them (:meth:`keep`); writes
        nothing, so it may run in a worker."""
        fingerprint = self._fingerprint(window, held, carried)
        ask = self._allocation(window) if self.mode == "allocation" else self._decisions()
        schedule = set(decision_days(days, self.spec.every))
        out = np.full((len(days) - 1, len(self.columns)), np.nan)
        equity, records = 1.0, []
        for i, day in enumerate(tqdm(days[:-1], desc=f"portfolio {self.label} {window.name}", unit="day")):
            if day in schedule:
                out[i], record = ask(day, held[i], carried)
                records.append({"date": f"{day:%Y-%m-%d}", **record})
            booked = legs.book(out[i:i + 1], self.cfg.execution, slice(i, i + 1), carried, equity)  # not traded: drifts
            carried, equity = booked.carried[-1], equity * (1 + booked.ret[-1])
        return out, {"fingerprint": fingerprint, "weights": out.tolist(), "decisions": records}

    def keep(self, window: Window, payload: dict) -> None:
        """A window's decisions (:meth:`ask`'s file) saved in the run folder, its decision days counted."""
        self.decided += [pd.Timestamp(r["date"]) for r in payload["decisions"]]
        self._path(window).parent.mkdir(parents=True, exist_ok=True)
        write_text(self._path(window), json.dumps(payload, default=str))

    def _allocation(self, window: Window):
        """Day -> (targets, record) from the allocation prompt of the Portfolio env's text mode."""
        cfg = self.cfg
        env = PortfolioEnv(self.store, cfg.window.tickers or None, window.start, window.end, execution=cfg.execution,
                           universe_file=cfg.portfolio.universe, obs_mode="text", anonymize=self.spec.anonymize)
        env.reset(seed=cfg.seed)  # draws an anonymized episode's pseudonyms
        where = [self.columns.index(t) for t in env.tickers]

        def ask(day: pd.Timestamp, members: np.ndarray, carried: np.ndarray) -> tuple[np.ndarray, dict]:
            def invalid(text: str) -> str | None:
                try:
                    env.parse_action(text, day)
                except AllocationError as exc:
                    return f"invalid allocation: {exc}"
                return None

            prompt = env.observation_at(day, carried[where])
            messages = [{"role": "system", "content": ALLOCATION_SYSTEM}, {"role": "user", "content": prompt}]
            completion = self.agent.complete([messages], check=invalid)[0]
            if "error" in completion:
                raise DecisionFailed(f"{day:%Y-%m-%d}: {completion['error']}")
            target = np.zeros(len(self.columns))
            target[where] = weights_from_action(env.parse_action(completion["text"], day), members[where])
            meta = {k: v for k, v in completion.items() if k != "text"}
            return target, {"weights": dict(zip(self.columns, target.round(6).tolist())),
                            "thesis": completion["text"], "meta": meta}

        return ask

    def _decisions(self):
        """Day -> (targets, record) from each member's Trading-R1 call, read as the single-ticker replay reads it."""
        observations = Observations(self.store, self.cfg.seed)
        weight = self.cfg.agents.weight_map()
        position = dict.fromkeys(self.columns, 0.0)  # each ticker's last call's weight: what its observation holds

        def ask(day: pd.Timestamp, members: np.ndarray, carried: np.ndarray) -> tuple[np.ndarray, dict]:
            tickers = [t for t, ok in zip(self.columns, members) if ok]
            try:
                decisions = self.agent.act([observations.get(t, day, self.max_chars, position[t],
                                                             self.spec.anonymize) for t in tickers])
            except AgentError as exc:
                raise DecisionFailed(f"{day:%Y-%m-%d}: {' '.join(str(exc).split())}") from None
            actions = {t: d.action for t, d in zip(tickers, decisions, strict=True)}
            position.update({t: weight[a] for t, a in actions.items()})
            target = decisions_to_weights(actions, self.columns)
            return target, {"weights": dict(zip(self.columns, target.round(6).tolist())),
                            "actions": {t: a.name for t, a in actions.items()},
                            "thesis": {t: d.thesis for t, d in zip(tickers, decisions)},
                            "meta": {t: d.meta for t, d in zip(tickers, decisions)}}

        return ask
