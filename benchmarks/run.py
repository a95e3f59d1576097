"""Replay a held-out period for every agent and write the reports.

    python benchmarks/run.py                                   # offline: baselines, SB3, SmolLM2
    python benchmarks/run.py --model gpt-4.1 o4-mini           # adds API models (OPENAI_API_KEY)
    python benchmarks/run.py --agent examples.custom_agent:MomentumAgent --agents buy_and_hold
    python benchmarks/run.py --walk-forward quarterly --start 2023-07-01 --end 2025-06-30   # leaderboard.html

Each agent decides at the close of each decision day from that day's context alone (tickers
batched per day), the decisions go through :mod:`tr1_env.evaluation.backtest` and :mod:`tr1_env.evaluation.metrics`, and
:mod:`benchmarks.report` writes the tables, tearsheets and plots. An agent x ticker's decisions are
saved the moment its replay ends (and LLM calls are cached by the agents themselves), so a killed
run resumes where it stopped and a finished one reruns without asking any agent again.

A failed call is never a decision: the agent x ticker (in that window) is reported as failed, nothing
of it is saved, the other results are written, and the next run asks again for exactly what failed.
The exit status is 0 only when every requested agent x ticker ran; 1 (with a one-line reason) when any
failed or was skipped, or nothing was replayed; 2 for arguments no replay can use.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from tqdm.auto import tqdm

from baselines import BASELINES, TRAINED
from benchmarks.config import RunConfig
from benchmarks.config import OFFLINE_AGENTS
from benchmarks.leaderboard import BENCHMARK, signal_table, write_leaderboard, write_portfolio_tearsheets
from benchmarks.leaderboard import markdown as leaderboard_markdown
from benchmarks.escaping import md_frame
from benchmarks.report import slug, write_reports
from benchmarks.run_folder import (FolderRefused, begin_run, check_out, claim, finish_run, new_run_id, verify_run,
                                   write_csv, write_text)
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, AgentError, Observation, load_agent
from tr1_env.context.anonymize import DEFAULT_LEVEL, Pseudonyms, anonymize
from tr1_env.evaluation.backtest import backtest, buy_and_hold, decision_days
from tr1_env.util.cli_args import add_dataclass_args, flat_dict, from_args
from tr1_env.context.reference import ContextConfig, build_context, indicators, numeric_observation
from tr1_env.contamination.cutoffs import Cutoff, latest, model_cutoff, parse_overrides, post_cutoff_window
from tr1_env.data.store import Store, split_adjust
from tr1_env.util.files import jsonable
from tr1_env.evaluation.windows import Window
from tr1_env.util.redact import redact_url

#: ``--model`` prefixes served by an Agent class, not by ``make_llm_agent``; the rest of the spec is its ``path``.
MODEL_CLASSES = {"flag": "tr1_agent.flag_trader:FlagTraderAgent"}
LOCAL_LLM_PREFIXES = ("hf:", "vllm:")
#: Offline LLM agents --agents accepts by name (others come through --model), each with the setting of its own decision
#: interval: the CPU SmolLM2 rows decide every --smollm2-decision-every sessions and their labels say so (1: they
#: follow --llm-decision-every as every other LLM does).
BUILTIN_LLMS: dict[str, str] = {"smollm2": "smollm2_decision_every", "smollm2-tr1": "smollm2_decision_every"}


class UsageError(ValueError):
    """A setting no replay can use (an unknown agent or ticker): one line, exit 2 (an unusable --out is a
    :class:`~benchmarks.run_folder.FolderRefused`)."""


@dataclass(frozen=True)
class AgentSpec:
    """A row of the tables: how to build the agent (only when something is left to replay) and its schedule."""

    label: str
    build: Callable[[], Agent]
    llm: bool
    settings: dict
    unavailable: str | None = None  # why it cannot run here (a missing API key): skipped with this message
    model: str | None = None  # the LLM's spec, whose training cutoff the reports flag
    anonymize: str | None = None  # reads anonymized contexts at this level (tr1_env.context.anonymize)
    every: int = 1  # decides every k sessions
    numeric: bool = False  # reads only bars, indicators and headlines: no context text is built for it


def _plugin_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="tr1.agents")}


def _llm_spec(spec: str, cfg: RunConfig, anonymized: str | None = None, seed: int | None = None) -> AgentSpec:
    """smollm2 / hf: / vllm: run locally; flag: loads a checkpoint; any other name is an OpenAI-compatible model.

    ``anonymized``: the level of anonymized contexts the agent reads (a FLAG-TRADER checkpoint, its anonymized env
    prompt), or None.
    """
    prefix = spec.partition(":")[0]
    label = f"{spec}+anon" if anonymized else spec
    if prefix in MODEL_CLASSES:  # load_agent names the missing module if this install lacks it
        path = spec.partition(":")[2]

        def build_checkpoint() -> Agent:
            if not Path(path).exists():
                raise SystemExit(f"--model {spec}: no checkpoint at {path!r}")
            return load_agent(MODEL_CLASSES[prefix], path=path, anonymize=anonymized)

        settings = {"class": MODEL_CLASSES[prefix], "path": path, **({"anonymize": anonymized} if anonymized else {})}
        return AgentSpec(label, build_checkpoint, True, settings, model=spec, every=cfg.llm_decision_every)
    unavailable = None
    if spec in BUILTIN_LLMS or spec.startswith(LOCAL_LLM_PREFIXES):
        from tr1_agent.models import BUILTIN_ADAPTERS, read_card

        # per backend: vLLM runs on a GPU, with the training pipeline's sizes; a trained checkpoint replays as trained
        vllm = spec.startswith("vllm:")
        path = spec.partition(":")[2] if ":" in spec else BUILTIN_ADAPTERS.get(spec)
        card = read_card(str(path)) if path else {}
        kwargs = {"max_new_tokens": card.get("max_new_tokens") or (cfg.vllm_max_new_tokens if vllm
                                                                     else cfg.local_max_new_tokens),
                  "force_decision": cfg.force_decision}
        if not vllm:
            kwargs.update(batch_size=cfg.llm_batch_size, threads=cfg.local_threads or None)
        if "enable_thinking" in card:
            kwargs["enable_thinking"] = card["enable_thinking"]
        if card.get("max_context_chars") or vllm:
            kwargs["max_chars"] = card.get("max_context_chars") or cfg.vllm_max_chars
    else:
        kwargs = {"base_url": cfg.base_url, "max_tokens": cfg.api_max_tokens}
        if not (cfg.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")):
            unavailable = "set the OPENAI_API_KEY environment variable (or pass --base-url for another endpoint)"
        kwargs.update(timeout=cfg.request_timeout, max_retries=cfg.max_retries)

    own = getattr(cfg, BUILTIN_LLMS[spec]) if spec in BUILTIN_LLMS else 1
    every = own if own != 1 else cfg.llm_decision_every
    if own != 1:
        label = label.replace(spec, f"{spec} (every {own} sessions)", 1)
    if seed is not None:  # one of --samples: sampled, seeded, labelled
        kwargs.update(temperature=cfg.temperature, seed=seed)
        label = f"{label} #{seed}"

    def build() -> Agent:
        from tr1_agent.llm_agents import make_llm_agent

        return make_llm_agent(spec, **{k: v for k, v in kwargs.items() if k != "max_chars"})

    # what decides the answers (the fingerprint): the endpoint without credentials, the retry budget and threads left out
    settings = {"spec": spec, **{k: v for k, v in kwargs.items() if k not in ("timeout", "max_retries", "threads")},
                **({"base_url": redact_url(kwargs["base_url"])} if "base_url" in kwargs else {}),
                **({"anonymize": anonymized} if anonymized else {})}
    return AgentSpec(label, build, True, settings, unavailable, spec, anonymized, every)


def _unknown(flag: str, name: str, valid: list[str], hint: str) -> UsageError:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    guess = f" (did you mean {', '.join(close)}?)" if close else ""
    return UsageError(f"{flag}: unknown agent {name!r}{guess}; {hint}")


def _check_names(agents: tuple[str, ...], plugin_args: tuple[str, ...], plugins: set[str]) -> None:
    """A typo in --agents or --agent is a UsageError naming the closest agents, never a model sent to an API."""
    named = [*BASELINES, *BUILTIN_LLMS, *sorted(plugins)]
    for name in agents:
        if name not in named and (":" not in name or name.startswith((*LOCAL_LLM_PREFIXES, *MODEL_CLASSES))):
            raise _unknown("--agents", name, named, f"--agents takes {', '.join(named)} or module:Class; "
                                                    "model names (gpt-4.1, hf:PATH, vllm:ID, flag:PATH) go to --model")
    for name in (*agents, *plugin_args):
        if ":" in name and name not in plugins and not name.startswith((*LOCAL_LLM_PREFIXES, *MODEL_CLASSES)):
            module = name.partition(":")[0]
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                raise UsageError(f"cannot load agent {name!r}: no module named {module!r} (run from the folder "
                                 "that holds it, or install it)")
    for name in plugin_args:
        if name not in plugins and ":" not in name:
            raise _unknown("--agent", name, sorted(plugins), "--agent takes module:Class or a tr1.agents entry point "
                                                             f"(installed: {', '.join(sorted(plugins)) or 'none'})")


def resolve_agents(cfg: RunConfig) -> list[AgentSpec]:
    """Every requested agent, in order, without duplicates; nothing is built yet. An unknown name is a UsageError."""
    plugins = _plugin_names()
    specs: list[AgentSpec] = []
    agents = cfg.agents if cfg.agents is not None else tuple(BASELINES) if cfg.walk_forward else OFFLINE_AGENTS
    _check_names(agents, cfg.agent, plugins)
    pool = cfg.sb3_pool if cfg.sb3_pool is not None else bool(cfg.walk_forward)
    for name in dict.fromkeys((*agents, *cfg.model, *cfg.agent)):
        if name in BASELINES:
            kwargs = ({"steps": cfg.sb3_steps, "train_years": cfg.train_years, "execution": cfg.execution,
                       "seed": cfg.seed, "pool": pool} if name in TRAINED
                      else {"seed": cfg.seed} if name == "random" else {})
            # the fingerprint names the execution's settings one by one (as before it was a value)
            settings = {"class": BASELINES[name], **{k: v for k, v in kwargs.items() if k != "execution"},
                        **(dataclasses.asdict(cfg.execution) if "execution" in kwargs else {})}
            specs.append(AgentSpec(name, lambda n=name, kw=kwargs: load_agent(BASELINES[n], **kw), False,
                                   settings, every=cfg.decision_every, numeric=True))
        elif name in plugins or (":" in name and not name.startswith((*LOCAL_LLM_PREFIXES, *MODEL_CLASSES))):
            label = name.rpartition(":")[2] if ":" in name else name
            specs.append(AgentSpec(label, lambda n=name: load_agent(n), False, {"plugin": name},
                                   every=cfg.decision_every))
        else:  # an LLM: plain, anonymized, or both (--memorisation); --samples seeds of a sampled one
            variants = (None, cfg.anonymize or DEFAULT_LEVEL) if cfg.memorisation else (cfg.anonymize,)
            sampled = cfg.samples > 1 and name not in BUILTIN_LLMS and name.partition(":")[0] not in MODEL_CLASSES
            specs += [_llm_spec(name, cfg, anonymized, seed) for anonymized in variants
                      for seed in (range(cfg.samples) if sampled else [None])]
    return specs


class Observations:
    """Each ticker-day's observation built once per context budget and shared by every agent of the run.

    Anonymized observations use one :class:`~tr1_env.context.anonymize.Pseudonyms` per ticker (the ticker's
    replay is the episode), seeded by the run's seed, so every anonymized agent reads the same names.
    """

    def __init__(self, store: Store, seed: int = 0):
        self.store, self.seed = store, seed
        self._cache: dict[tuple[str, pd.Timestamp, int, str | None], Observation] = {}
        self._frames: dict[tuple[str, int], pd.DataFrame] = {}
        self.pseudonyms: dict[str, Pseudonyms] = {}

    def get(self, ticker: str, day: pd.Timestamp, max_chars: int, position: float,
            anonymized: str | None = None) -> Observation:
        """``max_chars=0``: the numeric observation (bars, indicators, headlines; no text), its indicator frame
        computed once per ticker and split basis instead of once per day."""
        key = (ticker, day, max_chars, anonymized)
        if key not in self._cache and not max_chars:
            view = self.store.asof(ticker, day)
            splits = self.store.visible("splits", view.ticker, view.time)
            basis = (ticker, len(splits))
            if basis not in self._frames:  # every session to the store's end, on the splits known at ``day``
                prices = self.store.visible("prices", view.ticker, pd.Timestamp.max.tz_localize("UTC"))
                self._frames[basis] = indicators(split_adjust(prices, splits))
            self._cache[key] = numeric_observation(view, self._frames[basis])
        if key not in self._cache:
            context = build_context(self.store, ticker, day, cfg=ContextConfig(max_chars=max_chars))
            if anonymized:
                names = self.pseudonyms.setdefault(ticker, Pseudonyms(ticker, seed=self.seed))
                context = anonymize(context, names, anonymized)
            self._cache[key] = context.observation()
        return dataclasses.replace(self._cache[key], position=position)


def _fingerprint(spec: AgentSpec, cfg: RunConfig, window: Window, every: int, max_chars: int) -> str:
    """What decides an agent's actions; a saved replay with another fingerprint is stale and redone."""
    key = {"agent": spec.settings, "start": f"{window.start:%Y-%m-%d}", "end": f"{window.end:%Y-%m-%d}",
           "every": every, "max_chars": max_chars,
           "weights": list(cfg.weights), "store": str(Path(cfg.store).resolve()) if cfg.store else "embedded"}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_decisions(path: Path, fingerprint: str) -> pd.DataFrame | None:
    """The saved replay, or None when there is none, it is stale, or it is unreadable (then moved aside, said so)."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") != fingerprint:
            return None
        frame = pd.DataFrame(saved["decisions"]).assign(date=lambda d: pd.to_datetime(d["date"])).set_index("date")
        names_ok = set(frame["action"]) <= set(Action.__members__) if "action" in frame else False
        if not {"action", "thesis", "meta"} <= set(frame.columns) or not names_ok:
            raise ValueError("a column or an action name is missing")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        aside = claim(path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
        path.replace(aside)
        print(f"warning: {path} is unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
              f"moved to {aside.name}, replaying it again", file=sys.stderr)
        return None
    return frame


def _save_decisions(path: Path, fingerprint: str, records: list[dict]) -> None:
    """Atomic: a run killed mid-write leaves the previous file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(jsonable({"fingerprint": fingerprint, "decisions": records})))


