"""`tr1 data import`: a user's files in the documented schema become a store the package reads unchanged; each
defect is one line naming the file, the row and the column, exit 2, and nothing is left behind."""

from pathlib import Path

import pandas as pd
import pytest

from tr1_env.cli import main as tr1
from tr1_env.context.reference import build_context
from tr1_env.data.build import is_store
from tr1_env.data.store import Store
from tr1_env.data.user_import import RULES

TICKERS = ("NVDA", "MSFT", "JPM")  # NVDA splits 10:1 on 2024-06-10
DAYS = ("2024-03-01", "2024-06-07", "2024-06-10", "2024-06-11", "2024-09-03")


def export(store: Store, folder: Path) -> dict[str, Path]:
    """Part of the embedded store in the documented schema: prices and dividends as CSV (``available_at`` derived),
    news as Parquet and statements as CSV (``available_at`` given), splits and profiles as CSV."""
    folder.mkdir()
    pick = {name: store.table(name)[store.table(name)["ticker"].isin(TICKERS)] for name in
            ("prices", "dividends", "splits", "news", "fundamentals", "profiles")}
    market = store.table("news")
    pick["news"] = pd.concat([pick["news"], market[market["ticker"] == "MARKET"]])
    pick["news"] = pick["news"][pick["news"]["available_at"] <= pd.Timestamp("2025-06-30", tz="UTC")]
    files = {}
    for name, frame in pick.items():
        if name in ("prices", "dividends", "splits"):
            frame = frame.drop(columns="available_at")
        if name == "news":  # a headline without a source shows its vendor
            frame = frame.assign(source=frame["source"].where(frame["source"] != "", frame["vendor"]))
        frame = frame.drop(columns="vendor") if name != "fundamentals" and "vendor" in frame else frame
        if name == "news":
            frame = frame.drop(columns="sentiment").assign(sentiment=pick["news"]["sentiment"].fillna(""))
        files[name] = folder / f"{name}.{'parquet' if name == 'news' else 'csv'}"
        if name == "news":
            frame.to_parquet(files[name], index=False)
        else:
            frame.to_csv(files[name], index=False)
    return files


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory):
    return export(store, tmp_path_factory.mktemp("user") / "files")


def _import(files: dict[str, Path], out: Path, **more) -> list[str]:
    argv = ["data", "import", "--out", str(out)]
    for name, path in {**files, **more}.items():
        argv += [f"--{name}", str(path)]
    return argv


def test_a_round_trip_gives_the_same_closes_and_contexts(store, exported, tmp_path):
    """Export part of the embedded store to the documented schema, import it: closes, dividends, the market and
    news sections of contexts (across NVDA's split) and point-in-time statements equal the original's."""
    tr1(_import(exported, tmp_path / "mine"))
    mine = Store(tmp_path / "mine")
    assert mine.tickers == tuple(sorted(TICKERS)) and mine.synthetic is None and not mine.restated
    assert mine.manifest["available_at"]["prices"] == RULES["prices"]
    assert mine.manifest["available_at"]["news"].startswith("given in the file")
    for t in TICKERS:
        pd.testing.assert_series_equal(mine.closes(t), store.closes(t))
        pd.testing.assert_series_equal(mine.dividends(t), store.dividends(t))
        for day in DAYS:
            a = build_context(store, t, day, modalities=("market", "news"))
            b = build_context(mine, t, day, modalities=("market", "news"))
            assert a.text == b.text, (t, day)
    for day in DAYS:  # MSFT's statements are as reported (no split since 2015): the same rows at every instant
        a, b = store.asof("MSFT", day).fundamentals, mine.asof("MSFT", day).fundamentals
        assert len(a) and a["value"].tolist() == b["value"].tolist()
        assert (a["available_at"].to_numpy() == b["available_at"].to_numpy()).all()


