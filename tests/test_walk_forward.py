"""The walk-forward protocol end to end: windows replayed apart, one portfolio series per agent, verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.run import Observations, RunConfig, run
from tr1_env.context.modalities.market import indicators
from tr1_env.context.reference import build_context
from tr1_env.data.store import Store
from tr1_env.execution import Execution

CFG = dict(start="2024-04-01", end="2024-07-31", walk_forward=("monthly",),
           tickers=("NVDA", "SPY", "XOM", "AAPL", "JPM"),
           bootstrap=100, tearsheets=False, execution=Execution(cost_bps=0.0))


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    out = tmp_path_factory.mktemp("wf")
    run(RunConfig.of(agents=("buy_and_hold", "always_hold", "ma_crossover", "random"), out=str(out), **CFG))
    return out


def test_windows_are_replayed_apart_and_never_overlap(walked):
    windows = pd.read_csv(walked / "windows.csv")
    spans = windows[["window_start", "window_end"]].drop_duplicates().sort_values("window_start").to_numpy()
    assert [tuple(s) for s in spans] == [("2024-04-01", "2024-04-30"), ("2024-05-01", "2024-05-31"),
                                         ("2024-06-01", "2024-06-30"), ("2024-07-01", "2024-07-31")]
    assert all(pd.Timestamp(a[1]) < pd.Timestamp(b[0]) for a, b in zip(spans, spans[1:]))
    assert len(windows) == 4 * 4 * len(CFG["tickers"])  # agents x windows x tickers
    for i, (start, end) in enumerate(spans):  # the first window starts flat; the others earn their first session
        returns = pd.read_csv(walked / "windows" / f"{start}_{end}" / "returns" / "ma_crossover__NVDA.csv",
                              parse_dates=["date"])
        first = Store().trading_days("NVDA", start, end)[1 if i == 0 else 0]
        assert returns["date"].min() == first and returns["date"].max() <= pd.Timestamp(end)
    board = pd.read_csv(walked / "leaderboard.csv").set_index("agent")
    assert (board["n_windows"] == 4).all() and (board["n_tickers"] == len(CFG["tickers"])).all()
    assert set(board["verdict"]) <= {"benchmark", "beats", "indistinguishable from", "worse than", "n/a (no variance)"}
    assert board.loc["always_hold", "cr"] == 0.0


def test_buy_and_hold_portfolio_is_the_equal_weight_mean_of_close_to_close_returns(walked):
    """Recomputed from the closes alone: each ticker's close-to-close returns from the first window's first session
    to the last window's last, no session lost at a boundary (the books are continuous), averaged over tickers (no
    costs here); the leaderboard's CR compounds exactly that."""
    store = Store()
    days = store.trading_days("SPY", CFG["start"], CFG["end"])
    per = np.array([store.closes(t).reindex(days).to_numpy() for t in CFG["tickers"]])
    expected = float(np.prod(1 + (per[:, 1:] / per[:, :-1] - 1).mean(axis=0)) - 1)
    board = pd.read_csv(walked / "leaderboard.csv").set_index("agent")
    assert board.loc["buy_and_hold", "cr"] == pytest.approx(expected, rel=1e-5)  # the CSV keeps 6 digits


def test_a_rule_agent_walked_forward_books_as_in_one_window(walked, tmp_path):
    """ma_crossover decides from each day's observation alone, so refitting changes nothing: its continuous
    walk-forward book is its single-window book, except where the single window decides on a window's last close
    (a walk-forward window takes no decision there and carries its last position into the next)."""
    run(RunConfig.of(agents=("ma_crossover",), out=str(tmp_path), **{**CFG, "walk_forward": ()}))
    one = pd.read_csv(tmp_path / "returns" / "ma_crossover__NVDA.csv", index_col="date", parse_dates=True)
    walked_books = pd.concat([pd.read_csv(path, index_col="date", parse_dates=True) for path in
                              sorted((walked / "windows").glob("*/returns/ma_crossover__NVDA.csv"))])
    assert list(walked_books.index) == list(one.index)
    decided_at_boundary = one["decision_date"].isin(["2024-04-30", "2024-05-31", "2024-06-28"])
    same = ~decided_at_boundary & ~decided_at_boundary.shift(1, fill_value=False)  # and the trade out of it
    assert same.sum() > 70
    np.testing.assert_allclose(walked_books.loc[same, "return"], one.loc[same, "return"], rtol=0, atol=1e-12)


def test_numeric_observations_match_the_full_context(store):
    """The walk-forward's shared indicator frame gives the rule baselines the same recent bars and headlines as
    the per-day context (NVDA's June 2024 split inside the span)."""
    obs = Observations(store)
    for day in store.trading_days("NVDA", "2024-06-05", "2024-06-12"):
        full = build_context(store, "NVDA", day).observation()
        fast = obs.get("NVDA", day, 0, 0.0)
        pd.testing.assert_frame_equal(full.history.tail(60).reset_index(drop=True),
                                      fast.history.tail(60).reset_index(drop=True), rtol=1e-5, atol=1e-5,
                                      check_dtype=False, check_frame_type=False)
        pd.testing.assert_frame_equal(full.news.reset_index(drop=True), fast.news.reset_index(drop=True))


