"""The settings of a benchmark replay: one dataclass of groups whose fields are also the flags of ``benchmarks/run.py``.

It lives apart from the replay loop so that the report writer can read it without importing the harness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from baselines import BASELINES
from tr1_env.context.anonymize import DEFAULT_LEVEL, LABEL_SUFFIX, LEVELS
from tr1_env.core.actions import Action
from tr1_env.data.schema import canonical_ticker
from tr1_env.evaluation.windows import Window, windows
from tr1_env.execution import Execution
from tr1_env.scoring.labels import HELDOUT_WINDOW
from tr1_env.util.cli_args import replaced

DEFAULT_TICKERS = ("NVDA", "AAPL", "MSFT", "AMZN", "META", "SPY")
OFFLINE_AGENTS = (*BASELINES, "smollm2", "smollm2-tr1")
BENCHMARK = "buy_and_hold"  # the reference every agent is tested against


def _refuse(checks: list[tuple[bool, str]]) -> None:
    """A value no replay can use is a one-line ValueError naming its flag."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


@dataclass
class AgentsConfig:
    """The agents replayed and how each one is built, asked and scheduled."""

    agents: tuple[str, ...] | None = field(default=None, metadata={
        "help": f"agents to replay: baselines ({', '.join(BASELINES)}), 'smollm2', 'smollm2-tr1' (SmolLM2 with the "
                "shipped Trading-R1 adapter), tr1.agents entry points or module:Class; model names go to --model "
                "(default: every baseline, plus both SmolLM2 rows in a single-window run)"})
    model: tuple[str, ...] = field(default=(), metadata={
        "help": "LLM agents to add: an OpenAI-compatible model name (gpt-4.1, o4-mini), hf:PATH, vllm:ID, "
                "flag:PATH (a FLAG-TRADER checkpoint)"})
    agent: tuple[str, ...] = field(default=(), metadata={
        "help": "plug-in agents to add, as module:Class or a tr1.agents entry-point name"})
    base_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for --model names (a vLLM server, a local test server)"})
    request_timeout: float = field(default=60.0, metadata={
        "help": "seconds an API model's call may take before it is retried (a server that never answers fails "
                "after about timeout x (retries + 1))"})
    max_retries: int = field(default=3, metadata={
        "help": "retries of an API call on a timeout, refused connection, 429 or 5xx; then the agent x ticker fails"})
    weights: tuple[float, ...] = field(default=(-1.0, -0.5, 0.0, 0.5, 1.0), metadata={
        "help": "target weights of STRONG_SELL SELL HOLD BUY STRONG_BUY"})
    decision_every: int = field(default=1, metadata={
        "help": "non-LLM agents decide every k sessions and hold their position in between"})
    llm_decision_every: int = field(default=1, metadata={
        "help": "LLM agents (hf:, vllm:, API models, flag:) decide every k sessions"})
    smollm2_decision_every: int = field(default=62, metadata={
        "help": "the CPU SmolLM2 rows (smollm2, smollm2-tr1) decide every k sessions (their labels say so); 62, "
                "one decision per ticker held through the default window, keeps the default run under 8 min on "
                "2 cores (the trained row writes up to 640 tokens per thesis)"})
    samples: int = field(default=1, metadata={
        "help": "replay each API/hf:/vllm: model N times with seeds 0..N-1 at --temperature; the report gives "
                "the spread over samples"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of LLMs when --samples > 1"})
    llm_max_chars: int = field(default=1500, metadata={
        "help": "context budget (characters) of LLM agents' prompts; 1500 keeps SmolLM2's prompt near 1K tokens"})
    local_max_new_tokens: int = field(default=128, metadata={
        "help": "tokens generated per thesis by local models; a checkpoint trained here replays with its card's "
                "budget, context size and thinking switch instead (tr1_card.json)"})
    vllm_max_new_tokens: int = field(default=6144, metadata={
        "help": "tokens generated per thesis by vllm: models (a GPU backend: the training pipeline's budget); a "
                "checkpoint's card wins"})
    vllm_max_chars: int = field(default=24_000, metadata={
        "help": "context budget (characters) of vllm: models' prompts (the training pipeline's); a checkpoint's card "
                "wins"})
    force_decision: bool = field(default=True, metadata={
        "help": "local transformers models that write no [[[ACTION]]] decide by scoring the five closings with "
                "the model itself (recorded as parse_failed + forced_decision); off: such replies are HOLD"})
    api_max_tokens: int = field(default=4096, metadata={"help": "completion token limit of API models"})
    llm_batch_size: int = field(default=6, metadata={
        "help": "prompts per generate() call of local transformers models"})
    local_threads: int = field(default=0, metadata={
        "help": "torch threads of local transformers models while they generate (0: torch's default, one per core, "
                "fastest on an idle machine: SmolLM2 6.0 s per decision on 2 idle cores against 9.5 s on one); 1 on a "
                "busy CPU, where threads waiting for a core made decode steps 7-13x slower"})
    sb3_steps: int = field(default=8192, metadata={"help": "training steps of each SB3 policy"})
    sb3_pool: bool | None = field(default=None, metadata={
        "help": "one SB3 policy over every ticker's env instead of one per ticker (default: pooled for "
                "--walk-forward, per ticker for one window)"})
    train_years: float = field(default=2.0, metadata={"help": "years before --start the SB3 policies train on"})

    def __post_init__(self):
        checks = [
            (len(self.weights) == len(Action), f"--weights needs {len(Action)} values (SS S H B SB), got "
                                               f"{len(self.weights)}"),
            (self.decision_every >= 1, f"--decision-every must be >= 1, got {self.decision_every}"),
            (self.llm_decision_every >= 1, f"--llm-decision-every must be >= 1, got {self.llm_decision_every}"),
            (self.smollm2_decision_every >= 1,
             f"--smollm2-decision-every must be >= 1, got {self.smollm2_decision_every}"),
            (self.samples >= 1, f"--samples must be >= 1, got {self.samples}"),
            (self.local_threads >= 0, f"--local-threads must be >= 0, got {self.local_threads}"),
            (self.request_timeout > 0, f"--request-timeout must be > 0, got {self.request_timeout:g}"),
            (self.max_retries >= 0, f"--max-retries must be >= 0, got {self.max_retries}"),
        ]
        _refuse(checks)

    def weight_map(self) -> dict[Action, float]:
        return dict(zip(Action, self.weights))


@dataclass
class WindowConfig:
    """What is replayed: the tickers, the span and its windows, the returns and the store they come from."""

    tickers: tuple[str, ...] = field(default=(), metadata={
        "help": f"tickers to replay, any case (default: {' '.join(DEFAULT_TICKERS)} for one window, every store "
                "ticker for --walk-forward)"})
    start: str = field(default=HELDOUT_WINDOW[0], metadata={"help": "first day of the replay (inclusive)"})
    end: str = field(default=HELDOUT_WINDOW[1], metadata={"help": "last day of the replay (inclusive)"})
    walk_forward: tuple[str, ...] = field(default=(), metadata={
        "help": "replay consecutive windows over --start..--end: yearly, quarterly, monthly, or explicit START:END "
                "windows; trained agents refit before each window on data ending the day before it (empty: one "
                "window)"})
    history_start: str | None = field(default=None, metadata={
        "help": "first day for the agents that read prices alone (rules, SB3, buy-and-hold, random, always_hold): they "
                "replay --history-start..--end by the same --walk-forward scheme, the others --start..--end, and each "
                "is compared with buy-and-hold over its own days (the store's prices start in 2015; 2016-01-01 "
                "leaves a year of warm-up); empty: every agent replays --start..--end"})
    total_return: bool = field(default=False, metadata={
        "help": "add dividends (ex-date cash over the previous close) to price returns (on under --execution "
                "realistic)"})
    store: str | None = field(default=None, metadata={"help": "TR1 store folder (default: the embedded snapshot)"})

    def __post_init__(self):
        """Tickers spelled one way (``aapl`` -> ``AAPL``)."""
        self.tickers = tuple(dict.fromkeys(canonical_ticker(t) for t in self.tickers))

    def protocol(self, start: str | None = None) -> list[Window]:
        """The replay windows (one unless ``walk_forward``) from ``start`` (default ``--start``) to ``--end``."""
        return windows(self.walk_forward[0] if len(self.walk_forward) == 1 and ":" not in self.walk_forward[0]
                       else self.walk_forward or "single", start or self.start, self.end)

    def spans(self) -> tuple[list[Window], list[Window]]:
        """The windows of the agents that read prices alone and of the others: the same unless ``history_start``,
        whose windows (by the same scheme) must hold every window of ``--start..--end``."""
        protocol = self.protocol()
        if not self.history_start:
            return protocol, protocol
        if not self.walk_forward or len(self.walk_forward) > 1 or ":" in self.walk_forward[0]:
            raise ValueError("--history-start needs a named --walk-forward scheme (yearly, quarterly, monthly)")
        if pd.Timestamp(self.history_start) >= pd.Timestamp(self.start):
            raise ValueError(f"--history-start {self.history_start} must be before --start {self.start}")
        longer = self.protocol(self.history_start)
        missing = [w.name for w in protocol if w not in longer]
        if missing:
            raise ValueError(f"--start {self.start} must open a window of the --history-start span (window "
                             f"{missing[0]} is not one of its windows)")
        return longer, protocol

    def ticker_list(self, store) -> tuple[str, ...]:
        return self.tickers or (store.tickers if self.walk_forward else DEFAULT_TICKERS)


@dataclass
class StatisticsConfig:
    """The tests and intervals of the reports and the leaderboard."""

    risk_free: float = field(default=0.04, metadata={"help": "annual risk-free rate of the Sharpe ratio"})
    bootstrap: int = field(default=2000, metadata={
        "help": "stationary-bootstrap resamples for Sharpe CIs and tests (0: off)"})
    block: float = field(default=5.0, metadata={"help": "mean block length (days) of the stationary bootstrap"})
    alpha: float = field(default=0.05, metadata={
        "help": "significance level of the Sharpe-vs-buy-and-hold test; the CI is the (1 - alpha) interval"})
    min_days: int = field(default=20, metadata={
        "help": "fewest daily portfolio returns the leaderboard tests; a shorter span's verdict is 'too short'"})
    trials: int = field(default=0, metadata={
        "help": "configurations tried before this run, for the deflated Sharpe ratio (0: the agents in the run)"})

    def __post_init__(self):
        _refuse([
            (0 < self.alpha < 1, f"--alpha must be in (0, 1), got {self.alpha:g}"),
            (self.bootstrap >= 0, f"--bootstrap must be >= 0 (0: off), got {self.bootstrap}"),
            (self.min_days >= 2, f"--min-days must be >= 2, got {self.min_days}"),
            (self.trials >= 0, f"--trials must be >= 0 (0: the agents in the run), got {self.trials}"),
            (self.block > 0, f"--block must be > 0, got {self.block:g}"),
        ])


@dataclass
class ContaminationConfig:
    """What the LLMs may remember: anonymized contexts, training cutoffs, memorisation checks."""

    anonymize: str | None = field(default=None, metadata={
        "choices": LEVELS, "const": DEFAULT_LEVEL,
        "help": "LLM agents read anonymized contexts at this level (tr1_env.context.anonymize: 'names' or 'strict'; "
                f"a bare --anonymize is strict); their rows are labelled NAME{LABEL_SUFFIX}; with --memorisation, the "
                "level of its "
                "anonymized replay (default strict)"})
    memorisation: bool = field(default=False, metadata={
        "help": "replay each LLM agent both plain and anonymized over the same days; memorisation.csv and summary.md "
                "give the paired Sharpe differences and the pre- vs post-cutoff gap, with bootstrap CIs"})
    cutoff: tuple[str, ...] = field(default=(), metadata={
        "help": "training cutoffs the shipped table (tr1_env/data/model_cutoffs.csv) lacks: YYYY-MM-DD for every "
                "such model, MODEL=YYYY-MM-DD for one (also overrides the table)"})
    post_cutoff: bool = field(default=False, metadata={
        "help": "move the replay window after the latest training cutoff of the run's LLMs (same length, cut at the "
                "data end); refuses, naming the data end, when no data follows it"})


@dataclass
class OutputsConfig:
    """Where the run writes and what."""

    out: str = field(default="runs/default", metadata={"help": "output folder; rerunning into it resumes"})
    force: bool = field(default=False, metadata={
        "help": "write into an --out folder that no tr1 run owns: the run adds its files beside yours and never "
                "replaces or deletes a file it did not write"})
    tearsheets: bool = field(default=True, metadata={"help": "write a quantstats HTML tearsheet per agent and ticker"})


@dataclass
class PortfolioConfig:
    """The portfolio track (``--portfolio``): each agent as one book over the universe (docs/portfolio.md)."""

    portfolio: bool = field(default=False, metadata={
        "help": "replay portfolio agents (baselines.portfolio) as one book each over --tickers (or --universe) and "
                "write leaderboard_portfolio.csv/.md/.html instead of the per-ticker reports"})
    universe: str | None = field(default=None, metadata={
        "help": "universe CSV (ticker, from, to): who may be held when (default: every ticker from its first "
                "session in the store to its last)"})
    portfolio_benchmark: str = field(default="buy_and_hold", metadata={
        "choices": ("buy_and_hold", "index_etf"),
        "help": "the portfolio leaderboard's reference: buy_and_hold (1/N of the universe, never traded) or "
                "index_etf (all in --index-etf)"})
    index_etf: str = field(default="SPY", metadata={"help": "the index ETF of the index_etf agent and benchmark"})
    portfolio_llm_mode: str = field(default="allocation", metadata={
        "choices": ("allocation", "decisions"),
        "help": "how LLM agents decide a book: allocation (one prompt over the universe, answered with JSON weights "
                "over the tickers and CASH, read strictly; an invalid answer is a failed decision) or decisions "
                "(a Trading-R1 call per ticker, each ticker 1/n times its call's weight, SELLs as 0)"})


def _rates(values: tuple[str, ...], flag: str) -> dict[str, float]:
    """``N`` (every API model) or ``MODEL=N`` (one model) per value, as ``{model or "*": N}``; N > 0."""
    out = {}
    for value in values:
        model, _, number = value.rpartition("=")
        try:
            rate = float(number)
        except ValueError:
            rate = 0.0
        if rate <= 0 or (value.count("=") > 1):
            raise ValueError(f"{flag} {value!r}: expected N or MODEL=N with N > 0")
        out[model or "*"] = rate
    return out


@dataclass
class DistributionConfig:
    """Where the cells (agent x window, all its tickers) run: here, on Ray, or as one shard of a job array
    (docs/distributed.md)."""

    executor: str = field(default="inprocess", metadata={
        "choices": ("inprocess", "ray"),
        "help": "inprocess: the cells one after another in this process; ray: each cell a Ray task (a local Ray "
                "started by the run, or --ray-address's cluster; pip install 'tr1[ray]')"})
    ray_address: str | None = field(default=None, metadata={
        "help": "an existing Ray cluster (ray start --head; 'auto' or HOST:PORT) for --executor ray (empty: a local "
                "Ray started and stopped by the run)"})
    workers: int = field(default=0, metadata={
        "help": "CPUs of the local Ray the run starts, one cell at a time each (0: every core)"})
    cell_retries: int = field(default=3, metadata={
        "help": "times Ray runs a cell again whose worker process died (killed, out of memory); then its agent x "
                "tickers are reported as failed"})
    shard: str | None = field(default=None, metadata={
        "help": "I/N: run only the I-th of N shards of the agents (each agent's windows stay together: its books "
                "are continuous) and write their decisions; 'tr1 bench merge' makes the reports of all shards"})

    def __post_init__(self):
        _refuse([(self.workers >= 0, f"--workers must be >= 0 (0: every core), got {self.workers}"),
                 (self.cell_retries >= 0, f"--cell-retries must be >= 0, got {self.cell_retries}")])
        self.shard_of()

    def shard_of(self) -> tuple[int, int] | None:
        """``--shard I/N`` as (I, N), 1 <= I <= N; None for a whole run."""
        if self.shard is None:
            return None
        i, _, n = self.shard.partition("/")
        if not (i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
            raise ValueError(f"--shard {self.shard!r}: expected I/N with 1 <= I <= N (e.g. 2/8)")
        return int(i), int(n)


@dataclass
class ApiConfig:
    """API models at scale: rate limits shared by every worker, concurrency and a spending cap."""

    rpm: tuple[str, ...] = field(default=(), metadata={
        "help": "requests per minute: N for every API model, MODEL=N for one; honoured across all workers (empty: "
                "no limit but the server's 429s, whose Retry-After is obeyed)"})
    tpm: tuple[str, ...] = field(default=(), metadata={
        "help": "tokens per minute (prompt estimate + --api-max-tokens per request, as providers count them): N or "
                "MODEL=N"})
    api_concurrency: int = field(default=8, metadata={
        "help": "API calls in flight at once per agent (its tickers asked side by side, each ticker's days in order)"})
    max_cost_usd: float | None = field(default=None, metadata={
        "help": "stop the run cleanly (resumable, exit 1) before its API calls would cost more than this, counting "
                "the decisions already in --out (tr1_env/data/model_prices.csv prices; each call is reserved at "
                "--api-max-tokens)"})
    dry_run: bool = field(default=False, metadata={
        "help": "print the API cost so far and the estimate for the rest, and exit without asking anything"})

    def __post_init__(self):
        _refuse([(self.api_concurrency >= 1, f"--api-concurrency must be >= 1, got {self.api_concurrency}"),
                 (self.max_cost_usd is None or self.max_cost_usd >= 0,
                  f"--max-cost-usd must be >= 0, got {self.max_cost_usd}")])
        self.rates()

    def rates(self) -> tuple[dict[str, float], dict[str, float]]:
        """(requests, tokens) per minute by model (``*``: every API model)."""
        return _rates(self.rpm, "--rpm"), _rates(self.tpm, "--tpm")


@dataclass
class RunConfig:
    """Every setting of a replay, grouped by concern; each field of a group is also a ``--flag`` of
    ``benchmarks/run.py`` (flat: ``--alpha``, not ``--statistics-alpha``), shown under its group in ``--help``.
    :meth:`of` builds one from flag names."""

    agents: AgentsConfig = field(default_factory=AgentsConfig, metadata={"help": AgentsConfig.__doc__})
    window: WindowConfig = field(default_factory=WindowConfig, metadata={"help": WindowConfig.__doc__})
    execution: Execution = field(default_factory=Execution, metadata={
        "help": "fills and costs (tr1_env.execution): what the replay books and what SB3 and FLAG-TRADER train on"})
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig, metadata={
        "help": StatisticsConfig.__doc__})
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig, metadata={
        "help": ContaminationConfig.__doc__})
    outputs: OutputsConfig = field(default_factory=OutputsConfig, metadata={"help": OutputsConfig.__doc__})
    portfolio: PortfolioConfig = field(default_factory=PortfolioConfig, metadata={"help": PortfolioConfig.__doc__})
    distribution: DistributionConfig = field(default_factory=DistributionConfig, metadata={
        "help": DistributionConfig.__doc__})
    api: ApiConfig = field(default_factory=ApiConfig, metadata={"help": ApiConfig.__doc__})
    seed: int = field(default=0, metadata={"help": "seed of the random baseline, SB3 training and the bootstrap"})

    def agent_names(self) -> tuple[str, ...]:
        """``--agents``, or its default: every baseline, plus both SmolLM2 rows in a single-window run."""
        if self.agents.agents is not None:
            return self.agents.agents
        return tuple(BASELINES) if self.window.walk_forward else OFFLINE_AGENTS

    def total_return(self) -> bool:
        """Whether the books credit dividends: ``--total-return``, or a preset that does (``realistic``)."""
        return self.window.total_return or self.execution.total_return

    def sb3_pooled(self) -> bool:
        """``--sb3-pool``, or its default: pooled for a walk-forward, per ticker for one window."""
        return self.agents.sb3_pool if self.agents.sb3_pool is not None else bool(self.window.walk_forward)

    @classmethod
    def of(cls, **settings) -> RunConfig:
        """A replay's settings by flag name (``RunConfig.of(alpha=0.1, cost_bps=5)``); the rest default."""
        return replaced(cls(), settings)

    def replace(self, **settings) -> RunConfig:
        """These settings (by flag name) changed, the others kept."""
        return replaced(self, settings)
