"""Replay a held-out period for every agent and write the reports.

    python benchmarks/run.py                                   # offline: baselines, SB3, SmolLM2
    python benchmarks/run.py --model gpt-4.1 o4-mini           # adds API models (OPENAI_API_KEY)
    python benchmarks/run.py --agent examples.custom_agent:MomentumAgent --agents buy_and_hold

Each agent decides at the close of each decision day from that day's context alone (tickers
batched per day), the decisions go through :mod:`tr1_env.backtest` and :mod:`tr1_env.metrics`, and
:mod:`benchmarks.report` writes the tables, tearsheets and plots. An agent x ticker's decisions are
saved the moment its replay ends (and LLM calls are cached by the agents themselves), so a killed
run resumes where it stopped and a finished one reruns without asking any agent again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
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
from benchmarks.report import slug, write_reports
from tr1_env.actions import Action
from tr1_env.agents import Agent, Observation, load_agent
from tr1_env.anonymize import Pseudonyms, anonymize
from tr1_env.backtest import backtest, buy_and_hold, decision_days
from tr1_env.cli_args import add_dataclass_args, from_args
from tr1_env.context import ContextConfig, build_context
from tr1_env.cutoffs import Cutoff, latest, model_cutoff, parse_overrides, post_cutoff_window
from tr1_env.data.store import Store
from tr1_env.files import jsonable

#: ``--model`` prefixes served by an Agent class, not by ``make_llm_agent``; the rest of the spec is its ``path``.
MODEL_CLASSES = {"flag": "tr1_agent.flag_trader:FlagTraderAgent"}
LOCAL_LLM_PREFIXES = ("hf:", "vllm:")


@dataclass(frozen=True)
class AgentSpec:
    """A row of the tables: how to build the agent (only when something is left to replay) and its schedule."""

    label: str
    build: Callable[[], Agent]
    llm: bool
    settings: dict
    unavailable: str | None = None  # why it cannot run here (a missing API key): skipped with this message
    model: str | None = None  # the LLM's spec, whose training cutoff the reports flag
    anonymize: bool = False  # reads anonymized contexts (tr1_env.anonymize)


def _plugin_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="tr1.agents")}


def _llm_spec(spec: str, cfg: RunConfig, anonymized: bool = False) -> AgentSpec:
    """smollm2 / hf: / vllm: run locally; flag: loads a checkpoint; any other name is an OpenAI-compatible model.

    ``anonymized``: the agent reads anonymized contexts (a FLAG-TRADER checkpoint, its anonymized env prompt).
    """
    prefix = spec.partition(":")[0]
    label = f"{spec}+anon" if anonymized else spec
    if prefix in MODEL_CLASSES:  # load_agent names the missing module if this install lacks it
        path = spec.partition(":")[2]

        def build_checkpoint() -> Agent:
            if not Path(path).exists():
                raise SystemExit(f"--model {spec}: no checkpoint at {path!r}")
            return load_agent(MODEL_CLASSES[prefix], path=path, anonymize=anonymized)

        settings = {"class": MODEL_CLASSES[prefix], "path": path, **({"anonymize": True} if anonymized else {})}
        return AgentSpec(label, build_checkpoint, True, settings, model=spec)
    unavailable = None
    if spec == "smollm2" or spec.startswith(LOCAL_LLM_PREFIXES):
        from tr1_agent.models import read_card

        # per backend: vLLM runs on a GPU, with the training pipeline's sizes; a trained checkpoint replays as trained
        vllm = spec.startswith("vllm:")
        card = read_card(spec.partition(":")[2]) if ":" in spec else {}
        kwargs = {"max_new_tokens": card.get("max_new_tokens") or (cfg.vllm_max_new_tokens if vllm
                                                                     else cfg.local_max_new_tokens),
                  "force_decision": cfg.force_decision}
        if not vllm:
            kwargs["batch_size"] = cfg.llm_batch_size
        if "enable_thinking" in card:
            kwargs["enable_thinking"] = card["enable_thinking"]
        if card.get("max_context_chars") or vllm:
            kwargs["max_chars"] = card.get("max_context_chars") or cfg.vllm_max_chars
    else:
        kwargs = {"base_url": cfg.base_url, "max_tokens": cfg.api_max_tokens}
        if not (cfg.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")):
            unavailable = "set the OPENAI_API_KEY environment variable (or pass --base-url for another endpoint)"

    def build() -> Agent:
        from tr1_agent.llm_agents import make_llm_agent

        return make_llm_agent(spec, **{k: v for k, v in kwargs.items() if k != "max_chars"})

    settings = {"spec": spec, **kwargs, **({"anonymize": True} if anonymized else {})}
    return AgentSpec(label, build, True, settings, unavailable, spec, anonymized)


def resolve_agents(cfg: RunConfig) -> list[AgentSpec]:
    """Every requested agent, in order, without duplicates; nothing is built yet."""
    plugins = _plugin_names()
    specs: list[AgentSpec] = []
    for name in dict.fromkeys((*cfg.agents, *cfg.model, *cfg.agent)):
        if name in BASELINES:
            kwargs = ({"steps": cfg.sb3_steps, "train_years": cfg.train_years, "cost_bps": cfg.cost_bps,
                       "seed": cfg.seed} if name in TRAINED else {"seed": cfg.seed} if name == "random" else {})
            specs.append(AgentSpec(name, lambda n=name, kw=kwargs: load_agent(BASELINES[n], **kw), False,
                                   {"class": BASELINES[name], **kwargs}))
        elif name in plugins or (":" in name and not name.startswith((*LOCAL_LLM_PREFIXES, *MODEL_CLASSES))):
            label = name.rpartition(":")[2] if ":" in name else name
            specs.append(AgentSpec(label, lambda n=name: load_agent(n), False, {"plugin": name}))
        else:  # an LLM: plain, anonymized, or both (--memorisation)
            variants = (False, True) if cfg.memorisation else (cfg.anonymize,)
            specs += [_llm_spec(name, cfg, anonymized) for anonymized in variants]
    return specs


class Observations:
    """Each ticker-day's observation built once per context budget and shared by every agent of the run.

    Anonymized observations use one :class:`~tr1_env.anonymize.Pseudonyms` per ticker (the ticker's
    replay is the episode), seeded by the run's seed, so every anonymized agent reads the same names.
    """

    def __init__(self, store: Store, seed: int = 0):
        self.store, self.seed = store, seed
        self._cache: dict[tuple[str, pd.Timestamp, int, bool], Observation] = {}
        self.pseudonyms: dict[str, Pseudonyms] = {}

    def get(self, ticker: str, day: pd.Timestamp, max_chars: int, position: float,
            anonymized: bool = False) -> Observation:
        key = (ticker, day, max_chars, anonymized)
        if key not in self._cache:
            context = build_context(self.store, ticker, day, cfg=ContextConfig(max_chars=max_chars))
            if anonymized:
                names = self.pseudonyms.setdefault(ticker, Pseudonyms(ticker, seed=self.seed))
                context = anonymize(context, names)
            self._cache[key] = context.observation()
        return dataclasses.replace(self._cache[key], position=position)


def _fingerprint(spec: AgentSpec, cfg: RunConfig, every: int, max_chars: int) -> str:
    """What decides an agent's actions; a saved replay with another fingerprint is stale and redone."""
    key = {"agent": spec.settings, "start": cfg.start, "end": cfg.end, "every": every, "max_chars": max_chars,
           "weights": list(cfg.weights), "store": str(Path(cfg.store).resolve()) if cfg.store else "embedded"}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_decisions(path: Path, fingerprint: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != fingerprint:
        return None
    return pd.DataFrame(saved["decisions"]).assign(date=lambda d: pd.to_datetime(d["date"])).set_index("date")


def _save_decisions(path: Path, fingerprint: str, records: list[dict]) -> None:
    """Atomic: a run killed mid-write leaves the previous file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jsonable({"fingerprint": fingerprint, "decisions": records})))
    tmp.replace(path)


def replay(spec: AgentSpec, cfg: RunConfig, store: Store, days: dict[str, pd.DatetimeIndex], observations: Observations,
           out: Path) -> dict[str, pd.DataFrame]:
    """One agent's decisions (``action``, ``thesis``, ``meta`` by date) for every ticker, replayed or reloaded."""
    every, max_chars = ((cfg.llm_decision_every, spec.settings.get("max_chars", cfg.llm_max_chars)) if spec.llm
                        else (cfg.decision_every, ContextConfig().max_chars))
    fingerprint = _fingerprint(spec, cfg, every, max_chars)
    paths = {t: out / "decisions" / f"{slug(spec.label)}__{t}.json" for t in days}
    done = {t: d for t in days if (d := _load_decisions(paths[t], fingerprint)) is not None}
    todo = [t for t in days if t not in done]
    if not todo:
        return done
    agent = spec.build()
    agent.fit(store, todo, cfg.start, cfg.end)
    for t in todo:
        agent.reset(t)
    schedule = {t: set(decision_days(days[t], every)) for t in todo}
    weights = cfg.weight_map()
    position = dict.fromkeys(todo, 0.0)
    records: dict[str, list[dict]] = {t: [] for t in todo}
    for day in tqdm(sorted(set().union(*schedule.values())), desc=f"replay {spec.label}", unit="day"):
        batch = [t for t in todo if day in schedule[t]]
        decisions = agent.act([observations.get(t, day, max_chars, position[t], spec.anonymize) for t in batch])
        if len(decisions) != len(batch):
            raise RuntimeError(f"{spec.label} returned {len(decisions)} decisions for {len(batch)} observations")
        for t, d in zip(batch, decisions):
            action = Action(int(d.action))
            records[t].append({"date": f"{day:%Y-%m-%d}", "action": action.name, "position_before": position[t],
                               "thesis": d.thesis, "meta": d.meta})
            position[t] = weights[action]
    for t in todo:
        _save_decisions(paths[t], fingerprint, records[t])
        done[t] = _load_decisions(paths[t], fingerprint)
    return {t: done[t] for t in days}


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
        data_end = min(store.trading_days(t)[-1] for t in cfg.tickers)
        start, end = post_cutoff_window(cfg.start, cfg.end, last, data_end)
    except ValueError as exc:
        raise SystemExit(f"--post-cutoff: {exc}") from None
    return dataclasses.replace(cfg, start=f"{start:%Y-%m-%d}", end=f"{end:%Y-%m-%d}")


def run(cfg: RunConfig) -> pd.DataFrame:
    """The whole benchmark; returns the summary table (also written under ``cfg.out``)."""
    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.weight_map()
    store = Store(cfg.store)
    specs = resolve_agents(cfg)
    try:
        found = cutoffs(specs, cfg)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if cfg.post_cutoff:
        cfg = post_cutoff(cfg, store, found)
    days = {t: store.trading_days(t, cfg.start, cfg.end) for t in cfg.tickers}
    short = [t for t, d in days.items() if len(d) < 2]
    if short:
        raise SystemExit(f"{short}: fewer than two sessions in {cfg.start}..{cfg.end}")
    closes = {t: store.closes(t) for t in cfg.tickers}
    dividends = {t: store.dividends(t) if cfg.total_return else None for t in cfg.tickers}  # on the closes' split basis
    meta = {"config": dataclasses.asdict(cfg), "coverage": coverage(store, cfg.tickers, days, cfg.start, cfg.end),
            "returns": "total return (dividends at ex-date)" if cfg.total_return else "price return (no dividends)",
            "skipped": {}, "cutoffs": {label: dataclasses.asdict(c) for label, c in found.items()}}
    (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))

    observations = Observations(store, cfg.seed)
    bench = {t: buy_and_hold(closes[t], days[t], cfg.cost_bps, dividends[t]) for t in cfg.tickers}
    results: dict[str, dict[str, tuple[pd.DataFrame, pd.DataFrame]]] = {}
    (out / "returns").mkdir(exist_ok=True)
    for spec in specs:
        if spec.unavailable:  # say why and go on with the other agents
            print(f"skipping {spec.label}: {spec.unavailable}", file=sys.stderr)
            meta["skipped"][spec.label] = spec.unavailable
            continue
        decided = replay(spec, cfg, store, days, observations, out)
        results[spec.label] = {}
        for t in cfg.tickers:
            frame = backtest(decided[t]["action"].map(Action.parse), closes[t], days[t], cfg.cost_bps,
                             cfg.weight_map(), dividends[t])
            frame.to_csv(out / "returns" / f"{slug(spec.label)}__{t}.csv", date_format="%Y-%m-%d")
            results[spec.label][t] = (frame, decided[t])
    meta["pseudonyms"] = {t: p.mapping for t, p in observations.pseudonyms.items()}
    summary = write_reports(results, bench, cfg, out, meta["coverage"], meta["skipped"],
                            {label: c for label, c in found.items() if label in results})
    meta["wall_time_s"] = round(time.time() - t0, 1)
    (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(parser, RunConfig)
    return parser


def main(argv: list[str] | None = None) -> None:
    cfg = from_args(RunConfig, build_parser().parse_args(argv))
    if os.getcwd() not in sys.path:  # plug-ins (examples.custom_agent:MomentumAgent) import from the working directory
        sys.path.insert(0, os.getcwd())
    start = time.time()
    run(cfg)
    print((Path(cfg.out) / "summary.md").read_text())
    print(f"wall time {time.time() - start:.0f} s; outputs in {cfg.out}")


if __name__ == "__main__":
    main()