def test_every_window_of_a_store_shares_its_indicator_frames(store, monkeypatch):
    """Each window's Observations reads the indicator frames the store's first one computed (they span its whole
    history); another store computes its own."""
    from benchmarks import replay

    calls = []
    monkeypatch.setattr(replay, "indicators", lambda prices: calls.append(1) or indicators(prices))
    day, later = store.trading_days("AAPL", "2024-03-01", "2024-09-30")[[0, -1]]
    first = Observations(store).get("AAPL", day, 0, 0.0)
    again = Observations(store).get("AAPL", later, 0, 0.0)
    assert len(calls) == 1 and first.date == day and again.date == later
    assert again.history.iloc[:len(first.history)].equals(first.history)
    Observations(Store(store.path)).get("AAPL", day, 0, 0.0)
    assert len(calls) == 2


def test_leaderboard_columns_come_from_one_table(walked, monkeypatch):
    """leaderboard.csv is COLUMNS' names in order; the page's and the markdown's header and cells are the rows with a
    header, an optional one shown only when some agent has a value, the verdict last; a row added to the table
    reaches both."""
    from benchmarks import leaderboard
    from tr1_env.evaluation.signals import SIGNAL_COLUMNS

    board = pd.read_csv(walked / "leaderboard.csv")
    assert list(board.columns) == [c.name for c in leaderboard.COLUMNS]
    assert [c for c in board.columns if c in SIGNAL_COLUMNS] == list(SIGNAL_COLUMNS)  # no signal test left out
    header, rows = leaderboard.display_table(board, 95)
    assert header[-1] == "verdict vs buy-and-hold" and "decision days before cutoff" not in header  # no LLM
    assert [r[-1] for r in rows] == list(board["verdict"])
    flagged = board.assign(pre_cutoff_share=[0.25] + [np.nan] * (len(board) - 1))
    header, rows = leaderboard.display_table(flagged, 95)
    assert header[-2:] == ["decision days before cutoff", "verdict vs buy-and-hold"] and rows[0][-2] == "25%"
    calls = leaderboard.Column("calls", "calls", lambda r: f"{r.n_calls:.0f} calls")
    monkeypatch.setattr(leaderboard, "COLUMNS", (*leaderboard.COLUMNS[:2], calls, *leaderboard.COLUMNS[2:]))
    md = leaderboard.markdown(board.assign(calls=0), RunConfig.of(alpha=0.1))
    assert md.startswith("| agent | calls | CR | Sharpe [90% CI] |")
    assert f"| {board['agent'][1]} | {board['n_calls'][1]:.0f} calls |" in md


def test_samples_are_seeded_rows_with_their_spread_reported():
    from benchmarks.leaderboard import sample_spread
    from benchmarks.run import resolve_agents

    specs = resolve_agents(RunConfig.of(agents=(), model=("gpt-4.1",), samples=3, base_url="http://127.0.0.1:9/v1"))
    assert [s.label for s in specs] == ["gpt-4.1 #0", "gpt-4.1 #1", "gpt-4.1 #2"]
    assert [s.settings["seed"] for s in specs] == [0, 1, 2] and {s.settings["temperature"] for s in specs} == {0.7}
    assert all(s.every == 1 for s in specs)  # LLMs decide every session by default
    board = pd.DataFrame({"agent": ["buy_and_hold", "gpt-4.1 #0", "gpt-4.1 #1", "gpt-4.1 #2"],
                          "sharpe": [1.0, 0.5, 1.0, 1.5]})
    assert sample_spread(board) == ["gpt-4.1: Sharpe over 3 samples mean 1.00, sd 0.50, range [0.50, 1.50] "
                                    "(sampling spread; each row's CI is market noise)."]
    (smol,) = resolve_agents(RunConfig.of(agents=("smollm2",)))
    assert smol.label == "smollm2 (every 62 sessions)" and smol.every == 62


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_page_and_markdown_read_back_as_the_csv(walked):
    """Every table cell of leaderboard.html and leaderboard.md against leaderboard.csv: order, CI bounds, p-values,
    signal columns and verdicts (a number the page computed or dropped on its own would show here)."""
    import html as html_lib
    import re

    board = pd.read_csv(walked / "leaderboard.csv")
    page = (walked / "leaderboard.html").read_text()
    assert "books are continuous across windows" in page and "belongs to no one" not in page  # the notes say how
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    page_rows = [[html_lib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)][:-1]  # - tearsheet
                 for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
    md_lines = [ln for ln in (walked / "leaderboard.md").read_text().splitlines() if ln.startswith("|")]
    header, md_rows = _cells(md_lines[0]), [_cells(ln) for ln in md_lines[2:]]
    assert [r[0] for r in page_rows] == [r[0] for r in md_rows] == list(board["agent"])  # ranked alike

    def num(text: str) -> float:
        return float("nan") if text == "n/a" else float(text.rstrip("%")) / (100 if text.endswith("%") else 1)

    for cells in (page_rows, md_rows):
        for row, (_, r) in zip(cells, board.iterrows()):
            got = dict(zip(header, row))
            assert got["verdict vs buy-and-hold"] == r["verdict"]
            sharpe = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", got["Sharpe [95% CI]"]).groups()
            ic = re.fullmatch(r"(\S+) \[(\S+), (\S+)\] \((\S+)\)", got["IC [95% CI] (p)"]).groups()
            excess = re.fullmatch(r"(\S+) \((\S+)\)", got["excess Sharpe (p)"]).groups()
            hit = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", got["hit rate [95% CI]"]).groups()
            pairs = [(sharpe, ["sharpe", "sharpe_lo", "sharpe_hi"], 0.005),
                     (ic, ["ic", "ic_lo", "ic_hi", "ic_p"], 0.0005),
                     (excess, ["excess_sharpe_vs_buy_and_hold", "excess_sharpe_p"], 0.005),
                     (hit, ["hit_rate", "hit_rate_lo", "hit_rate_hi"], 0.0005),
                     ((got["SPA p (mean return)"],), ["spa_p"], 0.0005), ((got["CR"],), ["cr"], 0.0005)]
            for texts, names, tol in pairs:
                for text, name in zip(texts, names):
                    expected = float(r[name])
                    same = (np.isnan(num(text)) and np.isnan(expected)) or num(text) == pytest.approx(expected, abs=tol)
                    assert same, (r["agent"], name, text, expected)
            assert got["in MCS (95%)"] == {True: "yes", False: "no"}.get(r["in_mcs"], "n/a")
    signal = board.set_index("agent")
    assert np.isfinite(signal.loc["ma_crossover", ["ic", "ic_lo", "ic_hi", "hit_rate", "accuracy"]].astype(float)).all()
    assert signal.loc["random", "n_calls"] == signal.loc["ma_crossover", "n_calls"] > 0


