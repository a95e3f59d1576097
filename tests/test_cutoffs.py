"""Model cutoffs: the shipped table, matching, inheritance by local checkpoints, the flag, post-cutoff windows."""

import json

import pandas as pd
import pytest

from tr1_env.contamination.cutoffs import (
    Cutoff,
    load_cutoffs,
    model_cutoff,
    parse_overrides,
    post_cutoff_window,
    pre_cutoff_share,
    windows_after,
)


@pytest.mark.parametrize("spec, cutoff, basis", [
    ("gpt-4.1", "2024-06-01", "published cutoff"),
    ("gpt-4.1-nano-2025-04-14", "2024-06-01", "published cutoff"),
    ("o4-mini", "2024-06-01", "published cutoff"),
    ("o3-mini", "2023-10-01", "published cutoff"),
    ("hf:meta-llama/Llama-3.3-70B-Instruct", "2023-12-31", "published cutoff"),
    ("vllm:Qwen/Qwen3-4B", "2025-04-29", "release date (upper bound)"),
    ("Qwen/Qwen3-235B-A22B", "2025-04-29", "release date (upper bound)"),
    ("deepseek-ai/DeepSeek-R1", "2025-01-20", "release date (upper bound)"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "2025-01-20", "release date (upper bound)"),
    ("deepseek-ai/DeepSeek-V3", "2024-12-26", "release date (upper bound)"),
    ("smollm2", "2024-11-01", "release date (upper bound)"),
    ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", "2024-11-01", "release date (upper bound)"),
])
def test_the_table_covers_the_models_the_readme_and_paper_name(spec, cutoff, basis):
    found = model_cutoff(spec)
    assert (found.date, found.basis) == (pd.Timestamp(cutoff), basis)
    assert found.flagged == (basis != "published cutoff")
    assert found.source


def test_unknown_models_and_overrides():
    assert model_cutoff("my-model").date is None and model_cutoff("my-model").flagged
    assert model_cutoff("Qwen/Qwen3-4B-Instruct-2507").date is None  # listed as unknown, not as Qwen3's release
    set_ = model_cutoff("my-model", "2025-02-01")
    assert set_.date == pd.Timestamp("2025-02-01") and set_.basis == "--cutoff" and not set_.flagged
    assert parse_overrides(["gpt-4.1=2024-05-01", "2025-01-31"]) == ({"gpt-4.1": "2024-05-01"}, "2025-01-31")
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        parse_overrides(["June 2024"])


def test_local_checkpoints_inherit_their_base_models_cutoff(tmp_path):
    merged, adapter = tmp_path / "sft" / "merged", tmp_path / "sft" / "adapter"
    merged.mkdir(parents=True), adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen3-4B"}))
    assert model_cutoff(f"hf:{merged}").date == pd.Timestamp("2025-04-29")
    assert "inherited from base model Qwen/Qwen3-4B" in model_cutoff(f"hf:{merged}").source
    flag = tmp_path / "flag"
    flag.mkdir()
    (flag / "flag_trader.json").write_text(json.dumps({"model": "smollm2"}))
    assert model_cutoff(f"flag:{flag}").date == pd.Timestamp("2024-11-01")
    card = tmp_path / "card"
    card.mkdir()
    (card / "README.md").write_text("---\nbase_model:\n- meta-llama/Llama-3.3-70B-Instruct\n---\n# model\n")
    assert model_cutoff(f"hf:{card}").date == pd.Timestamp("2023-12-31")
    assert model_cutoff(f"hf:{card}", "2024-02-02").date == pd.Timestamp("2024-02-02")  # unless told


def test_contamination_flag_is_the_share_of_decision_days_up_to_the_cutoff():
    days = pd.bdate_range("2024-05-27", "2024-06-07")  # 10 sessions, 5 of them in May, June 1 is a Saturday
    assert pre_cutoff_share(days, pd.Timestamp("2024-06-01")) == 0.5
    assert pre_cutoff_share(days, pd.Timestamp("2024-06-03")) == 0.6
    assert pre_cutoff_share(days, None) != pre_cutoff_share(days, None)  # NaN when unknown


def test_post_cutoff_window_or_refusal_naming_the_data_end():
    gpt = Cutoff("gpt-4.1", pd.Timestamp("2024-06-01"), "published cutoff", "x")
    assert post_cutoff_window("2024-06-01", "2024-08-31", gpt, "2026-05-29") == (
        pd.Timestamp("2024-06-02"), pd.Timestamp("2024-09-01"))  # same 91-day length, after the cutoff
    late = Cutoff("future", pd.Timestamp("2026-06-30"), "--cutoff", "x")
    with pytest.raises(ValueError, match="the store ends 2026-05-29"):
        post_cutoff_window("2024-06-01", "2024-08-31", late, "2026-05-29")
    windows = [("2024-04-01", "2024-06-30", "2024-03-31"), ("2024-07-01", "2024-09-30", "2024-06-30")]
    assert windows_after(windows, gpt) == windows[1:]


def test_table_rows_are_checked(tmp_path):
    assert len(load_cutoffs()) >= 10
    bad = tmp_path / "cutoffs.csv"
    bad.write_text("pattern,training_cutoff,release_date,source\nx*,June 2024,,vendor\n")
    with pytest.raises(ValueError, match=r"row 2 \(x\*\): training_cutoff 'June 2024' is not YYYY-MM-DD"):
        load_cutoffs(bad)
