import pandas as pd
import pytest
from datasets import Dataset

from tr1_agent.configs import DatasetConfig
from tr1_agent.datasets import build_prompts, check_windows, day_keys, load, save, split_days, with_completions
from tr1_env.context.prompt import SYSTEM_PROMPT
from tr1_env.core.actions import Action
from tr1_env.scoring.labels import make_labels

CFG = DatasetConfig(tickers=("AAPL", "NVDA"), start="2024-01-01", end="2024-05-31", max_days=3, variants=3,
                    max_chars=1500)


@pytest.fixture(scope="module")
def rows(store):
    return build_prompts(CFG, store)


def test_rows_are_conversational_labelled_ticker_days(rows):
    assert set(rows.column_names) >= {"prompt", "label", "context", "ticker", "date", "modalities", "missing",
                                      "variant"}
    assert len(day_keys(rows)) == 6
    for row in rows:
        system, user = row["prompt"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert user["role"] == "user" and row["context"] in user["content"] and row["ticker"] in user["content"]
        assert Action[row["label"]] in Action
        assert "2024-01-01" <= row["date"] <= "2024-05-31"
        assert len(row["context"]) <= CFG.max_chars + 300  # section headers come on top of the budget
        assert set(row["missing"]) <= set(row["modalities"])


def test_variants_are_distinct_modality_subsets(rows):
    by_day = {}
    for row in rows:
        by_day.setdefault((row["ticker"], row["date"]), []).append(tuple(row["modalities"]))
    assert all(len(v) == len(set(v)) == CFG.variants for v in by_day.values())
    assert len({m for v in by_day.values() for m in v}) > 1  # subsets are drawn, not fixed


def test_labels_use_the_training_window_only(store, rows):
    """Thresholds fitted on the window, no price after its end: a store cut at the end gives the same rows."""
    assert build_prompts(CFG, store.cut(CFG.end)).to_list() == rows.to_list()
    close = store.closes("AAPL").loc[: pd.Timestamp(CFG.end)]
    expected = make_labels(close, CFG.start, CFG.end, CFG.start, CFG.end)["label"]
    for row in rows.filter(lambda r: r["ticker"] == "AAPL"):
        assert Action[row["label"]] == expected.loc[pd.Timestamp(row["date"])]
    last = store.trading_days("AAPL", CFG.start, CFG.end)[-15]
    assert all(pd.Timestamp(d) < last for d in rows["date"])  # the one-week target must lie inside the window


def test_build_is_deterministic_and_seeded(store, rows):
    small = DatasetConfig(tickers=("AAPL",), max_days=2, variants=2, max_chars=500)
    assert build_prompts(small, store).to_list() == build_prompts(small, store).to_list()
    other = build_prompts(DatasetConfig(tickers=("AAPL",), max_days=2, variants=2, max_chars=500, seed=1), store)
    assert other.to_list() != build_prompts(small, store).to_list()


@pytest.mark.parametrize("start,end", [("2024-05-01", "2024-06-15"), ("2024-07-01", "2024-07-31"),
                                       ("2024-01-01", "2024-12-31")])
def test_overlap_with_the_evaluation_window_is_refused(start, end):
    with pytest.raises(ValueError, match=rf"training window {start}\.\.{end} overlaps the evaluation window "
                                         r"2024-06-01\.\.2024-08-31"):
        check_windows(DatasetConfig(start=start, end=end))
    with pytest.raises(ValueError, match="overlaps"):
        build_prompts(DatasetConfig(start=start, end=end))


def test_windows_beside_the_evaluation_window_pass():
    check_windows(DatasetConfig(start="2024-01-01", end="2024-05-31"))
    check_windows(DatasetConfig(start="2024-09-01", end="2025-05-31"))
    with pytest.raises(ValueError, match="empty"):
        check_windows(DatasetConfig(start="2024-05-31", end="2024-01-01"))


def test_split_holds_out_whole_days(rows):
    train, held = split_days(rows, 2, seed=0)
    assert len(day_keys(held)) == 2 and not day_keys(train) & day_keys(held)
    assert len(train) + len(held) <= len(rows)
    with pytest.raises(ValueError):
        split_days(rows, len(day_keys(rows)))


@pytest.mark.parametrize("seed", range(3))
def test_split_is_purged_with_a_15_session_embargo(store, seed):
    """Per ticker one contiguous block; no training day within 15 real NYSE sessions of it."""
    sessions = list(store.trading_days("AAPL", "2024-01-01", "2024-05-31").strftime("%Y-%m-%d"))
    grid = Dataset.from_list([{"ticker": t, "date": d, "variant": v} for t in ("A", "B") for d in sessions
                              for v in range(2)])
    train, held = split_days(grid, 6, seed=seed)
    assert len(held) == 12  # both variants of 3 days per ticker
    for ticker in ("A", "B"):
        block = sorted(sessions.index(d) for t, d in day_keys(held) if t == ticker)
        assert block == list(range(block[0], block[0] + 3))  # contiguous sessions
        trained = {sessions.index(d) for t, d in day_keys(train) if t == ticker}
        gap = [i for i in trained if block[0] - 15 <= i <= block[-1] + 15]
        assert gap == []
        beyond = {block[0] - 16, block[-1] + 16} & set(range(len(sessions)))
        assert beyond <= trained  # the embargo is 15 sessions, not more (no holiday in 2024-01..05 but Good Friday)


def test_sft_rows_round_trip(rows, tmp_path):
    sft = with_completions(rows, [f"thesis {i}" for i in range(len(rows))])
    assert sft[0]["completion"] == [{"role": "assistant", "content": "thesis 0"}]
    path = save(sft, tmp_path / "sft")
    assert load(path).to_list() == sft.to_list()
    assert load(path.with_suffix(".jsonl")).to_list() == sft.to_list()
    with pytest.raises(ValueError):
        with_completions(rows, ["one"])
