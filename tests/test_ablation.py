"""The ablation's statistics (examples/ablation.py): macro-F1, the class-prior baselines and the paired CIs."""

import numpy as np
import pytest

from examples import ablation


def test_macro_f1_by_hand():
    truth, predicted = ["HOLD", "HOLD", "BUY", "SELL"], ["HOLD", "BUY", "BUY", "HOLD"]
    # HOLD: tp 1, fp 1, fn 1 -> 0.5; BUY: tp 1, fp 1, fn 0 -> 2/3; SELL: tp 0 -> 0
    assert ablation.macro_f1(truth, predicted) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert ablation.macro_f1(truth, truth) == 1.0


def test_prior_baselines():
    out = ablation.prior_baselines(["HOLD"] * 3 + ["BUY"], ["HOLD", "BUY", "HOLD", "SELL"], draws=4000)
    assert out["majority"] == {"class": "HOLD", "accuracy": 0.5, "macro_f1": pytest.approx((2 / 3) / 3)}
    assert out["prior_sampled"]["accuracy"] == pytest.approx(0.5 * 0.75 + 0.25 * 0.25, abs=0.02)


def _result(structure, hits):
    return {"days": [{"ticker": "AAPL", "date": f"2024-02-{i + 1:02d}", "label": "HOLD", "structure": s,
                      "evidence": 0.0, "decision": 0.0, "fabricated": False, "parse_failed": False,
                      "predicted": "HOLD" if h else "BUY", "thesis": ""}
                     for i, (s, h) in enumerate(zip(structure, hits))]}


def test_paired_difference_to_zero_shot():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.1, 16)
    results = {"zero_shot": _result(base, [0] * 16), "sft": _result(base + 0.3, [1] * 8 + [0] * 8),
               "noise": _result(base + rng.normal(0, 0.05, 16), [0] * 16), "skipped": {"n": 0}}
    out = ablation.compare_to_zero_shot(results, reps=500)
    assert set(out) == {"zero_shot", "sft", "noise"} and "diff_ci" not in out["zero_shot"]["structure"]
    assert out["sft"]["structure"]["diff_ci"] == pytest.approx((0.3, 0.3, 0.3))  # constant shift: no spread
    mean, lo, hi = out["noise"]["structure"]["diff_ci"]
    assert lo < mean < hi and lo < 0.05 and hi > -0.05
    mean, lo, hi = out["sft"]["accuracy"]["diff_ci"]
    assert mean == 0.5 and 0 < lo < 0.5 < hi <= 1
