"""One Execution value: fills as small classes, costs, and no fill name compared anywhere else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from tr1_env.core.actions import Action
from tr1_env.envs.trading_env import TradingEnv
from tr1_env.evaluation.backtest import backtest
from tr1_env.execution import FILLS, Execution, Fill, NextOpenFill

ROOT = Path(__file__).resolve().parents[1]
DAYS = pd.bdate_range("2024-01-01", periods=4)
CLOSES = pd.Series([100.0, 110.0, 99.0, 105.0], index=DAYS)
OPENS = pd.Series([100.0, 104.0, 108.0, 100.0], index=DAYS)
#: A fill name in quotes next to ``==``/``!=``, or a fill's name as a literal: code that decides by the fill's name.
_BY_NAME = re.compile(r"""[!=]=\s*["'](?:close|next-open)["']|["'](?:close|next-open)["']\s*[!=]=|["']next-open["']""")


def test_no_fill_name_is_compared_outside_the_execution_package():
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for package in ("tr1_env", "tr1_agent", "baselines", "benchmarks", "examples")
                 for path in sorted((ROOT / package).rglob("*.py")) if "execution" not in path.relative_to(ROOT).parts
                 for n, line in enumerate(path.read_text().splitlines(), 1) if _BY_NAME.search(line)]
    assert offenders == []


def test_the_registry_names_each_fill_once_default_first():
    assert list(FILLS) == ["close", "next-open"] and FILLS["close"] is Fill and FILLS["next-open"] is NextOpenFill
    assert Execution().model.__class__ is Fill
    with pytest.raises(ValueError, match="fill must be one of"):
        Execution(fill="vwap")
    with pytest.raises(ValueError, match="--cost-bps must be >= 0"):
        Execution(cost_bps=-1)


def test_tag_keeps_the_cache_keys_of_before():
    """SB3 policies trained before the value existed are found again: ``10bps``, ``5bps_next-open``."""
    assert Execution().tag() == "10bps" and Execution("next-open", 5.0).tag() == "5bps_next-open"


@pytest.mark.parametrize("settings, expected", [
    ({"cost_bps": 25.0, "window": 10}, Execution(cost_bps=25.0)),  # a checkpoint from before fills were settings
    ({"cost_bps": 5.0, "fill": "next-open"}, Execution("next-open", 5.0)),  # flat, as checkpoints kept it
    ({"execution": {"fill": "next-open", "cost_bps": 1.0}}, Execution("next-open", 1.0)),  # nested, as now
])
def test_saved_settings_of_every_age_read_back(settings, expected):
    assert Execution.from_settings(settings) == expected


class NextCloseFill(Fill):
    """A fill a user adds: the order executes at the next session's close (the old weight earns that session)."""

    name: ClassVar[str] = "next-close"
    description: ClassVar[str] = "the order fills at the next close"
    overnight: ClassVar[bool] = True

    def price(self, close, next_open):
        return CLOSES.reindex(close.index).shift(-1, fill_value=CLOSES.iloc[-1]).to_numpy(float)


def test_a_new_fill_is_one_class_and_its_registry_entry(monkeypatch, store):
    """Nothing but the subclass and FILLS: the replay and the Trading env book it."""
    monkeypatch.setitem(FILLS, NextCloseFill.name, NextCloseFill)
    execution = Execution(NextCloseFill.name, 0.0)
    frame = backtest(pd.Series([Action.STRONG_BUY, Action.STRONG_SELL], index=DAYS[:2]), CLOSES, DAYS, execution)
    # flat through d_2 (the buy fills at d_2's close), long through d_3 (the sell fills at its close), then short
    np.testing.assert_allclose(frame["return"], [0.0, 99 / 110 - 1, -(105 / 99 - 1)], atol=1e-12)
    assert execution.describe().startswith(NextCloseFill.description)
    env = TradingEnv(store, "AAPL", "2024-06-03", "2024-06-14", obs_mode="text", execution=execution)
    prompt, _ = env.reset()
    assert NextCloseFill.description in prompt


def test_an_ex_date_dividend_goes_to_the_weight_held_over_the_open():
    """Paid at the ex-date's open: to the old weight when the order waits for that open, to the new one when it
    filled at the decision close."""
    dividend = pd.Series([2.0], index=DAYS[2:3])
    flip = pd.Series([Action.STRONG_BUY, Action.HOLD], index=DAYS[:2])  # long, then flat from d_2's decision
    at_open = backtest(flip, CLOSES, DAYS, Execution("next-open", 0.0), dividends=dividend, opens=OPENS)
    # d_3: long over the night, the session's total return (99 + 2) / 110 less the open-to-close 99 / 108 the flat
    # weight forgoes: the cash stays with the long
    assert at_open["return"].iloc[1] == pytest.approx(((99 + 2) / 110) / (99 / 108) - 1)
    held = backtest(flip.iloc[:1], CLOSES, DAYS, Execution(cost_bps=0.0), dividends=dividend)
    assert held["return"].iloc[1] == pytest.approx((99 + 2) / 110 - 1)  # long from the close: the whole session
    at_close = backtest(flip, CLOSES, DAYS, Execution(cost_bps=0.0), dividends=dividend)
    assert at_close["return"].iloc[1] == 0.0  # flat from d_2's close: no dividend