def _prices(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "ticker,date,open,high,low,close,volume\nAAA,2024-01-02,10,11,9,10.5,100\nAAA,2024-01-03,10.5,11,10,10.8,120\n"


@pytest.mark.parametrize("name,files,expected", [
    ("missing column", {"prices": "ticker,date,open\nAAA,2024-01-02,10\n"}, ("prices.csv, line 1, column 'close'",)),
    ("unparseable date", {"prices": GOOD + "AAA,2024-13-45,10,11,9,10,5\n"},
     ("prices.csv, line 4, column 'date'", "unparseable date '2024-13-45'")),
    ("duplicate ticker-date", {"prices": GOOD + "AAA,2024-01-03,10,11,9,10,5\n"},
     ("prices.csv, line 4, column 'date'", "duplicate (ticker, date)", "first at line 3")),
    ("non-positive price", {"prices": GOOD + "AAA,2024-01-04,10,11,9,0,5\n"},
     ("prices.csv, line 4, column 'close'", "non-positive")),
    ("available_at before its event", {"prices": "ticker,date,close,available_at\nAAA,2024-01-02,10,2024-01-02 21:00Z\n"
                                                 "AAA,2024-01-03,11,2024-01-03 15:59-05:00\n"},
     ("prices.csv, line 3, column 'available_at'", "before the event it stamps")),
    ("news after the last price", {"prices": GOOD, "news": "ticker,published_at,title\nAAA,2024-01-03 10:00,ok\n"
                                                           "AAA,2024-01-03 16:30,too late\n"},
     ("news.csv, line 3, column 'published_at'", "after the last price of AAA")),
    ("news stamped before publication", {"prices": GOOD, "news": "ticker,published_at,title,available_at\n"
                                                                 "AAA,2024-01-02 10:00,early,2024-01-02 09:00\n"},
     ("news.csv, line 2, column 'available_at'", "before the event")),
    ("statement filed before its period ended",
     {"prices": GOOD,
      "fundamentals": "ticker,period_end,item,value,filed_at\nAAA,2023-12-31,Net Income,5,2023-12-30\n"},
     ("fundamentals.csv, line 2, column 'filed_at'", "before the end of its period")),
    ("news for a ticker without prices", {"prices": GOOD, "news": "ticker,published_at,title\nBBB,2024-01-02,x\n"},
     ("news.csv, line 2, column 'ticker'", "'BBB' has no prices")),
    ("universe ticker without prices",
     {"prices": GOOD, "universe": "ticker,from,to\nAAA,2024-01-02,\nZZZ,2024-01-02,\n"},
     ("universe.csv, line 3, column 'ticker'",)),
])
def test_bad_input_is_one_line_naming_file_row_and_column(tmp_path, capsys, name, files, expected):
    paths = {kind: _prices(tmp_path, text, f"{kind}.csv") for kind, text in files.items()}
    out = tmp_path / "store"
    with pytest.raises(SystemExit) as exit_:
        tr1(_import(paths, out))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tr1: error: ")
    for part in expected:
        assert part in err, (name, err)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no partial folder


def test_parquet_rows_are_counted_from_one(tmp_path, capsys):
    frame = pd.DataFrame({"ticker": ["AAA"] * 3, "date": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]),
                          "close": [10.0, -1.0, 11.0]})
    frame.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(SystemExit):
        tr1(["data", "import", "--prices", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "s")])
    assert "p.parquet, row 2, column 'close': non-positive value -1" in capsys.readouterr().err


def test_derived_stamps_follow_the_store_rules(tmp_path):
    prices = _prices(tmp_path, GOOD)
    news = _prices(tmp_path, "ticker,published_at,title,sentiment\nAAA,2024-01-02,dated only,Positive\n"
                             "AAA,2024-01-02T15:00:00Z,with a time,\n", "news.csv")
    fund = _prices(tmp_path, "ticker,period_end,item,value,freq\nAAA,2023-09-30,Net Income,5,\n"
                             "AAA,2023-12-31,Net Income,7,annual\n", "fund.csv")
    tr1(["data", "import", "--prices", str(prices), "--news", str(news), "--fundamentals", str(fund),
         "--out", str(tmp_path / "s")])
    s = Store(tmp_path / "s")
    assert s.table("prices")["available_at"].tolist() == [pd.Timestamp("2024-01-02 21:00", tz="UTC"),
                                                          pd.Timestamp("2024-01-03 21:00", tz="UTC")]
    # a bare date waits for the next session; a stamped time is used as given (Z = UTC)
    assert s.table("news")["available_at"].tolist() == [pd.Timestamp("2024-01-03 04:59", tz="UTC"),
                                                        pd.Timestamp("2024-01-02 15:00", tz="UTC")]
    assert build_context(s, "AAA", "2024-01-02").news.title.tolist() == ["with a time"]
    # quarterly at period end + 45 days, annual + 60 days, at 23:59 ET
    assert s.table("fundamentals")["available_at"].tolist() == [pd.Timestamp("2023-11-15 04:59", tz="UTC"),
                                                                pd.Timestamp("2024-03-01 04:59", tz="UTC")]


def test_a_users_folder_is_never_replaced_and_a_store_is_replaced_whole(tmp_path, capsys, monkeypatch):
    prices = _prices(tmp_path, GOOD)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit) as exit_:
        tr1(["data", "import", "--prices", str(prices), "--out", str(mine)])
    assert exit_.value.code == 2 and "not a tr1 store" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    out = tmp_path / "store"
    tr1(["data", "import", "--prices", str(prices), "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import tr1_env.data.build as build

    def half_written(folder, tables):  # the disk fills after the first table
        tables["prices"].to_parquet(folder / "prices.parquet")
        raise OSError("No space left on device")

    monkeypatch.setattr(build, "write_tables", half_written)
    bigger = _prices(tmp_path, GOOD + "AAA,2024-01-04,10,11,9,10,5\n", "bigger.csv")
    with pytest.raises(OSError, match="No space"):
        tr1(["data", "import", "--prices", str(bigger), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous store, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigger.csv", "mine", "prices.csv", "store"]
    monkeypatch.undo()
    tr1(["data", "import", "--prices", str(bigger), "--out", str(out)])
    assert is_store(out) and len(Store(out).table("prices")) == 3
    (out / "my_notes.txt").write_text("mine")  # a file tr1 did not write: replacing the store would delete it
    with pytest.raises(SystemExit) as exit_:
        tr1(["data", "import", "--prices", str(prices), "--out", str(out)])
    assert exit_.value.code == 2 and "'my_notes.txt', which tr1 did not write" in capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "mine" and len(Store(out).table("prices")) == 3


def test_a_universe_file_travels_with_the_store(tmp_path):
    prices = _prices(tmp_path, GOOD)
    universe = _prices(tmp_path, "ticker,from,to\nAAA,2024-01-03,\n", "universe.csv")
    tr1(["data", "import", "--prices", str(prices), "--universe", str(universe), "--out", str(tmp_path / "s")])
    assert (tmp_path / "s" / "universe.csv").read_text() == universe.read_text()
    assert Store(tmp_path / "s").manifest["universe"] == "universe.csv"