def replay(spec: AgentSpec, cfg: RunConfig, window: Window, store: Store, days: dict[str, pd.DatetimeIndex],
           observations: Observations, out: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """One agent's decisions (``action``, ``thesis``, ``meta`` by date) per ticker, replayed or reloaded, and the
    tickers whose replay failed (an :class:`AgentError`) with the error: those are dropped from the rest of the
    replay and saved nowhere, so the next run replays exactly them."""
    every = spec.every
    if spec.llm:
        max_chars = spec.settings.get("max_chars", cfg.llm_max_chars)
    else:
        max_chars = 0 if spec.numeric else ContextConfig().max_chars
    fingerprint = _fingerprint(spec, cfg, window, every, max_chars)
    paths = {t: out / "decisions" / f"{slug(spec.label)}__{t}.json" for t in days}
    done = {t: d for t in days if (d := _load_decisions(paths[t], fingerprint)) is not None}
    todo = [t for t in days if t not in done]
    if not todo:
        return done, {}
    agent = spec.build()
    agent.fit(store, todo, window.start, window.end)  # trains on data up to window.train_until
    for t in todo:
        agent.reset(t)
    schedule = {t: set(decision_days(days[t], every)) for t in todo}
    weights = cfg.weight_map()
    position = dict.fromkeys(todo, 0.0)
    records: dict[str, list[dict]] = {t: [] for t in todo}
    failed: dict[str, str] = {}
    for day in tqdm(sorted(set().union(*schedule.values())), desc=f"replay {spec.label} {window.name}", unit="day"):
        batch = [t for t in todo if day in schedule[t] and t not in failed]
        if not batch:
            continue
        try:
            decisions = agent.act([observations.get(t, day, max_chars, position[t], spec.anonymize) for t in batch])
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
    for t in todo:
        if t not in failed:
            _save_decisions(paths[t], fingerprint, records[t])
            done[t] = _load_decisions(paths[t], fingerprint)
    return {t: done[t] for t in days if t in done}, failed


def coverage(store: Store, tickers: tuple[str, ...], days: dict[str, pd.DatetimeIndex], start: str, end: str) -> dict:
    """Data caveats per ticker: headlines in the window and the modalities its first context states as missing."""
    news = store.table("news")
    lo, hi = pd.Timestamp(start, tz="UTC") - pd.Timedelta(days=30), pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    out = {}
    for t in tickers:
        rows = news[(news["ticker"] == t) & (news["available_at"] >= lo) & (news["available_at"] < hi)]
        first = build_context(store, t, days[t][0])
        out[t] = {"sessions": len(days[t]), "headlines_in_window": len(rows),
                  "missing_modalities_on_first_day": list(first.missing)}
    return out


def cutoffs(specs: list[AgentSpec], cfg: RunConfig) -> dict[str, Cutoff]:
    """The training cutoff of every LLM row: the shipped table, a base model's, or ``--cutoff``."""
    per_model, default = parse_overrides(cfg.cutoff)
    out = {}
    for spec in specs:
        if spec.model is not None:
            found = model_cutoff(spec.model, per_model.get(spec.model))
            out[spec.label] = found if found.date is not None or default is None else model_cutoff(spec.model, default)
    return out


def post_cutoff(cfg: RunConfig, store: Store, found: dict[str, Cutoff]) -> RunConfig:
    """``--post-cutoff``: the same window length, starting after the latest cutoff of the run's LLMs."""
    try:
        last = latest(found.values())
        data_end = min(store.trading_days(t)[-1] for t in cfg.ticker_list(store))
        start, end = post_cutoff_window(cfg.start, cfg.end, last, data_end)
    except ValueError as exc:
        raise UsageError(f"--post-cutoff: {exc}") from None
    return dataclasses.replace(cfg, start=f"{start:%Y-%m-%d}", end=f"{end:%Y-%m-%d}")


def _concat(per_window: list[dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]]]):
    """Each agent's per-ticker accounting and decisions over all windows, in order (one book per ticker)."""
    out: dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]] = {}
    for agent in dict.fromkeys(a for per in per_window for a in per):
        tickers = dict.fromkeys(t for per in per_window if agent in per for t in per[agent])
        out[agent] = {t: tuple(pd.concat([per[agent][t][i] for per in per_window if agent in per]) for i in (0, 1))
                      for t in tickers}
    return out


