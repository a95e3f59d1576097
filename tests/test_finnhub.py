"""The live Finnhub vendor, run through finnhub-python against recorded responses on a local server."""

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import finnhub
import pandas as pd
import pytest

from tr1_env.data.clock import at_ny
from tr1_env.data.finnhub import FinnhubUpdate, fetch, make_client, update_store
from tr1_env.data.store import Store

RECORDED = Path("tests/data/finnhub")
SECRET = "fh-test-SECRET-key"


class Replay(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server API
        url = urlparse(self.path)
        query = parse_qs(url.query)
        Replay.seen.append((url.path, query))
        name = url.path.removeprefix("/api/v1/").strip("/").replace("/", "-").replace("stock-", "", 1)
        symbol = query.get("symbol", ["?"])[0]
        f = RECORDED / f"{name}_{symbol}.json"
        empty = {"company-news": b"[]", "recommendation": b"[]", "candle": b'{"s": "no_data"}'}
        body = f.read_bytes() if f.exists() else empty.get(name, b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def client():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    c = finnhub.Client(api_key=SECRET)
    c.API_URL = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    Replay.seen.clear()
    yield c
    server.shutdown()


def test_fetch_maps_every_endpoint(client):
    cfg = FinnhubUpdate(store="unused", tickers=("XOM", "AAPL"), start="2024-08-01", end="2024-08-09", prices=True)
    tables = fetch(client, cfg)
    assert {"news", "recommendations", "insider", "earnings", "prices"} <= set(tables)
    news = tables["news"]
    assert (news["ticker"] == "XOM").all() and not news.duplicated("url").any()
    yahoo = news[news["source"] == "Yahoo"]
    assert (yahoo["available_at"] == yahoo["published_at"]).all()
    other = news[news["source"] != "Yahoo"]
    assert ((other["available_at"] - other["published_at"]) == pd.Timedelta(hours=6)).all()
    prices = tables["prices"]
    assert prices.loc[prices["date"] == "2024-08-01", "close"].iloc[0] == pytest.approx(218.36, abs=0.01)
    assert (prices["available_at"] == [at_ny(d) for d in prices["date"]]).all()
    earn = tables["earnings"]
    assert earn["release_at"].min() == pd.Timestamp("2024-02-01 16:30", tz="America/New_York")  # amc
    assert all(q["token"] == [SECRET] for _, q in Replay.seen)  # finnhub-python sent the key as its token


def test_update_store_merges_and_keeps_secret_out(client, tmp_path, store):
    for f in store.path.glob("*"):
        shutil.copy(f, tmp_path)
    before = Store(tmp_path).table("news")
    cfg = FinnhubUpdate(store=str(tmp_path), tickers=("XOM",), start="2024-08-01", end="2024-08-02")
    added = update_store(cfg, client)
    after = Store(tmp_path).table("news")
    assert len(after) == len(before) + added["news"]  # XOM already had these items: only new URLs are added
    assert all(n == 0 for n in update_store(cfg, client).values())  # a second fetch adds nothing
    for f in tmp_path.glob("*"):
        assert SECRET.encode() not in f.read_bytes(), f


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="FINNHUB_API_KEY"):
        make_client()


def test_a_refused_connection_never_prints_the_key(monkeypatch, tmp_path, capsys):
    """`tr1 data finnhub` with no network: one line naming the endpoint, the key nowhere (it rides in ?token=)."""
    from conftest import free_port

    from tr1_env.cli import main

    monkeypatch.setenv("FINNHUB_API_KEY", SECRET)
    monkeypatch.setattr(finnhub.Client, "API_URL", f"http://127.0.0.1:{free_port()}/api/v1")
    with pytest.raises(SystemExit) as exit_:
        main(["data", "finnhub", "--store", str(tmp_path), "--tickers", "AAPL", "--start", "2024-09-01",
              "--end", "2024-09-02"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("tr1: error: Finnhub company_news for AAPL failed: ConnectionError: ") and "token=***" in err
    assert SECRET not in err
