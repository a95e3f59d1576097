"""Throughput of what an RL loop calls most: trading-env steps, context builds, reward scoring, LLM decisions.

The trading env runs side by side with gym-anytrading's ``StocksEnv`` on the same prices (same ticker, period and
10-day window), both with a random policy: the ratio tells whether our richer state (causal indicators, position,
costs) costs more per step than the usual baseline env. Each fast path runs beside its plain reference on the same
inputs: the indexed context builder beside ``build_context_reference``; strict-anonymized contexts beside the same
contexts built alone, per core, once ``ContextIndex.prepare(levels=("strict",))`` has compiled the store's news and
table rows (minutes cold, then read from the disk cache), on days seen once before and on days never seen;
``score`` beside :func:`tr1_env.scoring.rewards.reference_score` (the plain definition it is tested equal to) on the
same theses, and on a 200 KB hostile completion built to make a backtracking parser quadratic (the parser of tr1 0.1
took about 20 s on it), both in CPU time (scores per core, whatever else the machine runs); SmolLM2 decisions as the
default run makes them (a kept cache of the shared prompt prefix, the run's torch threads) beside prompts encoded whole
on torch's default threads, with each change apart, in wall time (``--smollm2``, minutes on CPU, a quarter of an hour on
a busy 2-core machine).
The leaderboard's statistics (:func:`tr1_env.evaluation.stats.compare`: Sharpe CIs, studentized SPA and StepM, model
confidence set) run on 10 agents x 2,000 days x 1,000 resamples beside arch's own SPA and MCS on the same table
(what the leaderboard called before), in CPU time on one thread.
``--main-job`` times the no-argument ``benchmarks/run.py`` with cold caches.
``--api`` times API decisions against a local server that answers each call after 1 s and allows 2,000 requests a
minute (a 429 with Retry-After beyond), with 32 calls in flight beside the default 8, under ``--rpm 2000``, then
through a whole ``benchmarks/run.py`` run in this process (a 40-ticker synthetic store, 14 daily decisions each,
``--api-concurrency 32``): decisions over the wall time of the agent's asking.
``--ray`` times the README's numeric walk-forward (7 agents, 15 tickers, yearly 2016-01-01..2025-06-30;
``--ray-quick``: the five rule agents over 2023-2024) in-process beside ``--executor ray`` with 2 workers, in wall
time with Ray's start included, and splits the in-process run's CPU into the cells, the statistics a Ray run maps
over its workers and the rest (serial), whence Amdahl's bound; ``uptime``'s load is reported with it.

    python benchmarks/perf.py [--seconds 4] [--smollm2] [--main-job] [--api] [--ray | --ray-quick] [--json perf.json]

``--scale`` measures cost growth instead: for each size of ``--scale-tickers`` it writes a synthetic store
(``tr1 data synth``, ``--scale-years`` years) and reports its build time and peak memory, context builds per second
(the first of a ticker, which indexes it, and later ones), and a yearly walk-forward of the numeric agents
(``baselines.PRICES_ONLY`` by default) in wall and CPU time with its peak memory, each size in its own processes;
then the fitted growth of each cost against tickers x sessions (exponent 1: linear).

    python benchmarks/perf.py --scale [--scale-tickers 15 100 500] [--scale-years 10] [--scale-workers 2] [--json F]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from unittest import mock

import numpy as np
import pandas as pd

from benchmarks.fake_api import ChatHandler, completion
from tr1_env.context.anonymize import DEFAULT_LEVEL, anonymize
from tr1_env.context.config import ContextConfig
from tr1_env.context.index import ContextIndex
from tr1_env.context.record import Context
from tr1_env.context.reference import build_context, build_context_reference
from tr1_env.core.actions import Action
from tr1_env.data.store import Store
from tr1_env.envs import TradingEnv
from tr1_env.execution import Execution
from tr1_env.scoring.rewards import reference_score, score
from tr1_env.scoring.thesis import parse_thesis

THESIS_TAGS = ("fundamentals", "technical", "news", "analyst_coverage", "macro", "risk_assessment")


def honest_thesis(context: Context, decision: Action, bullets: int = 4, distinct_quotes: bool = False) -> str:
    """A well-formed thesis whose every quote is copied from ``context``: a stand-in for a good model's output.

    Six sections plus the conclusion, ``bullets`` claims each (opinion, verbatim quote, source). A quote is
    the first nine words of a context line, the lines taken in turn: a short context runs out of lines and
    repeats quotes, as a looping completion does. ``distinct_quotes`` takes nine-word windows spread over
    the whole context instead, each once while the context holds enough.
    """
    lines = [words for line in context.text.splitlines()
             if not line.startswith(("|", "#")) and "*" not in line and "`" not in line
             and len(words := line.removeprefix("- ").split()) >= 6]
    snippets = [" ".join(words[:9]) for words in lines]
    if distinct_quotes:
        windows = list(dict.fromkeys(" ".join(words[j:j + 9])
                                     for words in lines for j in range(max(1, len(words) - 8))))
        n = 7 * bullets
        snippets = [windows[i * len(windows) // n] for i in range(n)] if len(windows) >= n else windows
    sections = []
    for k, tag in enumerate((*THESIS_TAGS, "conclusion")):
        claims = []
        for i in range(bullets):
            quote = snippets[(k * bullets + i) % len(snippets)]
            claims.append(f"- Claim {i + 1} on {tag}: the figure quoted here bears on the one-week outlook for "
                          f"{context.ticker}, and read with the rest of the **{tag}** evidence it supports a "
                          f"{decision.name.lower()} view. *{quote}* `context {context.date:%Y-%m-%d}`")
        sections.append(f"<{tag}>\n### {tag.replace('_', ' ').title()}\n" + "\n".join(claims) + f"\n</{tag}>")
    return "\n".join(sections) + f"\n\n[[[{decision.name}]]]\n"


def repeated_share(thesis: str) -> float:
    """The share of a thesis's quotes that repeat an earlier one (the scorer looks each up once)."""
    quotes = [q for section in parse_thesis(thesis).sections for claim in section.bullets for q in claim.quotes]
    return 1 - len(set(quotes)) / max(1, len(quotes))