SPANS = dict(CFG, start="2024-06-01", end="2024-07-31", history_start="2024-04-01", tickers=("NVDA", "XOM"))


def test_agents_that_read_prices_alone_replay_their_own_longer_span(tmp_path):
    """--history-start: ma_crossover (prices alone) replays from April, news_sentiment (headlines) from June; each
    is compared with buy-and-hold over its own days only, and the leaderboard says which days each row covers."""
    from benchmarks.leaderboard import portfolios
    from tr1_env.evaluation.stats import compare

    run(RunConfig.of(agents=("buy_and_hold", "ma_crossover", "news_sentiment"), out=str(tmp_path), **SPANS))
    windows = pd.read_csv(tmp_path / "windows.csv")
    starts = windows.groupby("agent")["window_start"].min()
    assert starts.to_dict() == {"buy_and_hold": "2024-04-01", "ma_crossover": "2024-04-01",
                                "news_sentiment": "2024-06-01"}
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("agent")
    longest = "2024-04-02..2024-07-31"
    assert board["span"].to_dict() == {"buy_and_hold": longest, "ma_crossover": longest,
                                       "news_sentiment": "2024-06-04..2024-07-31"}
    assert board.loc["news_sentiment", "n_days"] < board.loc["ma_crossover", "n_days"]
    # news_sentiment's verdict is the comparison over its days alone, not over buy-and-hold's longer span
    books = {w: {a: {t: (pd.read_csv(p, index_col="date", parse_dates=True), None)
                     for t in SPANS["tickers"] for p in [tmp_path / "windows" / w / "returns" / f"{a}__{t}.csv"]}
                 for a in ("buy_and_hold", "news_sentiment")}
             for w in ("2024-06-01_2024-06-30", "2024-07-01_2024-07-31")}
    stats = RunConfig.of(**SPANS).statistics
    own = compare(portfolios(books).dropna(), "buy_and_hold", stats.alpha, 100, stats.block, 0, stats.risk_free)
    assert board.loc["news_sentiment", "excess_sharpe_vs_buy_and_hold"] == pytest.approx(
        own.loc["news_sentiment", "excess_sharpe"], rel=1e-5)
    assert "| span |" in (tmp_path / "leaderboard.md").read_text()


@pytest.mark.parametrize("settings, message", [
    (dict(walk_forward=()), "needs a named --walk-forward scheme"),
    (dict(history_start="2024-07-01"), "must be before --start"),
    (dict(start="2024-06-15"), "must open a window of the --history-start span"),
])
def test_history_start_refuses_spans_it_cannot_nest(tmp_path, capsys, settings, message):
    from benchmarks.run import main

    cfg = {**SPANS, **settings}
    argv = ["--agents", "ma_crossover", "--tickers", "NVDA", "--start", cfg["start"], "--end", cfg["end"],
            "--history-start", cfg["history_start"], "--out", str(tmp_path / "out"),
            *(["--walk-forward", *cfg["walk_forward"]] if cfg["walk_forward"] else [])]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
