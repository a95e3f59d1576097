"""The run's agents: ``--agents``, ``--model`` and ``--agent`` names resolved to rows, nothing built yet.

Each row (:class:`AgentSpec`) says how to build its agent, what decides its answers (its settings, the replay's
fingerprint) and how often it decides, resolved here once: rule-based and plug-in agents every
``--decision-every`` sessions, LLMs every ``--llm-decision-every``, and a built-in LLM with a decision interval of
its own (:data:`BUILTIN_LLMS`) at that interval, named in its label.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from baselines import BASELINES, PRICES_ONLY, TRAINED
from benchmarks.config import AgentsConfig, RunConfig
from tr1_env.contamination.cutoffs import Cutoff, model_cutoff, parse_overrides
from tr1_env.context.anonymize import DEFAULT_LEVEL, LABEL_SUFFIX
from tr1_env.core.agents import Agent, load_agent
from tr1_env.util.redact import redact_url

__all__ = ["BUILTIN_LLMS", "MODEL_CLASSES", "AgentSpec", "UsageError", "cutoffs", "llm_specs", "resolve_agents"]

#: ``--model`` prefixes served by an Agent class, not by ``make_llm_agent``; the rest of the spec is its ``path``.
MODEL_CLASSES = {"flag": "tr1_agent.flag_trader:FlagTraderAgent"}
LOCAL_LLM_PREFIXES = ("hf:", "vllm:")
_NOT_SETTINGS = ("timeout", "max_retries", "threads", "concurrency", "governor")  # how, not what, an LLM answers
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
    prices_only: bool = False  # reads no news or statements: replayed from --history-start when one is set
    fits_ahead: bool = False  # trained per window on data before it (``train_before``): its fits may run ahead

    @property
    def local_model(self) -> bool:
        """A model that runs in the replaying process (hf:, vllm:, flag:): the cell wants a GPU where there is one."""
        return bool(self.model) and self.model.startswith((*LOCAL_LLM_PREFIXES, *MODEL_CLASSES))

    @property
    def api(self) -> bool:
        """An OpenAI-compatible API model: priced by the call, rate-limited, under --max-cost-usd."""
        return self.llm and self.model is not None and not self.local_model and self.model not in BUILTIN_LLMS


def _plugin_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="tr1.agents")}


def _llm_spec(spec: str, agents: AgentsConfig, anonymized: str | None = None, seed: int | None = None,
              api: dict | None = None) -> AgentSpec:
    """smollm2 / hf: / vllm: run locally; flag: loads a checkpoint; any other name is an OpenAI-compatible model.

    ``anonymized``: the level of anonymized contexts the agent reads (a FLAG-TRADER checkpoint, its anonymized env
    prompt), or None. ``api``: keyword arguments of API models that decide no answer (``concurrency``, the run's
    ``governor``).
    """
    prefix = spec.partition(":")[0]
    label = spec + LABEL_SUFFIX if anonymized else spec
    if prefix in MODEL_CLASSES:  # load_agent names the missing module if this install lacks it
        path = spec.partition(":")[2]

        def build_checkpoint() -> Agent:
            if not Path(path).exists():
                raise SystemExit(f"--model {spec}: no checkpoint at {path!r}")
            return load_agent(MODEL_CLASSES[prefix], path=path, anonymize=anonymized)

        settings = {"class": MODEL_CLASSES[prefix], "path": path, **({"anonymize": anonymized} if anonymized else {})}
        return AgentSpec(label, build_checkpoint, True, settings, model=spec, every=agents.llm_decision_every)
    unavailable = None
    if spec in BUILTIN_LLMS or spec.startswith(LOCAL_LLM_PREFIXES):
        from tr1_agent.models import BUILTIN_ADAPTERS, read_card

        # per backend: vLLM runs on a GPU, with the training pipeline's sizes; a trained checkpoint replays as trained
        vllm = spec.startswith("vllm:")
        path = spec.partition(":")[2] if ":" in spec else BUILTIN_ADAPTERS.get(spec)
        card = read_card(str(path)) if path else {}
        kwargs = {"max_new_tokens": card.get("max_new_tokens") or (agents.vllm_max_new_tokens if vllm
                                                                   else agents.local_max_new_tokens),
                  "force_decision": agents.force_decision}
        if not vllm:
            kwargs.update(batch_size=agents.llm_batch_size, threads=agents.local_threads or None)
        if "enable_thinking" in card:
            kwargs["enable_thinking"] = card["enable_thinking"]
        if card.get("max_context_chars") or vllm:
            kwargs["max_chars"] = card.get("max_context_chars") or agents.vllm_max_chars
    else:
        kwargs = {"base_url": agents.base_url, "max_tokens": agents.api_max_tokens}
        if not (agents.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")):
            unavailable = "set the OPENAI_API_KEY environment variable (or pass --base-url for another endpoint)"
        kwargs.update(timeout=agents.request_timeout, max_retries=agents.max_retries, **(api or {}))

    own = getattr(agents, BUILTIN_LLMS[spec]) if spec in BUILTIN_LLMS else 1
    every = own if own != 1 else agents.llm_decision_every
    if own != 1:
        label = label.replace(spec, f"{spec} (every {own} sessions)", 1)
    if seed is not None:  # one of --samples: sampled, seeded, labelled
        kwargs.update(temperature=agents.temperature, seed=seed)
        label = f"{label} #{seed}"

    def build() -> Agent:
        from tr1_agent.llm_agents import make_llm_agent

        return make_llm_agent(spec, **{k: v for k, v in kwargs.items() if k != "max_chars"})

    # what decides the answers (the fingerprint): the endpoint without credentials; the retry budget, threads,
    # concurrency and the governor left out
    settings = {"spec": spec, **{k: v for k, v in kwargs.items() if k not in _NOT_SETTINGS},
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


def resolve_agents(cfg: RunConfig, governor=None) -> list[AgentSpec]:
    """Every requested agent, in order, without duplicates; nothing is built yet. An unknown name is a UsageError.
    API models share ``governor`` (a :class:`~tr1_agent.api_limits.ApiGovernor`: the run's rate limits and budget)."""
    plugins = _plugin_names()
    specs: list[AgentSpec] = []
    agents = cfg.agents
    names = cfg.agent_names()
    _check_names(names, agents.agent, plugins)
    for name in dict.fromkeys((*names, *agents.model, *agents.agent)):
        if name in BASELINES:
            kwargs = ({"steps": agents.sb3_steps, "train_years": agents.train_years, "execution": cfg.execution,
                       "seed": cfg.seed, "pool": cfg.sb3_pooled()} if name in TRAINED
                      else {"seed": cfg.seed} if name == "random" else {})
            # the fingerprint names the execution's settings one by one (as before it was a value)
            settings = {"class": BASELINES[name], **{k: v for k, v in kwargs.items() if k != "execution"},
                        **(dataclasses.asdict(cfg.execution) if "execution" in kwargs else {})}
            specs.append(AgentSpec(name, lambda n=name, kw=kwargs: load_agent(BASELINES[n], **kw), False,
                                   settings, every=agents.decision_every, numeric=True,
                                   prices_only=name in PRICES_ONLY, fits_ahead=name in TRAINED))
        elif name in plugins or (":" in name and not name.startswith((*LOCAL_LLM_PREFIXES, *MODEL_CLASSES))):
            label = name.rpartition(":")[2] if ":" in name else name
            specs.append(AgentSpec(label, lambda n=name: load_agent(n), False, {"plugin": name},
                                   every=agents.decision_every))
        else:
            specs += llm_specs(name, cfg, governor)
    return specs


def llm_specs(name: str, cfg: RunConfig, governor=None) -> list[AgentSpec]:
    """The rows of one LLM: plain, anonymized, or both (--memorisation); --samples seeds of a sampled one. API
    models share ``governor`` (the run's rate limits and budget)."""
    agents, contamination = cfg.agents, cfg.contamination
    variants = ((None, contamination.anonymize or DEFAULT_LEVEL) if contamination.memorisation
                else (contamination.anonymize,))
    sampled = agents.samples > 1 and name not in BUILTIN_LLMS and name.partition(":")[0] not in MODEL_CLASSES
    api = {"concurrency": cfg.api.api_concurrency, **({"governor": governor} if governor else {})}
    return [_llm_spec(name, agents, anonymized, seed, api) for anonymized in variants
            for seed in (range(agents.samples) if sampled else [None])]


def cutoffs(specs: list[AgentSpec], cfg: RunConfig) -> dict[str, Cutoff]:
    """The training cutoff of every LLM row: the shipped table, a base model's, or ``--cutoff`` (UsageError for a
    ``--cutoff`` that is no date)."""
    out = {}
    try:
        per_model, default = parse_overrides(cfg.contamination.cutoff)
        for spec in specs:
            if spec.model is not None:
                found = model_cutoff(spec.model, per_model.get(spec.model))
                out[spec.label] = (found if found.date is not None or default is None
                                   else model_cutoff(spec.model, default))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out