def check(cfg: RunConfig, store: Store) -> tuple[str, ...]:
    """What only the store can tell, before anything is written: the run's tickers, or a UsageError."""
    tickers = cfg.ticker_list(store)
    unknown = [t for t in tickers if t not in store.tickers]
    if unknown:
        raise UsageError(f"--tickers: {', '.join(unknown)} not in the store; it has {', '.join(store.tickers)}")
    return tickers


def run(cfg: RunConfig) -> pd.DataFrame:
    """The whole benchmark; returns the summary table (also written under ``cfg.out``).

    Every run is a list of windows (:func:`tr1_env.evaluation.windows.windows`; one unless ``--walk-forward``): each agent
    is built and fitted afresh per window, its books start flat, and the per-ticker tables, the leaderboard and
    the page are written over all windows together. An agent x ticker whose replay failed in any window is left
    out of every table (its other windows' decisions are saved for the next run) and an agent with a failure
    is left out of the leaderboard. ``summary.attrs`` holds ``run_id``, ``failed`` (agent -> ticker -> error)
    and ``skipped`` (agent -> why).
    """
    t0 = time.time()
    check_out(cfg.out, cfg.force)  # before anything is read or written
    store = Store(cfg.store)
    tickers = check(cfg, store)
    specs = resolve_agents(cfg)
    try:
        found = cutoffs(specs, cfg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if cfg.post_cutoff:
        cfg = post_cutoff(cfg, store, found)
    protocol = cfg.protocol()
    days_by_window = {w: {t: store.trading_days(t, w.start, w.end) for t in tickers} for w in protocol}
    short = [f"{t} in {w.name}" for w, days in days_by_window.items() for t, d in days.items() if len(d) < 2]
    if short:
        raise UsageError(f"fewer than two sessions: {', '.join(short)}")
    out = Path(cfg.out)
    if (out / "config.json").exists() and (problems := verify_run(out)):
        print(f"note: {out} held an unfinished or mixed run ({problems[0]}); its reports are replaced",
              file=sys.stderr)
    closes = {t: store.closes(t) for t in tickers}
    opens = {t: store.closes(t, "open") for t in tickers}  # read only by a fill at an open
    dividends = {t: store.dividends(t) if cfg.total_return else None for t in tickers}  # on the closes' split basis
    whole = {t: store.trading_days(t, cfg.start, cfg.end) for t in tickers}
    config = {**flat_dict(cfg), "base_url": redact_url(cfg.base_url)}
    meta = {"run_id": new_run_id(), "config": config,
            "windows": [w.name for w in protocol], "coverage": coverage(store, tickers, whole, cfg.start, cfg.end),
            "returns": "total return (dividends at ex-date)" if cfg.total_return else "price return (no dividends)",
            "skipped": {}, "failed": {}, "cutoffs": {label: dataclasses.asdict(c) for label, c in found.items()},
            "pseudonyms": {}}
    begin_run(out, meta)

    for spec in specs:
        if spec.unavailable:  # say why and go on with the other agents
            print(f"skipping {spec.label}: {spec.unavailable}", file=sys.stderr)
            meta["skipped"][spec.label] = spec.unavailable
    per_window, benches = {}, []
    for window, days in days_by_window.items():
        folder = out if len(protocol) == 1 else out / "windows" / window.name
        (folder / "returns").mkdir(parents=True, exist_ok=True)
        observations = Observations(store, cfg.seed)  # shared by the agents of this window
        bench = {t: buy_and_hold(closes[t], days[t], cfg.execution, dividends[t], opens[t]) for t in tickers}
        results: dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]] = {}
        for spec in specs:
            if spec.unavailable:
                continue
            decided, failed = replay(spec, cfg, window, store, days, observations, folder)
            for t, error in failed.items():
                where = t if len(protocol) == 1 else f"{t} in {window.name}"
                print(f"failed {spec.label} on {where}: {error}", file=sys.stderr)
                errors = meta["failed"].setdefault(spec.label, {})
                errors[t] = "; ".join([*([errors[t]] if t in errors else []),
                                       error if len(protocol) == 1 else f"{window.name} {error}"])
            results[spec.label] = {}
            for t in decided:
                frame = backtest(decided[t]["action"].map(Action.parse), closes[t], days[t], cfg.execution,
                                 cfg.weight_map(), dividends[t], opens[t])
                write_csv(folder / "returns" / f"{slug(spec.label)}__{t}.csv", frame, date_format="%Y-%m-%d")
                results[spec.label][t] = (frame, decided[t])
        meta["pseudonyms"].update({t: p.mapping for t, p in observations.pseudonyms.items()})
        # the leaderboard's reference, even when buy-and-hold is not asked for as a row
        per_window[window] = ({BENCHMARK: {t: (b, pd.DataFrame({"action": ["STRONG_BUY"]})) for t, b in bench.items()},
                               **results} if BENCHMARK not in results else results)
        benches.append(bench)
    # an agent x ticker that failed in one window is in no table: its chained book would miss that window
    for per in per_window.values():
        for agent, errors in meta["failed"].items():
            for t in errors:
                per.get(agent, {}).pop(t, None)
    results = _concat([{a: v for a, v in per.items() if a in {s.label for s in specs} and v}
                       for per in per_window.values()])
    bench = {t: pd.concat([b[t] for b in benches]) for t in tickers}
    tearsheets = len(protocol) == 1 and cfg.tearsheets
    notes = {**meta["skipped"], **{f"{a} on {t}": f"the replay failed ({e}); the next run retries it"
                                   for a, per in meta["failed"].items() for t, e in per.items()}}
    summary = write_reports(results, bench, dataclasses.replace(cfg, tearsheets=tearsheets), out, meta["coverage"],
                            notes, {label: c for label, c in found.items() if label in results}, protocol,
                            meta["run_id"])
    ranked = {w: {a: v for a, v in per.items() if a not in meta["failed"] and v} for w, per in per_window.items()}
    portfolio_sheets = write_portfolio_tearsheets(ranked, cfg, out / "tearsheets") if cfg.tearsheets else {}
    board = write_leaderboard(ranked, cfg, out, _notes(cfg, protocol, meta, specs), portfolio_sheets, meta["run_id"],
                              found, signal_table(ranked, closes, cfg))
    write_text(out / "leaderboard.md", leaderboard_markdown(md_frame(board), cfg))
    meta["wall_time_s"] = round(time.time() - t0, 1)
    finish_run(out, meta, "failed" if meta["failed"] or meta["skipped"] or summary.empty else "complete")
    summary.attrs.update(run_id=meta["run_id"], failed=meta["failed"], skipped=meta["skipped"])
    return summary