def hostile_completion(n_chars: int = 200_000) -> str:
    """A completion built against backtracking: unclosed bold, italics, decision brackets and tags
    (a quarter of ``n_chars`` each) inside one section."""
    k = n_chars // 4
    lines = ["- " + "**x " * (k // 4), "- " + "*x " * (k // 3), "[[[" + " " * (k - 3), "<a " * (k // 3)]
    return "<news>\n" + "\n".join(lines) + "\n</news>\n"


def per_second(fn: Callable[[], object], seconds: float, clock: Callable[[], float] = time.perf_counter
               ) -> tuple[float, int]:
    """Calls of ``fn`` per second over about ``seconds`` of ``clock`` (wall time unless told), and the
    number of calls."""
    n, start = 0, clock()
    while (elapsed := clock() - start) < seconds:
        fn()
        n += 1
    return n / elapsed, n


def random_steps(env, seed: int = 0) -> Callable[[], object]:
    """One step of a random policy, resetting at the episode end."""
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def step():
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return step


def anytrading_env(store: Store, ticker: str, start, end, window: int = 10):
    """gym-anytrading's StocksEnv over the same sessions, with ``window`` sessions of history before ``start``."""
    from gym_anytrading.envs import StocksEnv

    prices = store.asof(ticker, end).prices
    first = int(prices["date"].searchsorted(pd.Timestamp(start)))
    df = prices.iloc[first - window:].rename(columns=str.capitalize).set_index("Date")
    return StocksEnv(df[["Open", "High", "Low", "Close", "Volume"]], window_size=window, frame_bound=(window, len(df)))


def ticker_days(store: Store, n: int, seed: int, start="2024-01-01", end="2025-05-31"
                ) -> list[tuple[str, pd.Timestamp]]:
    """``n`` random (ticker, session) pairs over the paper's 2024-01..2025-05 corpus."""
    rng = np.random.default_rng(seed)
    out = []
    for ticker in rng.choice(store.tickers, n):
        days = store.trading_days(ticker, start, end)
        out.append((str(ticker), days[rng.integers(len(days))]))
    return out


def endless_ticker_days(store: Store, seed: int, start="2016-01-04", end="2025-10-31"
                        ) -> Iterator[tuple[str, pd.Timestamp]]:
    """Random (ticker, session) pairs for as long as asked: each timed context is a fresh draw."""
    rng = np.random.default_rng(seed)
    sessions = {t: store.trading_days(t, start, end) for t in store.tickers}
    while True:
        ticker = store.tickers[rng.integers(len(store.tickers))]
        yield ticker, sessions[ticker][rng.integers(len(sessions[ticker]))]


def run(seconds: float = 4.0, ticker: str = "MSFT", start="2020-10-01", end="2021-05-28", seed: int = 0) -> dict:
    store = Store()
    ours, _ = per_second(random_steps(TradingEnv(store, ticker, start, end), seed), seconds)
    theirs, _ = per_second(random_steps(anytrading_env(store, ticker, start, end), seed), seconds)

    # a warm store: every ticker indexed and its news compiled for strict anonymization (or read from the disk cache)
    ContextIndex.of(store).prepare(levels=(DEFAULT_LEVEL,))
    days = endless_ticker_days(store, seed)
    contexts, n_contexts = per_second(lambda: build_context(store, *next(days)), seconds)
    plain_contexts, n_plain = per_second(lambda: build_context_reference(store, *next(days)), seconds)
    # anonymized beside plain, per core (CPU time): days never seen (their daily lines, "Last close ...", compiled
    # on the way), then 500 days seen once before (as a replay or an RL loop revisits them) beside the same built alone
    fresh = endless_ticker_days(store, seed + 3)
    first_visit = per_second(lambda: anonymize(build_context(store, *next(fresh))), seconds, time.process_time)[0]
    same = list(itertools.islice(endless_ticker_days(store, seed + 2), 500))
    for day in same:
        anonymize(build_context(store, *day))
    cycle = itertools.cycle(same)
    built = per_second(lambda: build_context(store, *next(cycle)), seconds, time.process_time)[0]
    cycle = itertools.cycle(same)
    anonymized = per_second(lambda: anonymize(build_context(store, *next(cycle))), seconds, time.process_time)[0]

    samples, distinct = [], []
    for ticker_, day in ticker_days(store, 8, seed + 1):
        context = build_context(store, ticker_, day)
        samples.append((honest_thesis(context, Action.BUY, bullets=6), context.text))
        distinct.append((honest_thesis(context, Action.BUY, bullets=6, distinct_quotes=True), context.text))

    def scores_per_s(scorer, cases) -> float:  # per core: CPU time, which other jobs on the machine leave alone
        cycle = itertools.cycle(cases)
        return per_second(lambda: scorer(*next(cycle)), seconds, time.process_time)[0]

    normal = [(thesis, Action.BUY, text) for thesis, text in samples]
    hostile = [(hostile_completion(), Action.BUY, samples[0][1])]
    scores, reference = scores_per_s(score, normal), scores_per_s(reference_score, normal)
    distinct_scores = scores_per_s(score, [(thesis, Action.BUY, text) for thesis, text in distinct])
    hostile_scores, hostile_reference = scores_per_s(score, hostile), scores_per_s(reference_score, hostile)
    return {
        "trading_env_steps_per_s": ours,
        "anytrading_steps_per_s": theirs,
        "trading_vs_anytrading": ours / theirs,
        "contexts_per_s": contexts,
        "contexts_built": n_contexts,
        "reference_contexts_per_s": plain_contexts,
        "reference_contexts_built": n_plain,
        "contexts_per_s_core": built,
        "anonymized_contexts_per_s_core": anonymized,
        "anonymized_first_visit_per_s_core": first_visit,
        "scores_per_s": scores,
        "reference_scores_per_s": reference,
        "distinct_quotes_scores_per_s": distinct_scores,
        "repeated_quote_share": float(np.mean([repeated_share(thesis) for thesis, _ in samples])),
        "distinct_repeated_quote_share": float(np.mean([repeated_share(thesis) for thesis, _ in distinct])),
        "hostile_scores_per_s": hostile_scores,
        "hostile_reference_scores_per_s": hostile_reference,
        "hostile_chars": len(hostile[0][0]),
        "thesis_chars": float(np.mean([len(t) for t, _ in samples])),
        "context_chars": float(np.mean([len(c) for _, c in samples])),
    }


def compare_timing(agents: int = 10, days: int = 2000, reps: int = 1000, seed: int = 0) -> dict:
    """CPU seconds of :func:`tr1_env.evaluation.stats.compare` on ``agents`` agents plus buy-and-hold, and of arch's SPA
    over the agents plus its MCS (R statistic) over all of them, with the same resamples count."""
    from arch.bootstrap import MCS, SPA

    from tr1_env.evaluation.stats import compare

    rng = np.random.default_rng(seed)
    market = rng.normal(0.0004, 0.012, days)
    table = pd.DataFrame({"buy_and_hold": market, **{f"agent{k}": 0.5 * market + rng.normal(0.0002, 0.01, days)
                                                     for k in range(agents)}})
    start = time.process_time()
    compare(table, reps=reps, seed=seed)
    ours = time.process_time() - start
    start = time.process_time()
    spa = SPA(-table["buy_and_hold"], -table.drop(columns="buy_and_hold"), reps=reps, block_size=5, seed=seed)
    spa.compute()
    mcs = MCS(-table, size=0.05, reps=reps, block_size=5, method="R", seed=seed)
    mcs.compute()
    return {"compare_s": ours, "arch_spa_mcs_s": time.process_time() - start, "compare_agents": agents,
            "compare_days": days, "compare_reps": reps}


def booking_timing(tickers: int = 15, sessions: int = 500, seconds: float = 4.0, seed: int = 0) -> dict:
    """Portfolio books per second of :meth:`Execution.book` over ``tickers`` x ``sessions`` (random prices, weights
    rebalanced every session): default costs, every session at once, beside the realistic preset, booked day by day
    (per-share commission, impact and the cap read the equity each session reaches)."""
    rng = np.random.default_rng(seed)
    intraday = rng.normal(0.0004, 0.015, (sessions, tickers))
    weights = rng.dirichlet(np.ones(tickers + 1), sessions)[:, :tickers]
    price, liquidity = np.full((sessions, tickers), 100.0), (np.full((sessions, tickers), 0.015),
                                                            np.full((sessions, tickers), 1e9))
    out = {"booking_tickers": tickers, "booking_sessions": sessions}
    for name, execution in (("default", Execution()), ("realistic", Execution(execution="realistic"))):
        out[f"booking_{name}_per_s"] = per_second(lambda ex=execution: ex.book(
            weights, np.zeros_like(intraday), intraday, price, liquidity), seconds)[0]
    return out


def decisions_timing(sessions: int = 250, seconds: float = 4.0, seed: int = 0) -> dict:
    """Decision frames booked per second of CPU as a replay books them (:func:`~benchmarks.run_folder.decisions_frame`,
    column by column, the dates parsed once per schedule) beside the frame of records it replaced; the same frames
    (tested)."""
    from benchmarks.run_folder import decisions_frame

    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2020-01-02", periods=sessions)
    actions = pd.Series([Action(int(a)) for a in rng.integers(0, 5, sessions - 1)], index=days[:-1])
    rows = json.loads(json.dumps([{"date": f"{d:%Y-%m-%d}", "action": Action(int(a)).name, "position_before": 0.0,
                                   "thesis": None, "meta": {"rsi": float(rng.uniform(0, 100))}}
                                  for d, a in actions.items()]))

    def by_records() -> pd.DataFrame:
        return pd.DataFrame(rows).assign(date=lambda d: pd.to_datetime(d["date"])).set_index("date")

    return {"decisions_sessions": sessions,
            "decisions_frames_per_s": per_second(lambda: decisions_frame(rows), seconds, time.process_time)[0],
            "decisions_records_frames_per_s": per_second(by_records, seconds, time.process_time)[0]}


def smollm2_decisions(n: int = 6, max_chars: int = 1500, seed: int = 0) -> dict:
    """SmolLM2 decisions/s as in the default run (batch of 6, ~1K-token prompts, 128 new tokens, forced
    decisions): as it runs now (the shared prompt prefix from its kept cache, forced decisions scored from the
    generation's cache, the run's ``--local-threads``) beside the path before (prompts encoded whole, forced
    decisions re-encoded, torch's default threads), and each change alone switched off (what each is worth)."""
    from benchmarks.config import RunConfig
    from tr1_agent.llm_agents import TransformersAgent

    store = Store()
    observations = [build_context(store, t, d, cfg=ContextConfig(max_chars=max_chars)).observation()
                    for t, d in ticker_days(store, n, seed)]
    threads = RunConfig().agents.local_threads or None
    out = {"smollm2_threads": threads}
    for name, prefix, reuse, agent_threads in (("smollm2", True, True, threads),
                                               ("smollm2_before", False, False, None),
                                               ("smollm2_whole_prompts", False, True, threads),
                                               ("smollm2_reencoded", True, False, threads)):
        agent = TransformersAgent("smollm2", max_new_tokens=128, batch_size=6, force_decision=True, reuse_cache=reuse,
                                  reuse_prefix=prefix, threads=agent_threads, use_cache=False)
        start = time.perf_counter()
        decisions = agent.act(observations)
        out[f"{name}_decisions_per_s"] = len(decisions) / (time.perf_counter() - start)
        out[f"{name}_actions"] = [d.action.name for d in decisions]
    return out


def main_job(timeout: float = 3600) -> float:
    """Wall seconds of ``benchmarks/run.py`` with no arguments, cold caches (a fresh ``$TR1_CACHE``, a fresh
    output folder; the converted SmolLM2 is linked in, its conversion is not part of a run)."""
    from tr1_env.util.files import cache_root

    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        os.makedirs(cache)
        model = cache_root() / "smollm2-135m-instruct"
        if model.exists():
            os.symlink(model, os.path.join(cache, model.name))
        env = {**os.environ, "TR1_CACHE": cache}
        start = time.perf_counter()
        subprocess.run([sys.executable, "benchmarks/run.py", "--out", os.path.join(tmp, "run")], env=env, check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


class _SlowApi(ChatHandler):
    """A chat-completions endpoint that answers after ``server.latency`` seconds and allows ``server.rpm`` requests in
    any minute (a 429 with ``Retry-After: 1`` beyond, as providers do); connections kept alive, as providers do."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.body()
        now = time.monotonic()
        with self.server.lock:
            recent = self.server.recent
            while recent and recent[0] < now - 60:
                recent.popleft()
            limited = len(recent) >= self.server.rpm
            if not limited:
                recent.append(now)
            self.server.limited.value += limited
        if limited:
            error = {"error": {"message": "rate limit", "type": "requests", "code": "rate_limit"}}
            self.answer(429, json.dumps(error).encode(), {"Retry-After": "1"})
            return
        time.sleep(self.server.latency)
        thesis = "<conclusion>\n- Momentum.\n</conclusion>\n[[[BUY]]]"
        self.answer(200, json.dumps(completion(body["model"], thesis, 900, 300)).encode())


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # 32 connections opened at once (the default backlog of 5 refuses some)
    daemon_threads = True


def _serve(ports, limited, latency: float, rpm: int) -> None:
    server = _Server(("127.0.0.1", 0), _SlowApi)
    server.latency, server.rpm, server.lock, server.recent = latency, rpm, threading.Lock(), collections.deque()
    server.limited = limited
    ports.put(server.server_port)
    server.serve_forever(poll_interval=0.05)


def api_throughput(n: int = 256, latency: float = 1.0, rpm: int = 2000, seed: int = 0) -> dict:
    """Decisions per second of an API model through the harness's client (:class:`OpenAIChatAgent` with the run's
    :class:`~tr1_agent.api_limits.ApiGovernor` at ``--rpm``) against :class:`_SlowApi` on 127.0.0.1: 32 calls in
    flight, and the default 8 on a quarter of the prompts; real 1,500-character contexts, no call cache."""
    from benchmarks.replay import Observations
    from tr1_agent.api_limits import ApiGovernor
    from tr1_agent.llm_agents import OpenAIChatAgent

    store = Store()
    observations = Observations(store, seed)
    prompts = [observations.get(t, d, 1500, 0.0) for t, d in itertools.islice(endless_ticker_days(store, seed), n)]
    ports, limited = multiprocessing.Queue(), multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=_serve, args=(ports, limited, latency, rpm), daemon=True)
    server.start()  # a process of its own, as a real endpoint is: its threads do not take the client's GIL
    out = {"api_latency_s": latency, "api_server_rpm": rpm, "api_decisions": n}
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
        import openai  # noqa: F401 - imported once per process (seconds), not per run: not timed
        for concurrency, batch in ((32, prompts), (8, prompts[: n // 4])):
            agent = OpenAIChatAgent("gpt-4.1", base_url=base_url, concurrency=concurrency, use_cache=False,
                                    governor=ApiGovernor(rpm={"*": rpm}))
            start = time.perf_counter()
            decisions = agent.act(batch)
            out[f"api_decisions_per_s_{concurrency}"] = len(decisions) / (time.perf_counter() - start)
        out["api_429s"] = limited.value
    finally:
        server.terminate()
        server.join()
    return out


def api_through_run(tickers: int = 40, days: int = 15, latency: float = 1.0, rpm: int = 2000, concurrency: int = 32,
                    seed: int = 0) -> dict:
    """Decisions per second of an API model through a whole :func:`benchmarks.run.run` (in-process): a synthetic
    store of ``tickers`` tickers, ``days`` sessions of daily decisions of gpt-4.1 at ``--base-url`` :class:`_SlowApi`
    with ``--api-concurrency`` and ``--rpm``; the decisions made over the wall time of the agent's asking
    (:func:`benchmarks.replay.decide`: its context builds, calls and the day order of each ticker), and of the run."""
    import benchmarks.executors
    from benchmarks.config import RunConfig
    from benchmarks.run import run as run_benchmark
    from tr1_env.data.synth import SynthConfig, synth_store

    ports, limited = multiprocessing.Queue(), multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=_serve, args=(ports, limited, latency, rpm), daemon=True)
    server.start()
    asking: list[float] = []
    decide = benchmarks.executors.decide

    def timed(spec, *args):
        start, cpu = time.perf_counter(), time.process_time()
        records, failed = decide(spec, *args)
        if spec.api:
            asking.extend([time.perf_counter() - start, time.process_time() - cpu, sum(map(len, records.values()))])
        return records, failed

    out = {"through_tickers": tickers, "through_concurrency": concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        synth_store(SynthConfig(out=os.path.join(tmp, "store"), tickers=tickers, years=1.0, seed=seed))
        store = Store(os.path.join(tmp, "store"))
        sessions = store.trading_days(store.tickers[0])[-days:]
        cfg = RunConfig.of(store=os.path.join(tmp, "store"), tickers=store.tickers, agents=("buy_and_hold",),
                           model=("gpt-4.1",), api_concurrency=concurrency, rpm=(str(rpm),),
                           start=f"{sessions[0]:%Y-%m-%d}", end=f"{sessions[-1]:%Y-%m-%d}", bootstrap=0,
                           tearsheets=False, out=os.path.join(tmp, "run"))
        cfg = cfg.replace(base_url=f"http://127.0.0.1:{ports.get(timeout=60)}/v1")
        try:  # no call cached by an earlier measurement
            with mock.patch.dict(os.environ, TR1_CACHE=os.path.join(tmp, "cache")), \
                    mock.patch.object(benchmarks.executors, "decide", timed):
                start = time.perf_counter()
                run_benchmark(cfg)
                out["through_run_s"] = time.perf_counter() - start
        finally:
            server.terminate()
            server.join()
    wall, cpu, decisions = asking
    out.update(through_decisions=decisions, through_asking_s=wall, through_asking_cpu_s=cpu,
               through_decisions_per_s=decisions / wall,
               through_429s=limited.value)
    return out


#: The README's numeric walk-forward (``--agents``, 10 years, yearly): what ``--ray`` times by default.
RAY_AGENTS = ("buy_and_hold", "always_hold", "random", "ma_crossover", "rsi_reversion", "ppo", "a2c")
RAY_SPAN = ("2016-01-01", "2025-06-30")
#: ``--ray-quick``: the five rule agents over two years (two windows; no SB3 training), about a minute.
RAY_QUICK = (RAY_AGENTS[:5], ("2023-01-01", "2024-12-31"))


def timed_run(path: str, argv: list[str]) -> None:
    """``benchmarks/run.py argv`` in this process, then into ``path`` as JSON: this process's CPU seconds and its
    waited-for children's (the drawing pool), the CPU seconds its cells took here (in-process: the agents' part)
    and those of the items its executor mapped here (the statistics a Ray run sends to its workers)."""
    import resource

    from benchmarks import executors, run

    spent = {"cells_cpu_s": 0.0, "mapped_cpu_s": 0.0}

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.process_time() - start
        return wrapper

    executors.run_task = timed("cells_cpu_s", executors.run_task)
    executors.InProcess.map = staticmethod(timed("mapped_cpu_s", executors.InProcess.map))
    code = run.main(argv)
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "w") as f:
        json.dump({"rc": code, "driver_cpu_s": me.ru_utime + me.ru_stime,
                   "children_cpu_s": children.ru_utime + children.ru_stime, **spent}, f)


def ray_speedup(workers: int = 2, agents: tuple[str, ...] = RAY_AGENTS, span: tuple[str, str] = RAY_SPAN,
                timeout: float = 3600) -> dict:
    """The numeric walk-forward (``agents``, the 15 tickers, yearly over ``span``; the README's by default) in-process
    and with ``--executor ray --workers N`` (Ray's start included), fresh folders and caches, each in its own process:
    wall seconds, the driver's CPU seconds, and for the in-process run the CPU its cells and its mapped statistics
    took, whence the serial share (what stays in the driver on Ray) and Amdahl's bound for ``workers``; with the load
    average around it."""
    argv = ["--walk-forward", "yearly", "--start", span[0], "--end", span[1], "--no-tearsheets", "--agents", *agents]
    out = {"ray_workers": workers, "ray_agents": list(agents), "ray_span": list(span),
           "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("inprocess", []), ("ray", ["--executor", "ray", "--workers", str(workers)])):
            env = {**os.environ, "TR1_CACHE": os.path.join(tmp, f"cache-{name}"), "OMP_NUM_THREADS": "1"}
            spent = os.path.join(tmp, f"{name}.json")
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--timed-run", spent, *argv, *extra, "--out",
                            os.path.join(tmp, name)], env=env, check=True, timeout=timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out[f"walk_forward_{name}_s"] = time.perf_counter() - start
            with open(spent) as f:
                out.update({f"{name}_{k}": v for k, v in json.load(f).items()})
            out[f"load_after_{name}"] = os.getloadavg()[0]
    total = out["inprocess_driver_cpu_s"] + out["inprocess_children_cpu_s"]
    parallel = out["inprocess_cells_cpu_s"] + out["inprocess_mapped_cpu_s"]
    out["serial_share"] = (total - parallel) / total
    out["amdahl_speedup"] = 1 / (out["serial_share"] + (1 - out["serial_share"]) / workers)
    out["ray_speedup"] = out["walk_forward_inprocess_s"] / out["walk_forward_ray_s"]
    return out


def _timed_child(argv: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``argv`` and return its wall seconds, CPU seconds (user + system) and peak resident memory (MiB), read
    from the kernel's accounting of that process alone (``wait4``)."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: progress bars would fill a pipe and block the child
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - start
        log.seek(0)
        if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: a run with a skipped agent still timed its replays
            raise RuntimeError(f"{' '.join(argv[:3])} ... failed: {log.read().decode()[-2000:]}")
    if wall > timeout:
        raise RuntimeError(f"{' '.join(argv[:3])} ... took {wall:.0f} s, over the {timeout:.0f} s limit")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}


def store_point(out: str, tickers: int, years: float, seed: int, seconds: float) -> dict:
    """In this process: write the synthetic store, then time context builds on it (a ticker's first context indexes
    that ticker; later ones are the warm path a replay runs)."""
    from tr1_env.data.synth import SynthConfig, synth_store

    start = time.perf_counter()
    rows = synth_store(SynthConfig(out=out, tickers=tickers, years=years, seed=seed))
    built = time.perf_counter() - start
    store = Store(out)
    sample = store.tickers[:: max(1, len(store.tickers) // 5)][:5]
    sessions = {t: store.trading_days(t)[260:] for t in sample}
    start = time.process_time()
    for t in sample:
        build_context(store, t, sessions[t][-1])
    first = (time.process_time() - start) / len(sample)
    rng = np.random.default_rng(seed)
    draws = ((t, sessions[t][rng.integers(len(sessions[t]))]) for t in itertools.cycle(sample))
    warm, _ = per_second(lambda: build_context(store, *next(draws)), seconds, time.process_time)
    return {"build_s": built, "price_rows": rows["prices"], "news_rows": rows["news"], "first_context_s": first,
            "contexts_per_s_core": warm}


def scale(sizes: tuple[int, ...] = (15, 100, 500), years: float = 10.0, seed: int = 0, seconds: float = 4.0,
          agents: tuple[str, ...] | None = None, timeout: float = 7200, workers: int = 0) -> dict:
    """Cost growth with the universe: per size, the store (built in a child process, its peak memory that
    process's), context builds, and a yearly walk-forward of ``agents`` (default ``baselines.PRICES_ONLY``) over
    every year after the first, in its own process (on a local Ray of ``workers`` CPUs when ``workers`` > 0; its
    CPU is then the run's process tree's, Ray's own processes included); then per cost the exponent of a power law
    in tickers x sessions (1 = linear)."""
    from baselines import PRICES_ONLY

    agents = agents or tuple(sorted(PRICES_ONLY))
    ray = ["--executor", "ray", "--workers", str(workers)] if workers else []
    points = []
    with tempfile.TemporaryDirectory(prefix="tr1-scale-") as tmp:
        env = {**os.environ, "TR1_CACHE": os.path.join(tmp, "cache"), "OMP_NUM_THREADS": "1"}
        for n in sizes:
            store, result = os.path.join(tmp, f"store{n}"), os.path.join(tmp, f"store{n}.json")
            build = _timed_child([sys.executable, __file__, "--scale-point", store, str(n), str(years), str(seed),
                                  str(seconds), result], timeout, env)
            with open(result) as f:
                point = {"tickers": n, **json.load(f), "store_peak_mib": build["peak_mib"]}
            days = Store(store).trading_days(Store(store).tickers[0])
            point["sessions"] = len(days)
            first, last = days[0] + pd.DateOffset(years=1), days[-1]
            run = _timed_child([sys.executable, "benchmarks/run.py", "--store", store, "--walk-forward", "yearly",
                                "--start", f"{first:%Y-%m-%d}", "--end", f"{last:%Y-%m-%d}", "--no-tearsheets",
                                "--agents", *agents, "--out", os.path.join(tmp, f"run{n}"), *ray], timeout, env)
            point.update({f"walk_forward_{k}": v for k, v in run.items()})
            point["replayed_ticker_days"] = n * len(days[days >= first])
            points.append(point)
            shutil.rmtree(store, ignore_errors=True)
    size = np.log([p["tickers"] * p["sessions"] for p in points])
    growth = {}
    if len(points) > 1:
        for key in ("build_s", "store_peak_mib", "walk_forward_wall_s", "walk_forward_cpu_s", "walk_forward_peak_mib"):
            growth[key] = float(np.polyfit(size, np.log([p[key] for p in points]), 1)[0])
    return {"scale": points, "scale_growth": growth, "scale_agents": list(agents), "scale_years": years,
            "scale_workers": workers, "load_average": os.getloadavg(), "cores": os.cpu_count()}


def print_scale(results: dict) -> None:
    rows = [("tickers x sessions", "store build", "store peak", "first context", "contexts/s/core",
             "walk-forward wall", "walk-forward CPU", "walk-forward peak")]
    for p in results["scale"]:
        rows.append((f"{p['tickers']} x {p['sessions']:,}", f"{p['build_s']:.1f} s", f"{p['store_peak_mib']:,.0f} MiB",
                     f"{p['first_context_s']:.2f} s", f"{p['contexts_per_s_core']:,.0f}",
                     f"{p['walk_forward_wall_s'] / 60:.1f} min", f"{p['walk_forward_cpu_s'] / 60:.1f} min",
                     f"{p['walk_forward_peak_mib']:,.0f} MiB"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(f"{c:>{w}}" for c, w in zip(r, widths)))
    if results["scale_growth"]:
        print("growth exponent against tickers x sessions (1 = linear): " + ", ".join(
            f"{k} {v:.2f}" for k, v in results["scale_growth"].items()))
    where = f"a local Ray of {results['scale_workers']} workers" if results["scale_workers"] else "one process"
    print(f"agents: {' '.join(results['scale_agents'])}, in {where}; load average {results['load_average'][0]:.1f} "
          f"on {results['cores']} cores")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing budget per measurement")
    parser.add_argument("--ticker", default="MSFT", help="trading-env ticker (FLAG-TRADER's test period)")
    parser.add_argument("--smollm2", action="store_true", help="also time SmolLM2 decisions (a few minutes on CPU)")
    parser.add_argument("--main-job", action="store_true", help="also time the default benchmarks/run.py, cold caches")
    parser.add_argument("--api", action="store_true", help="also time API decisions against a local slow server "
                        "(1 s a call, 2,000 requests/min), at the client and through a run (about 2 min)")
    parser.add_argument("--ray", action="store_true", help="also time the README's numeric walk-forward (7 agents, "
                        "10 years) in-process and on a local Ray of 2 workers (about 10 minutes; needs tr1[ray])")
    parser.add_argument("--ray-quick", action="store_true", help="--ray on the five rule agents over 2023-2024 (two "
                        "windows, no SB3; about a minute)")
    parser.add_argument("--only", action="store_true", help="time only what --api, --ray, --smollm2 or --main-job ask")
    parser.add_argument("--timed-run", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # JSON RUN_ARGS...
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--scale", action="store_true", help="measure cost growth on synthetic stores instead")
    parser.add_argument("--scale-tickers", type=int, nargs="+", default=[15, 100, 500], help="store sizes (tickers)")
    parser.add_argument("--scale-years", type=float, default=10.0, help="years of sessions per synthetic store")
    parser.add_argument("--scale-agents", nargs="+", help="walk-forward agents (default: baselines.PRICES_ONLY)")
    parser.add_argument("--scale-timeout", type=float, default=7200, help="seconds allowed to one size's step")
    parser.add_argument("--scale-workers", type=int, default=0, help="run each walk-forward on a local Ray of this "
                        "many workers (0: in one process, the default; needs tr1[ray])")
    parser.add_argument("--scale-point", nargs=6, help=argparse.SUPPRESS)  # OUT TICKERS YEARS SEED SECONDS JSON
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timed_run:
        timed_run(args.timed_run[0], args.timed_run[1:])
        return {}
    if args.scale_point:
        out, tickers, years, seed, seconds, path = args.scale_point
        point = store_point(out, int(tickers), float(years), int(seed), float(seconds))
        with open(path, "w") as f:
            json.dump(point, f)
        return point
    if args.scale:
        results = scale(tuple(args.scale_tickers), args.scale_years, 0, args.seconds,
                        tuple(args.scale_agents) if args.scale_agents else None, args.scale_timeout,
                        args.scale_workers)
        print_scale(results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return results
    results = {} if args.only else {**run(args.seconds, args.ticker), **compare_timing(),
                                    **booking_timing(seconds=args.seconds), **decisions_timing(seconds=args.seconds)}
    if args.api:
        results.update(api_throughput())
        results.update(api_through_run())
    if args.ray or args.ray_quick:
        results.update(ray_speedup(agents=RAY_QUICK[0], span=RAY_QUICK[1]) if args.ray_quick else ray_speedup())
    if args.smollm2:
        results.update(smollm2_decisions())
    if args.main_job:
        results["main_job_s"] = main_job()
    rows = [] if args.only else [
            ("trading env (numeric, random policy)", f"{results['trading_env_steps_per_s']:,.0f} steps/s"),
            ("gym-anytrading StocksEnv, same prices", f"{results['anytrading_steps_per_s']:,.0f} steps/s"),
            ("  ratio ours / anytrading", f"{results['trading_vs_anytrading']:.2f}x"),
            ("build_context (indexed), all modalities", f"{results['contexts_per_s']:,.1f} contexts/s"),
            ("build_context_reference (plain), same days", f"{results['reference_contexts_per_s']:,.1f} contexts/s"),
            ("  ratio indexed / plain", f"{results['contexts_per_s'] / results['reference_contexts_per_s']:,.0f}x"),
            ("build_context, then anonymize (strict), days seen before",
             f"{results['anonymized_contexts_per_s_core']:,.0f} contexts/s/core"),
            ("  build_context alone, same days", f"{results['contexts_per_s_core']:,.0f} contexts/s/core"),
            ("  anonymized, days never seen", f"{results['anonymized_first_visit_per_s_core']:,.0f} contexts/s/core"),
            (f"score, {results['thesis_chars']:,.0f}-char thesis vs {results['context_chars']:,.0f}-char context",
             f"{results['scores_per_s']:,.0f} scores/s/core"),
            ("  reference scorer, same theses", f"{results['reference_scores_per_s']:,.0f} scores/s/core"),
            ("  ratio score / reference", f"{results['scores_per_s'] / results['reference_scores_per_s']:.1f}x"),
            (f"  share of quotes repeated (distinct variant: {results['distinct_repeated_quote_share']:.0%})",
             f"{results['repeated_quote_share']:.0%}"),
            ("  score, same contexts, distinct quotes",
             f"{results['distinct_quotes_scores_per_s']:,.0f} scores/s/core"),
            (f"score, {results['hostile_chars'] / 1000:,.0f} KB hostile completion",
             f"{results['hostile_scores_per_s']:,.1f} scores/s/core"),
            ("  reference scorer, same completion", f"{results['hostile_reference_scores_per_s']:,.1f} scores/s/core"),
            ("  ratio score / reference",
             f"{results['hostile_scores_per_s'] / results['hostile_reference_scores_per_s']:.1f}x"),
            (f"stats.compare, {results['compare_agents']} agents x {results['compare_days']:,} days x "
             f"{results['compare_reps']:,} resamples", f"{results['compare_s']:.1f} s CPU"),
            ("  arch SPA + MCS alone, same table", f"{results['arch_spa_mcs_s']:.1f} s CPU"),
            ("  ratio compare / arch", f"{results['compare_s'] / results['arch_spa_mcs_s']:.2f}x"),
            (f"portfolio book, {results['booking_tickers']} tickers x {results['booking_sessions']} sessions, default",
             f"{results['booking_default_per_s']:,.0f} books/s"),
            ("  realistic preset, booked day by day", f"{results['booking_realistic_per_s']:,.1f} books/s"),
            ("  ratio default / realistic",
             f"{results['booking_default_per_s'] / results['booking_realistic_per_s']:.0f}x"),
            (f"decisions booked, {results['decisions_sessions']} sessions, column by column",
             f"{results['decisions_frames_per_s']:,.0f} frames/s/core"),
            ("  a frame of records", f"{results['decisions_records_frames_per_s']:,.0f} frames/s/core"),
            ("  ratio columns / records",
             f"{results['decisions_frames_per_s'] / results['decisions_records_frames_per_s']:.2f}x")]
    if args.smollm2:
        fast, before = results["smollm2_decisions_per_s"], results["smollm2_before_decisions_per_s"]
        whole = results["smollm2_whole_prompts_decisions_per_s"]
        reencoded = results["smollm2_reencoded_decisions_per_s"]
        threads = results["smollm2_threads"] or "default"
        rows += [(f"SmolLM2 decisions, as run ({threads} thread(s))", f"{fast:.3f} decisions/s"),
                 ("SmolLM2 decisions, before (whole prompts, re-encoded, default threads)",
                  f"{before:.3f} decisions/s"),
                 ("  ratio as run / before", f"{fast / before:.2f}x"),
                 ("SmolLM2 decisions, prompts encoded whole", f"{whole:.3f} decisions/s"),
                 ("  ratio as run / whole prompts", f"{fast / whole:.2f}x"),
                 ("SmolLM2 decisions, forced decisions re-encoded", f"{reencoded:.3f} decisions/s"),
                 ("  ratio as run / re-encoded", f"{fast / reencoded:.2f}x")]
    if args.main_job:
        rows.append(("benchmarks/run.py, no arguments, cold caches", f"{results['main_job_s'] / 60:.1f} min"))
    if args.api:
        fast, default = results["api_decisions_per_s_32"], results["api_decisions_per_s_8"]
        rows += [(f"API decisions, 32 in flight ({results['api_latency_s']:g} s a call, {results['api_server_rpm']:,} "
                  f"requests/min, {results['api_429s']} 429s)", f"{fast:.1f} decisions/s"),
                 ("  8 in flight (the default --api-concurrency)", f"{default:.1f} decisions/s"),
                 ("  ratio 32 / 8", f"{fast / default:.2f}x"),
                 (f"  through benchmarks/run.py: {results['through_tickers']} tickers x "
                  f"{results['through_decisions'] // results['through_tickers']} days, --api-concurrency "
                  f"{results['through_concurrency']} ({results['through_429s']} 429s; whole run "
                  f"{results['through_run_s']:.0f} s)", f"{results['through_decisions_per_s']:.1f} decisions/s")]
    if args.ray or args.ray_quick:
        r = results
        what = (f"numeric walk-forward ({len(r['ray_agents'])} agents x 15 tickers, yearly "
                f"{r['ray_span'][0]}..{r['ray_span'][1]})")
        rows += [(f"{what}, in-process (load {r['load_before']:.1f} before)", f"{r['walk_forward_inprocess_s']:.0f} s"),
                 ("  CPU: driver + drawing pool / its cells / its mapped statistics",
                  f"{r['inprocess_driver_cpu_s'] + r['inprocess_children_cpu_s']:.0f} / "
                  f"{r['inprocess_cells_cpu_s']:.0f} / {r['inprocess_mapped_cpu_s']:.0f} s"),
                 (f"  serial share; Amdahl's bound for {r['ray_workers']} workers",
                  f"{r['serial_share']:.0%}; {r['amdahl_speedup']:.2f}x"),
                 (f"  --executor ray, {r['ray_workers']} workers (load {r['load_after_inprocess']:.1f} before, "
                  f"{r['load_after_ray']:.1f} after)", f"{r['walk_forward_ray_s']:.0f} s"),
                 ("  Ray driver CPU (workers not counted)", f"{r['ray_driver_cpu_s']:.0f} s"),
                 ("  speed-up", f"{r['ray_speedup']:.2f}x")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>22}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
