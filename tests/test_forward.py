"""Forward testing over two simulated weeks: a fake Finnhub and a fake OpenAI-compatible server on 127.0.0.1, a
simulated clock, and the ledger checked, exported and scored like a replay."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import finnhub
import numpy as np
import pandas as pd
import pytest

from benchmarks.config import StatisticsConfig
from benchmarks.forward import ForwardConfig, ForwardRefused, run_forward
from benchmarks.forward_score import ScoreConfig, effective_decisions, score
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision
from tr1_env.data.clock import SimulatedClock, at_ny
from tr1_env.data.schema import TABLES
from tr1_env.data.store import Store
from tr1_env.evaluation.ledger import Ledger, canonical, check_roots, line_hash, verify
from tr1_env.evaluation.stats import days_to_verdict, min_detectable_excess_sharpe

TICKERS = ("AAPL", "MSFT", "AMZN")
START = pd.Timestamp("2024-05-31")
DAYS = pd.bdate_range("2024-06-03", "2024-06-14")  # ten sessions, no holiday
OPENAI_KEY = "sk-forward-SECRET-0123"
STATS = StatisticsConfig(bootstrap=200)  # the tests' resamples: equality needs the same draws, not many
FINNHUB_KEY = "fh-forward-SECRET-4567"


class FakeFinnhub(BaseHTTPRequestHandler):
    """Serves the embedded store's bars as Finnhub would on the simulated day: /quote the day's bar (its close
    once the session has ended), /stock/candle the bars up to that day, empty news and filings; HTTP 500 while
    ``server.down``."""

    def do_GET(self):  # noqa: N802 - http.server API
        url, server = urlparse(self.path), self.server
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        server.calls += 1
        if server.down:
            body, status = b'{"error": "upstream down"}', 500
        else:
            status, name, sym = 200, url.path.removeprefix("/api/v1").strip("/"), query.get("symbol", "")
            bars = server.bars[server.bars["ticker"] == sym]
            if name == "quote":
                bar = bars[bars["date"] <= server.today].iloc[-1]
                t = int(at_ny(bar["date"], 16, 0).timestamp())
                body = json.dumps({"c": bar["close"], "o": bar["open"], "h": bar["high"], "l": bar["low"],
                                   "pc": 0, "t": t}).encode()
            elif name == "stock/candle":
                lo, hi = (pd.Timestamp(int(query[k]), unit="s") for k in ("from", "to"))
                b = bars[(bars["date"] >= lo) & (bars["date"] < hi) & (bars["date"] <= server.today)]
                body = json.dumps({"s": "ok" if len(b) else "no_data", "t": [int(d.timestamp()) for d in b["date"]],
                                   **{c: b[k].tolist() for c, k in [("o", "open"), ("h", "high"), ("l", "low"),
                                                                    ("c", "close"), ("v", "volume")]}}).encode()
            else:
                body = {"company-news": b"[]", "stock/recommendation": b"[]",
                        "stock/insider-transactions": b'{"data": []}',
                        "calendar/earnings": b'{"earningsCalendar": []}'}[name]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def decide_by_prompt(body: dict) -> str:
    """The fake model's reply: a decision that is a function of the prompt (its sha256), so a replay that builds
    the same prompt gets the same answer."""
    prompt = body["messages"][-1]["content"]
    action = list(Action)[int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 5].name
    return f"<conclusion>\n- A call.\n</conclusion>\n[[[{action}]]]"


def _serve(handler, **attrs) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for k, v in attrs.items():
        setattr(server, k, v)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


class Counting(Agent):
    """A plug-in that records what it is asked and answers BUY, or SELL when a ticker-day is asked again."""

    asked: list = []

    def act(self, observations):
        out = []
        for o in observations:
            key = (o.ticker, f"{o.date:%Y-%m-%d}")
            out.append(Decision(Action.SELL if key in Counting.asked else Action.BUY))
            Counting.asked.append(key)
        return out


class Crashing(Agent):
    """Kills the run (an error that is not an agent failure) while ``crash`` is set."""

    crash = True

    def act(self, observations):
        if Crashing.crash:
            raise KeyboardInterrupt("the machine went down")
        return [Decision(Action.SELL) for _ in observations]


@pytest.fixture(scope="module")
def truth():
    return Store()


@pytest.fixture()
def world(tmp_path, truth, monkeypatch, api_server):
    """A store cut at 2024-05-31's close for three tickers, a fake Finnhub that knows the next two weeks, a fake
    OpenAI server, both keys set."""
    store = tmp_path / "store"
    store.mkdir()
    cut = truth.cut(START)
    for name in TABLES:
        frame = cut.table(name)
        if "ticker" in frame and name != "macro":
            frame = frame[frame["ticker"].isin(TICKERS)]
        frame.to_parquet(store / f"{name}.parquet", index=False)
    prices = truth.table("prices")
    bars = prices[prices["ticker"].isin(TICKERS) & (prices["date"] <= DAYS[-1])]
    fh = _serve(FakeFinnhub, bars=bars, today=DAYS[0], down=False, calls=0)
    api_server.reply = decide_by_prompt
    monkeypatch.setattr(finnhub.Client, "API_URL", f"http://127.0.0.1:{fh.server_port}/api/v1")
    monkeypatch.setenv("FINNHUB_API_KEY", FINNHUB_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(Counting, "asked", [])
    yield type("World", (), {"store": store, "fh": fh, "llm": api_server, "folder": tmp_path / "fw", "tmp": tmp_path,
                             "base_url": api_server.base_url})
    fh.shutdown()


def _config(w, **kw) -> ForwardConfig:
    settings = dict(folder=str(w.folder), store=str(w.store), tickers=TICKERS, agents=("ma_crossover",),
                    calls_per_minute=0.0)
    return ForwardConfig(**{**settings, **kw})


def _day(w, day, cfg, hour=16, minute=5, **kw):
    """One daily run at ``hour:minute`` ET of ``day``."""
    w.fh.today = pd.Timestamp(day)
    return run_forward(cfg, SimulatedClock(at_ny(day, hour, minute)), **kw)


@pytest.mark.slow
def test_two_weeks_idempotent_verified_exported_and_scored_as_a_replay(world):
    from benchmarks.config import RunConfig
    from benchmarks.run import run

    cfg = _config(world, agents=("ma_crossover", "rsi_reversion"), model=("gpt-4.1",), base_url=world.base_url)
    for day in DAYS:
        first = _day(world, day, cfg)
        assert (first.decided, first.failed, first.missed) == (9, [], [])
        asked, called, lines = world.llm.requests, world.fh.calls, Ledger(world.folder / "ledger.jsonl").lines()
        again = _day(world, day, cfg, minute=40)  # the timer fires twice: nothing is asked, fetched or appended
        assert again.decided == 0 and (world.llm.requests, world.fh.calls) == (asked, called)
        assert Ledger(world.folder / "ledger.jsonl").lines() == lines
    ledger = world.folder / "ledger.jsonl"
    head = json.loads((world.folder / "forward.json").read_text())["head"]
    assert verify(ledger, (head["lines"], head["sha256"])) == [] and head["lines"] == 90
    text = ledger.read_text()
    assert OPENAI_KEY not in text and FINNHUB_KEY not in text
    assert OPENAI_KEY not in (world.folder / "forward.json").read_text()
    entry = json.loads(text.splitlines()[-1])
    assert entry["model"] == "gpt-4.1" and entry["cutoff"] and entry["tokens"]["prompt_tokens"] == 11
    assert entry["cost_usd"] == pytest.approx((11 * 2.0 + 7 * 8.0) / 1e6)
    assert entry["deadline"].startswith("2024-06-17T13:30") and entry["fill"] == "next-open"
    # a file per UTC day, each root the hash of that day's last line
    roots = sorted((world.folder / "export").glob("*.root"))
    assert len(roots) == len(DAYS) and check_roots(ledger, world.folder / "export") == []

    # the store now holds the two weeks' closes: score, and replay the same agents over the same days
    out = world.tmp / "score"
    summary = score(ScoreConfig(folder=str(world.folder), store=str(world.store), statistics=STATS, out=str(out)))
    assert not summary.empty
    replayed = world.tmp / "replay"
    run(RunConfig.of(agents=("ma_crossover", "rsi_reversion"), model=("gpt-4.1",), base_url=world.base_url,
                     tickers=TICKERS, start=f"{DAYS[0]:%Y-%m-%d}", end=f"{DAYS[-1]:%Y-%m-%d}", store=str(world.store),
                     fill="next-open", out=str(replayed), tearsheets=False, statistics=STATS))
    for name in ("summary.csv", "leaderboard.csv", "windows.csv", "costs.csv"):
        a, b = pd.read_csv(out / name), pd.read_csv(replayed / name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    for name in ("returns/gpt-4.1__AAPL.csv", "returns/ma_crossover__MSFT.csv"):
        assert (out / name).read_text() == (replayed / name).read_text()
    days = pd.read_csv(out / "forward.csv").set_index("agent")
    assert (days["decided"] == 27).all() and (days[["failed", "missed", "ignored_entries"]] == 0).all().all()
    assert "days to a verdict" in (out / "forward.md").read_text()
    listed = json.loads((out / "config.json").read_text())["files"]
    assert {"forward.csv", "forward.md"} <= set(listed)


def test_a_missed_day_is_never_back_filled(world):
    cfg = _config(world, prices=True)  # candles: the missed session's bar still reaches the store
    for day in DAYS[:2]:
        assert _day(world, day, cfg).decided == 3
    skipped = DAYS[2]
    late = _day(world, DAYS[3], cfg, hour=9, minute=45)  # the morning after, past the open it would trade at
    assert late.day is None and late.decided == 0
    nxt = _day(world, DAYS[3], cfg)
    assert nxt.missed == [f"{skipped:%Y-%m-%d}"] and nxt.decided == 3
    for day in DAYS[4:6]:
        _day(world, day, cfg)
    days = {e["day"] for e in Ledger(world.folder / "ledger.jsonl").entries()}
    assert f"{skipped:%Y-%m-%d}" not in days and len(days) == 5
    score(ScoreConfig(folder=str(world.folder), store=str(world.store), statistics=STATS, out=str(world.tmp / "s")))
    counts = pd.read_csv(world.tmp / "s" / "forward.csv").set_index("agent").loc["ma_crossover"]
    assert (counts["sessions"], counts["decided"], counts["missed"]) == (15, 12, 3)
    booked = json.loads((world.tmp / "s" / "decisions" / "ma_crossover__AAPL.json").read_text())["decisions"]
    by_day = {d["date"]: d for d in booked}  # no order on the missed session: the position is kept, not HOLD
    missed = by_day[f"{skipped:%Y-%m-%d}"]
    assert missed["meta"]["forward"].startswith("no decision") and missed["action"] == by_day[f"{DAYS[1]:%Y-%m-%d}"][
        "action"] != "HOLD"


def test_a_vendor_outage_marks_the_day_failed_never_hold(world):
    cfg = _config(world)
    _day(world, DAYS[0], cfg)
    world.fh.down = True
    out = _day(world, DAYS[1], cfg)
    assert out.status == 1 and out.decided == 0 and len(out.failed) == 3
    entries = [e for e in Ledger(world.folder / "ledger.jsonl").entries() if e["day"] == f"{DAYS[1]:%Y-%m-%d}"]
    assert [e["status"] for e in entries] == ["failed"] * 3
    assert all("decision" not in e and "500" in e["error"] and FINNHUB_KEY not in e["error"] for e in entries)
    world.fh.down = False  # back before the deadline (the next open): the rerun decides the day
    again = _day(world, DAYS[1], cfg, hour=20)
    assert again.decided == 3 and again.failed == []
    assert verify(world.folder / "ledger.jsonl") == []


def test_a_tampered_ledger_is_named_by_line(world):
    cfg = _config(world)
    for day in DAYS[:3]:
        _day(world, day, cfg)
    path = world.folder / "ledger.jsonl"
    good = path.read_text().splitlines()
    head = (len(good), line_hash(good[-1]))
    assert verify(path, head) == []

    edited = json.loads(good[3])
    edited["decision"] = "STRONG_BUY" if edited["decision"] != "STRONG_BUY" else "STRONG_SELL"
    path.write_text("\n".join([*good[:3], canonical(edited), *good[4:]]) + "\n")
    assert any(p.startswith("line 5:") and "line 4 was edited" in p for p in verify(path, head))

    path.write_text("\n".join(good[:2] + good[3:]) + "\n")  # line 3 deleted
    assert any(p.startswith("line 3:") for p in verify(path, head))

    path.write_text("\n".join(good[:-1]) + "\n")  # the last line deleted: only the recorded head tells
    assert verify(path) == [] and any("deleted" in p for p in verify(path, head))

    last = json.loads(good[-1])
    last["decision"] = "HOLD" if last["decision"] != "HOLD" else "BUY"
    path.write_text("\n".join([*good[:-1], canonical(last)]) + "\n")
    assert any(p.startswith(f"line {len(good)}:") for p in verify(path, head))

    # a chain rewritten from line 2 on, every hash recomputed: it verifies, but the published roots do not match
    lines, prev = [good[0]], line_hash(good[0])
    for line in good[1:]:
        e = json.loads(line)
        e.update(prev=prev, decision="HOLD")
        lines.append(canonical(e))
        prev = line_hash(lines[-1])
    path.write_text("\n".join(lines) + "\n")
    assert verify(path) == []
    assert len(check_roots(path, world.folder / "export")) == 3

    late = json.loads(good[0])
    late["ts"] = "2024-06-04T14:00:00.000000Z"  # stamped after the next open it traded at
    path.write_text(canonical(late) + "\n")
    assert any("after the deadline" in p for p in verify(path))


def test_a_crash_halfway_through_the_agents_completes_only_the_missing_ones(world, monkeypatch):
    cfg = _config(world, agents=("test_forward:Counting", "test_forward:Crashing", "rsi_reversion"))
    monkeypatch.setattr(Crashing, "crash", True)
    with pytest.raises(KeyboardInterrupt):
        _day(world, DAYS[0], cfg)
    entries = Ledger(world.folder / "ledger.jsonl").entries()
    assert {e["agent"] for e in entries} == {"Counting"} and len(Counting.asked) == 3
    monkeypatch.setattr(Crashing, "crash", False)
    out = _day(world, DAYS[0], cfg, minute=20)
    assert out.decided == 6 and len(Counting.asked) == 3  # Counting is not asked again
    entries = Ledger(world.folder / "ledger.jsonl").entries()
    assert sorted(e["agent"] for e in entries).count("Counting") == 3 and len(entries) == 9
    assert verify(world.folder / "ledger.jsonl") == []


@pytest.mark.slow
def test_force_appends_superseding_entries_the_scorer_ignores(world):
    cfg = _config(world, agents=("test_forward:Counting",))
    for day in DAYS[:5]:
        _day(world, day, cfg)
    plain = world.tmp / "plain"
    score(ScoreConfig(folder=str(world.folder), store=str(world.store), statistics=STATS, out=str(plain)))
    forced = _day(world, DAYS[4], ForwardConfig(**{**vars(cfg), "force": True}), minute=30)
    assert forced.decided == 3
    entries = Ledger(world.folder / "ledger.jsonl").entries()
    assert [e["supersedes"] for e in entries[-3:]] == [True] * 3 and {e["decision"] for e in entries[-3:]} == {"SELL"}
    chosen, ignored = effective_decisions(entries)
    assert ignored == {"Counting": 3} and {e["decision"] for e in chosen["Counting"].values()} == {"BUY"}
    again = world.tmp / "again"
    score(ScoreConfig(folder=str(world.folder), store=str(world.store), statistics=STATS, out=str(again)))
    pd.testing.assert_frame_equal(pd.read_csv(again / "summary.csv"), pd.read_csv(plain / "summary.csv"))
    assert pd.read_csv(again / "forward.csv")["ignored_entries"].tolist() == [3]


def test_a_decision_before_the_close_reads_the_live_quote_and_trades_at_that_close(world):
    cfg = _config(world, decide_at="15:50")
    out = _day(world, DAYS[0], cfg, hour=15, minute=50)
    assert out.decided == 3
    e = Ledger(world.folder / "ledger.jsonl").entries()[0]
    assert e["fill"] == "close" and e["asof"].startswith("2024-06-03T19:50") and e["deadline"].startswith(
        "2024-06-03T20:00")
    assert pd.Timestamp(e["data"]["prices"]["last"]) <= pd.Timestamp(e["asof"])
    assert _day(world, DAYS[0], cfg, hour=16, minute=30).day is None  # after the close: only the close is stored
    assert Store(world.store).trading_days("AAPL")[-1] == DAYS[0]
    assert verify(world.folder / "ledger.jsonl") == []


def test_refusals(world):
    with pytest.raises(ForwardRefused, match="ppo"):
        run_forward(_config(world, agents=("ppo",)), SimulatedClock(at_ny(DAYS[0], 16, 5)))
    (world.tmp / "mine").mkdir()
    (world.tmp / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ForwardRefused, match="no forward run owns"):
        run_forward(_config(world, folder=str(world.tmp / "mine")), SimulatedClock(at_ny(DAYS[0], 16, 5)))
    with pytest.raises(ValueError, match="--decide-at"):
        _config(world, decide_at="17:00")


def test_days_to_a_verdict_follow_the_detectable_difference():
    n, sr, sr0, rho = 60, 0.05, 0.03, 0.8
    mde = min_detectable_excess_sharpe(n, sr, sr0, rho)
    k = days_to_verdict(n, mde / 2, mde, "indistinguishable from")
    assert min_detectable_excess_sharpe(n + int(k), sr, sr0, rho) <= mde / 2 + 1e-12
    assert min_detectable_excess_sharpe(n + int(k) - 1, sr, sr0, rho) > mde / 2
    assert k == 3 * n
    assert days_to_verdict(n, 0.0, mde, "indistinguishable from") == np.inf
    assert days_to_verdict(n, 1.0, mde, "beats") == 0
    assert days_to_verdict(10, 2 * mde, mde, "too short", min_days=20) == 10


def test_the_commands_exit_with_what_happened(world, capsys):
    import argparse

    from benchmarks.forward_cli import register

    parser = argparse.ArgumentParser(prog="tr1")
    register(parser.add_subparsers(dest="command", required=True))

    def tr1(*argv) -> int:
        ns = parser.parse_args(list(argv))
        with pytest.raises(SystemExit) as stop:
            ns.func(ns)
        return stop.value.code

    world.fh.today = DAYS[0]
    common = ["--folder", str(world.folder), "--store", str(world.store), "--tickers", *TICKERS]
    assert tr1("forward", "run", *common, "--agents", "ma_crossover", "--calls-per-minute", "0",
               "--now", str(at_ny(DAYS[0], 16, 5))) == 0
    assert tr1("forward", "verify", "--folder", str(world.folder), "--store", str(world.store)) == 0
    assert "ok: 3 lines" in capsys.readouterr().out
    news = pd.read_parquet(world.store / "news.parquet")
    late = news[news["ticker"] == "AAPL"].tail(1).assign(title="A headline stamped before the close, fetched later",
                                                         url="https://example.com/late",
                                                         available_at=at_ny(DAYS[0], 11, 0))
    pd.concat([news, late], ignore_index=True).to_parquet(world.store / "news.parquet", index=False)
    assert tr1("forward", "verify", "--folder", str(world.folder), "--store", str(world.store)) == 1
    assert "line 1: the store now shows other news rows at 2024-06-03T20:00" in capsys.readouterr().out
    news.to_parquet(world.store / "news.parquet", index=False)
    path = world.folder / "ledger.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace('"decision":"', '"decision":"X'), *lines[1:]]) + "\n")
    assert tr1("forward", "verify", "--folder", str(world.folder)) == 1
    assert "line 2: its previous hash does not match line 1" in capsys.readouterr().out
    assert tr1("forward", "run", *common, "--agents", "ppo", "--now", str(at_ny(DAYS[0], 16, 5))) == 2
    assert tr1("forward", "score", "--folder", str(world.folder), "--store", str(world.store)) == 2
    assert "does not verify" in capsys.readouterr().err
