"""Forward testing: each session's decisions written down, stamped and hash-chained before the market trades on them.

    tr1 forward run --folder fw --store store --tickers NVDA AAPL --agents ma_crossover --model gpt-4.1   # daily
    tr1 forward verify --folder fw          # the chain, the stamps, the deadlines, the data each decision read
    tr1 forward score --folder fw --store store                    # once closes exist: the replay's reports

A run reads the time from a :class:`~tr1_env.data.clock.Clock` (the wall clock, or ``--now``), finds the one session
whose decisions are still due (decided at its close and executed at the next open, or decided at ``--decide-at``
before the close and executed at it), brings the store up to date from Finnhub, builds each ticker's observation
from what the store showed at the decision instant, asks every agent (the roster's, as a replay does) and appends
each answer to the ledger (:mod:`tr1_env.evaluation.ledger`) the moment its agent has answered. A session whose
deadline has passed is never decided after the fact; a vendor or model failure is a ``failed`` entry, never HOLD;
a session already decided is not asked again unless ``--force``, whose entries the scorer ignores. The folder holds
the ledger, its daily exports and ``forward.json`` (the settings, the head of the chain after the last run and every
file the runs wrote, with its sha256); a run deletes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tr1_env.data.clock import NY, Clock, SimulatedClock, at_ny, decision_time, next_open
from tr1_env.evaluation.ledger import Ledger, canonical, data_manifest, export_days, stamp
from tr1_env.execution import Fill, NextOpenFill
from tr1_env.util.files import atomic_write, jsonable
from tr1_env.util.redact import redact_url, scrub, url_secrets

LEDGER = "ledger.jsonl"
MANIFEST = "forward.json"
EXPORT = "export"
#: ``--decide-at`` for a decision on the session's close (the other values are a time of day).
AT_CLOSE = "close"


class ForwardRefused(ValueError):
    """Settings or a folder a forward run cannot use: one line, exit 2, nothing written."""


@dataclass
class ForwardConfig:
    """A daily forward run: where its ledger lives, what it reads, whom it asks and when decisions are due."""

    folder: str = field(metadata={"help": "forward folder: ledger.jsonl, export/ and forward.json (created if new)"})
    store: str = field(metadata={"help": "store folder the run brings up to date from Finnhub and reads"})
    tickers: tuple[str, ...] = field(metadata={"help": "tickers decided each session"})
    agents: tuple[str, ...] = field(default=(), metadata={
        "help": "roster agents asked (baselines but ppo/a2c, tr1.agents entry points, module:Class)"})
    model: tuple[str, ...] = field(default=(), metadata={
        "help": "LLM agents asked: an OpenAI-compatible model name (key from OPENAI_API_KEY), hf:PATH, vllm:ID"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint for --model names"})
    decide_at: str = field(default=AT_CLOSE, metadata={
        "help": "close: decide on the session's close (data to 16:00 ET), execute at the next open (fill "
                "next-open); HH:MM (ET, before 16:00): decide then on the data to that minute and a provisional "
                "bar from the live quote, execute at that session's close (fill close)"})
    lookback_days: int = field(default=7, metadata={
        "help": "days of news, insider trades and earnings each run fetches"})
    prices: bool = field(default=False, metadata={
        "help": "daily bars from Finnhub's candles (a paid endpoint) instead of the free /quote"})
    calls_per_minute: float = field(default=55.0, metadata={
        "help": "pace Finnhub calls to this rate (the free plan allows 60 a minute; 0: no pacing)"})
    offline: bool = field(default=False, metadata={
        "help": "do not call Finnhub: the store is kept current by other means"})
    force: bool = field(default=False, metadata={
        "help": "ask again for a session already decided and append superseding entries (the scorer keeps the first "
                "decision of every session)"})
    now: str | None = field(default=None, metadata={
        "help": "run as if it were this instant (UTC unless it names a zone): a dry run or a replayed day; default: "
                "the wall clock"})

    def __post_init__(self):
        self.tickers = tuple(dict.fromkeys(t.upper() for t in self.tickers))
        if not self.tickers:
            raise ValueError("--tickers: name at least one ticker")
        if self.decide_at != AT_CLOSE:
            try:
                hour, minute = (int(x) for x in self.decide_at.split(":"))
            except ValueError:
                raise ValueError(f"--decide-at {self.decide_at!r}: expected 'close' or HH:MM (ET)") from None
            if not (9 * 60 + 30 < hour * 60 + minute < 16 * 60):
                raise ValueError(f"--decide-at {self.decide_at}: a time before the close must be within the session "
                                 "(09:31-15:59 ET)")
        if self.lookback_days < 1 or self.calls_per_minute < 0:
            raise ValueError("--lookback-days must be >= 1 and --calls-per-minute >= 0")

    @property
    def fill(self) -> str:
        """The house's fill that matches the decision time."""
        return (NextOpenFill if self.decide_at == AT_CLOSE else Fill).name

    def timing(self, day: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(the instant a session's decision reads its data, the deadline of the order it sets)."""
        if self.decide_at == AT_CLOSE:
            return decision_time(day), next_open(day)
        hour, minute = (int(x) for x in self.decide_at.split(":"))
        return at_ny(day, hour, minute), decision_time(day)

    def due(self, now: pd.Timestamp) -> pd.Timestamp | None:
        """The weekday whose decisions are due at ``now`` (its data instant passed, its deadline not), or None."""
        today = now.tz_convert(NY).tz_localize(None).normalize()
        for day in (today, today - pd.offsets.BDay(1)):
            if day.weekday() < 5:
                start, deadline = self.timing(day)
                if start <= now < deadline:
                    return pd.Timestamp(day)
        return None


@dataclass
class Outcome:
    """What one run did: the session, the entries appended per status, what was missed and why nothing ran."""

    day: pd.Timestamp | None
    decided: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def status(self) -> int:
        return 1 if self.failed or self.skipped else 0


class Paced:
    """A Finnhub client whose calls are spaced to ``per_minute`` (the free plan refuses more than 60 a minute)."""

    def __init__(self, client, per_minute: float):
        self.client, self.gap, self.last = client, 60.0 / per_minute if per_minute else 0.0, 0.0
        self.api_key = getattr(client, "api_key", None)

    def __getattr__(self, name: str):
        method = getattr(self.client, name)

        def paced(*args, **kwargs):
            wait = self.last + self.gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.last = time.monotonic()
            return method(*args, **kwargs)

        return paced


def check_folder(folder: Path) -> None:
    """A forward folder is new, empty, or one a forward run owns (its forward.json); anything else is refused."""
    if folder.exists() and not folder.is_dir():
        raise ForwardRefused(f"--folder {folder}: is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MANIFEST).is_file():
        raise ForwardRefused(f"--folder {folder}: a non-empty folder that no forward run owns (no {MANIFEST}); "
                             "choose a new or empty folder")


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def update_store(cfg: ForwardConfig, client, day: pd.Timestamp, now: pd.Timestamp) -> dict[str, dict]:
    """Finnhub's news, analyst trends, insider trades and earnings of the last ``lookback_days`` merged into the
    store, and the day's bar (candles, or the quote once the session has closed); returns each ticker's quote
    (a provisional bar for a decision before the close). A FinnhubError propagates: the caller marks the day
    failed."""
    from tr1_env.data.finnhub import FinnhubUpdate, call_endpoint, fetch, merge_into_store, quote_frame, symbol

    start = f"{day - pd.Timedelta(days=cfg.lookback_days):%Y-%m-%d}"
    update = FinnhubUpdate(cfg.store, cfg.tickers, start, f"{day:%Y-%m-%d}", prices=cfg.prices)
    tables = fetch(client, update)
    quotes = {t: call_endpoint(client, "quote", symbol(t), symbol(t)) for t in cfg.tickers}
    if not cfg.prices:
        bars = [f for t in cfg.tickers if len(f := quote_frame(quotes[t], t, now))]
        if bars:
            tables["prices"] = pd.concat([tables.get("prices", pd.DataFrame()), *bars], ignore_index=True)
    if tables:
        merge_into_store(cfg.store, tables)
    return quotes


def provisional_store(store, cfg: ForwardConfig, quotes: dict[str, dict], day: pd.Timestamp, now: pd.Timestamp):
    """What the market showed at ``now`` during ``day``'s session: the store cut at ``now`` plus, per ticker, a bar
    from the live quote stamped ``now`` (its 'close' is the last trade so far). None where a quote is not of ``day``."""
    from tr1_env.data.schema import TABLES
    from tr1_env.data.store import Store

    cut = store.cut(now)
    rows = []
    for t, q in quotes.items():
        if not q.get("t") or pd.Timestamp(q["t"], unit="s", tz="UTC").tz_convert(NY).date() != day.date():
            continue
        rows.append({"ticker": t, "date": day, **{k: float(q[c]) for k, c in
                                                  [("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")]},
                     "volume": 0, "available_at": now})
    tables = {name: cut.table(name) for name in TABLES}
    prices = tables["prices"]
    tables["prices"] = pd.concat([prices, pd.DataFrame(rows).astype({c: prices[c].dtype for c in prices.columns})],
                                 ignore_index=True) if rows else prices
    return Store(store.path, tables)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def observation_sha256(obs) -> str:
    """The digest of what the agent read: its prompt, or for an agent that reads bars alone, the bars and
    headlines it was given."""
    if obs.prompt:
        return _sha(obs.prompt)
    return _sha(obs.history.to_csv() + obs.news.to_csv())


def decided_keys(entries: list[dict], day: str) -> set[tuple[str, str]]:
    return {(e["agent"], e["ticker"]) for e in entries if e.get("day") == day and e.get("status") == "decided"}


def positions(entries: list[dict], weights: dict) -> dict[tuple[str, str], float]:
    """Each agent x ticker's weight after its latest decided session (the first decision of each session)."""
    from tr1_env.core.actions import Action

    first: dict[tuple[str, str, str], str] = {}
    for e in entries:
        if e.get("status") == "decided":
            first.setdefault((e["agent"], e["ticker"], e["day"]), e["decision"])
    out: dict[tuple[str, str], tuple[str, float]] = {}
    for (agent, ticker, day), decision in sorted(first.items(), key=lambda kv: kv[0][2]):
        out[(agent, ticker)] = (day, weights[Action[decision]])
    return {k: v[1] for k, v in out.items()}


def _secrets(cfg: ForwardConfig) -> list[str]:
    return [s for s in (os.environ.get("OPENAI_API_KEY"), os.environ.get("FINNHUB_API_KEY"),
                        *url_secrets(cfg.base_url)) if s]


def _clean(value, secrets: list[str]):
    """``value`` as plain JSON with every secret masked in its text."""
    value = jsonable(value)
    if isinstance(value, str):
        return scrub(value, *secrets)
    if isinstance(value, dict):
        return {k: _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, secrets) for v in value]
    return value


def run_config(cfg: ForwardConfig):
    """The replay settings the roster resolves the forward agents from (the same labels a replay gives them)."""
    from benchmarks.config import RunConfig

    if not cfg.agents and not cfg.model:
        raise ForwardRefused("name the agents to ask: --agents and/or --model")
    return RunConfig.of(agents=cfg.agents, model=cfg.model, base_url=cfg.base_url, tickers=cfg.tickers,
                        store=cfg.store, fill=cfg.fill)


@dataclass(frozen=True)
class Session:
    """The session being decided: its day, the fields every entry of it shares, the store view the agents read,
    their observations and data manifests, the positions held into it and the agent x tickers already decided."""

    day: pd.Timestamp
    base: dict
    view: object
    observations: object
    manifests: dict[str, dict]
    held: dict[tuple[str, str], float]
    already: set[tuple[str, str]]
    secrets: list[str]


def ask(spec, todo: list[str], session: Session, rc) -> list[dict]:
    """One agent's entries for the tickers ``todo``: a decision each, or a failed entry where it could not decide
    (an :class:`~tr1_env.core.agents.AgentError`; any other error ends the run)."""
    from benchmarks.replay import context_budget
    from tr1_env.contamination.cutoffs import model_cutoff
    from tr1_env.core.agents import AgentError
    from tr1_env.execution.llm_cost import decision_cost

    agent = spec.build()
    agent.fit(session.view, todo, session.day, session.day)
    for t in todo:
        agent.reset(t)
    held = [session.held.get((spec.label, t), 0.0) for t in todo]
    obs = [session.observations.get(t, session.day, context_budget(spec, rc), h, spec.anonymize)
           for t, h in zip(todo, held)]
    error = ""
    try:
        decisions = agent.act(obs)
    except AgentError as exc:
        ok = exc.decisions is not None and len(exc.decisions) == len(todo)
        decisions, error = (exc.decisions if ok else [None] * len(todo)), " ".join(str(exc).split())
    cutoff = model_cutoff(spec.model).date if spec.model else None
    entries = []
    for t, o, h, d in zip(todo, obs, held, decisions):
        common = {**session.base, "agent": spec.label, "ticker": t, "model": spec.model,
                  "cutoff": None if cutoff is None else f"{cutoff:%Y-%m-%d}", "prompt_sha256": observation_sha256(o),
                  "data": session.manifests[t], "data_sha256": _sha(canonical(session.manifests[t]))}
        if d is None:
            entries.append({**common, "status": "failed", "error": scrub(error, *session.secrets)})
            continue
        meta = _clean(d.meta, session.secrets)
        entries.append({**common, "status": "decided", "decision": d.action.name, "position_before": h,
                        "completion": _clean(d.thesis, session.secrets), "meta": meta,
                        "tokens": {k: meta[k] for k in ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
                                   if k in meta},
                        "cost_usd": decision_cost(meta), "supersedes": (spec.label, t) in session.already})
    return entries


def run_forward(cfg: ForwardConfig, clock: Clock | None = None, client=None) -> Outcome:
    """One daily run (see the module docstring); returns what it did."""
    from baselines import TRAINED
    from benchmarks.replay import Observations
    from benchmarks.roster import UsageError, resolve_agents
    from tr1_env.data.finnhub import FinnhubError, make_client
    from tr1_env.data.store import Store

    folder = Path(cfg.folder)
    check_folder(folder)
    rc = run_config(cfg)
    try:
        specs = resolve_agents(rc)
    except UsageError as exc:
        raise ForwardRefused(str(exc)) from None
    trained = [s.label for s in specs if s.label in TRAINED]
    if trained:
        raise ForwardRefused(f"--agents: {', '.join(trained)} retrain per window; a forward run asks agents that "
                             "need no fit (rules, LLMs, plug-ins)")
    store = Store(cfg.store)
    unknown = [t for t in cfg.tickers if t not in store.tickers]
    if unknown:
        raise ForwardRefused(f"--tickers: {', '.join(unknown)} not in the store {cfg.store}")
    clock = clock or (SimulatedClock(cfg.now) if cfg.now else Clock())
    now = clock.now()
    day = cfg.due(now)
    ledger = Ledger(folder / LEDGER)
    entries = ledger.entries()
    out = Outcome(day)
    runnable = [s for s in specs if not s.unavailable]
    if day is not None and not cfg.force and {(s.label, t) for s in runnable for t in cfg.tickers} <= decided_keys(
            entries, f"{day:%Y-%m-%d}"):  # a rerun of a decided session: no vendor is called, nothing is written
        out.note = f"{day:%Y-%m-%d} is already decided for every agent and ticker (--force asks again)"
        return out
    _finish(folder, ledger, cfg)  # the folder is a forward run's from here, also if this run is killed
    quotes: dict[str, dict] = {}
    vendor_error = None
    if not cfg.offline:  # also after a session's deadline: the close of a decision taken before it arrives now
        try:
            quotes = update_store(cfg, Paced(client or make_client(), cfg.calls_per_minute),
                                  day if day is not None else now.tz_convert(NY).tz_localize(None).normalize(), now)
        except FinnhubError as exc:
            vendor_error = str(exc)
        store = Store(cfg.store)
    decided_days = {e["day"] for e in entries if e.get("status") == "decided"}
    last = max(decided_days, default=None)
    if last is not None:
        sessions = {d for t in cfg.tickers for d in store.trading_days(t, pd.Timestamp(last) + pd.Timedelta(days=1))}
        out.missed = sorted(f"{d:%Y-%m-%d}" for d in sessions if day is None or d < day)
    if day is None:
        out.note = f"nothing is due at {now:%Y-%m-%d %H:%M} UTC (decide-at {cfg.decide_at})"
        _finish(folder, ledger, cfg)
        return out
    asof, deadline = cfg.timing(day)
    key = f"{day:%Y-%m-%d}"
    done = set() if cfg.force else decided_keys(entries, key)
    secrets = _secrets(cfg)
    base = {"day": key, "asof": stamp(asof), "deadline": stamp(deadline), "fill": cfg.fill}
    out.skipped = [f"{s.label}: {s.unavailable}" for s in specs if s.unavailable]
    if vendor_error is not None:  # the day is failed for every agent x ticker still to decide: never HOLD
        failed = [{**base, "agent": s.label, "ticker": t, "status": "failed", "error": scrub(vendor_error, *secrets)}
                  for s in runnable for t in cfg.tickers if (s.label, t) not in done]
        ledger.append(failed, now)
        out.failed = [f"{e['agent']} on {e['ticker']}: {e['error']}" for e in failed]
        _finish(folder, ledger, cfg)
        return out
    view = store if cfg.decide_at == AT_CLOSE else provisional_store(store, cfg, quotes, day, now)
    trading = [t for t in cfg.tickers if len(view.trading_days(t, day, day))]
    if not trading:
        out.note = f"no session on {key} in the store (an exchange holiday, or the vendor has no bar yet)"
        _finish(folder, ledger, cfg)
        return out
    session = Session(day, base, view, Observations(view, rc.seed), {t: data_manifest(view, t, asof) for t in trading},
                      positions(entries, rc.agents.weight_map()), decided_keys(entries, key), secrets)
    for spec in runnable:
        todo = [t for t in trading if (spec.label, t) not in done]
        missing = [t for t in cfg.tickers if t not in trading and (spec.label, t) not in done]
        batch: list[dict] = [{**base, "agent": spec.label, "ticker": t, "status": "failed",
                              "error": f"no bar for {t} on {key} in the store"} for t in missing]
        if todo:
            batch += ask(spec, todo, session, rc)
        if batch:  # fsynced before the next agent is asked: a crash loses at most this agent's answers
            written = ledger.append(batch, clock.now())
            out.decided += sum(e["status"] == "decided" for e in written)
            out.failed += [f"{e['agent']} on {e['ticker']}: {e['error']}" for e in written if e["status"] == "failed"]
    if not out.decided and not out.failed:
        out.note = f"{key} is already decided for every agent and ticker (--force asks again)"
    _finish(folder, ledger, cfg)
    return out


def _finish(folder: Path, ledger: Ledger, cfg: ForwardConfig) -> None:
    """The daily exports and forward.json: the settings (no secrets), the chain's head and every file written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(read_manifest(folder).get("files") or {})
    if ledger.path.exists():
        files.update({f"{EXPORT}/{name}": digest for name, digest in export_days(ledger.path, folder / EXPORT).items()})
        files[LEDGER] = hashlib.sha256(ledger.path.read_bytes()).hexdigest()
    lines, head = ledger.head()
    settings = {k: v for k, v in vars(cfg).items() if k not in ("force", "now")}
    meta = {"tool": "tr1 forward", "settings": {**settings, "base_url": redact_url(cfg.base_url)},
            "head": {"lines": lines, "sha256": head}, "files": dict(sorted(files.items()))}
    atomic_write(folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps(jsonable(meta), indent=2) + "\n"))


def data_problems(path: Path, store_path: str) -> list[str]:
    """Entries whose data manifest the store no longer reproduces at their instant: rows stamped at or before it
    that came or changed later (a vendor's late stamp, an edited store)."""
    from tr1_env.data.store import Store

    store = Store(store_path)
    problems = []
    for i, e in enumerate(Ledger(path).entries(), 1):
        if e.get("status") == "decided" and e.get("data") and e.get("fill") == NextOpenFill.name:
            now = data_manifest(store, e["ticker"], pd.Timestamp(e["asof"]))
            changed = [name for name in now if now[name] != e["data"].get(name)]
            if changed:
                problems.append(f"line {i}: the store now shows other {', '.join(changed)} rows at {e['asof']} than "
                                "the decision read")
    return problems