def outcome(summary: pd.DataFrame, cfg: RunConfig) -> str | None:
    """None when every requested agent x ticker ran, else the one-line reason for a non-zero exit."""
    failed = [f"{a} on {t}" for a, per in summary.attrs.get("failed", {}).items() for t in per]
    skipped = list(summary.attrs.get("skipped", {}))
    if summary.empty:
        return "nothing was replayed" + (f" ({len(skipped)} agent(s) skipped: {', '.join(skipped)})" if skipped else "")
    parts = ([f"{len(failed)} agent x ticker replay(s) failed: {', '.join(failed)}"] if failed else []) + (
        [f"{len(skipped)} agent(s) skipped: {', '.join(skipped)}"] if skipped else [])
    return "; ".join(parts) + f" (details in {Path(cfg.out) / 'summary.md'}; rerun to retry)" if parts else None


def _notes(cfg: RunConfig, protocol: list[Window], meta: dict, specs: list[AgentSpec]) -> list[str]:
    """The page's notes: protocol, fills, costs, training, coverage, skips; each said once."""
    pool = cfg.sb3_pool if cfg.sb3_pool is not None else bool(cfg.walk_forward)
    no_news = [t for t, c in meta["coverage"].items() if c["headlines_in_window"] == 0]
    flagged = [f"{label}: training cutoff {'unknown' if c['date'] is None else format(c['date'], '%Y-%m-%d')} "
               f"({c['basis']})"
               for label, c in meta["cutoffs"].items()]
    return [
        f"{len(protocol)} window(s) from {protocol[0].start:%Y-%m-%d} to {protocol[-1].end:%Y-%m-%d}"
        + (f" ({cfg.walk_forward[0]})" if len(cfg.walk_forward) == 1 else "") + ". Each window starts flat (buy-and-hold "
        "too) and its first session's return belongs to no one; the portfolio is the equal-weight mean of the "
        "per-ticker daily net returns, rebalanced daily.",
        f"Execution: {cfg.execution.describe()}; {meta['returns']}.",
        *([f"SB3 PPO/A2C retrained before every window on a rolling {cfg.train_years:g}-year span ending the day "
           f"before it ({cfg.sb3_steps} steps, {'one policy over all tickers' if pool else 'one policy per ticker'}), "
           "paid in training with these fills and costs."]
          if any(s.label in TRAINED for s in specs) else []),
        f"Tests on the daily portfolio returns: verdict from the studentized Sharpe difference to buy-and-hold in one "
        f"two-sided Romano-Wolf step-down at family-wise {cfg.alpha:g}; Hansen's studentized SPA on the mean return "
        f"per agent (spa_p) and over all; model confidence set at {cfg.alpha:g}; Sharpe CI "
        f"{round(100 * (1 - cfg.alpha))}% percentile; arch stationary bootstrap, mean block {cfg.block:g} days, "
        f"{max(cfg.bootstrap, 100)} resamples, seed {cfg.seed}; deflated Sharpe for "
        f"{cfg.trials or 'the number of agents'} trials.",
        *([f"LLM agents decide every {cfg.llm_decision_every} session(s); SmolLM2 on CPU every "
           f"{cfg.smollm2_decision_every} (labelled in its row)" + (f"; {cfg.samples} samples per sampled LLM at "
                                                                    f"temperature {cfg.temperature:g}"
                                                                    if cfg.samples > 1 else "") + "."]
          if any(s.llm for s in specs) else []),
        *flagged,
        *([f"No company headlines in the span for {', '.join(no_news)}: news rules stay flat there."] if no_news else []),
        *[f"Skipped {a}: {why}" for a, why in meta["skipped"].items()],
        *[f"Left out {a}: its replay failed on {', '.join(per)}; the next run retries it."
          for a, per in meta["failed"].items()],
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n")[0])
    add_dataclass_args(parser, RunConfig)
    return parser


def _usage(parser: argparse.ArgumentParser, exc: Exception) -> int:
    print(f"{parser.prog}: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """0: every agent x ticker ran; 1: some failed or were skipped, or nothing ran; 2: unusable arguments."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if os.getcwd() not in sys.path:  # plug-ins (examples.custom_agent:MomentumAgent) import from the working directory
        sys.path.insert(0, os.getcwd())
    start = time.time()
    try:
        cfg = from_args(RunConfig, ns)  # RunConfig's own checks raise ValueError
    except ValueError as exc:
        return _usage(parser, exc)
    try:
        summary = run(cfg)
    except (UsageError, FolderRefused) as exc:
        return _usage(parser, exc)
    print((Path(cfg.out) / "summary.md").read_text())
    print((Path(cfg.out) / "leaderboard.md").read_text())
    print(f"wall time {time.time() - start:.0f} s; outputs in {cfg.out}")
    reason = outcome(summary, cfg)
    if reason:
        print(f"{parser.prog}: error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
