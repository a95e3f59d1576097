"""Trading-R1 as a one-step environment: read a ticker-day prompt, write a thesis, get its reward.

Each episode is one labelled ticker-day. ``reset`` draws the day and a modality subset and returns
the prompt; ``step(completion)`` scores the thesis with :func:`tr1_env.scoring.rewards.score` against the
exact context text that was shown, so a quote counts only if the model really saw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import pandas as pd

from tr1_env.context.anonymize import Pseudonyms, anonymize, level_of
from tr1_env.context.config import ContextConfig
from tr1_env.context.record import MODALITIES, Context, sample_modalities
from tr1_env.context.reference import build_context
from tr1_env.core.actions import Action
from tr1_env.data.schema import canonical_ticker
from tr1_env.data.store import Store
from tr1_env.envs.spaces import UnicodeText
from tr1_env.scoring.labels import HELDOUT_WINDOW, LabelConfig, check_training_window, make_labels
from tr1_env.scoring.rewards import RewardConfig, score


class ThesisEnv(gym.Env[str, str]):
    """Prompt in, thesis out, composite reward back; ``terminated`` after every step.

    Episodes sample the training window ``[start, end]`` (default 2024-01-01..2024-05-31), which
    may not overlap the held-out replay window ``heldout`` (default
    :data:`~tr1_env.scoring.labels.HELDOUT_WINDOW`; ``None`` lifts the guard): the same guard as the training
    datasets. Labels read no price after ``end`` and are fitted per ticker on ``[fit_start, fit_end]``
    (default: the window) once, here, and frozen. ``stage`` picks a curriculum stage's reward
    weights; ``reward_config`` sets them fully (not both). ``anonymize=True`` (strict) or a level of
    :data:`tr1_env.context.anonymize.LEVELS` serves :func:`tr1_env.context.anonymize.anonymize`'d prompts (fresh
    pseudonyms per episode, in ``info["pseudonyms"]``) and checks quotes against the anonymized text.
    """

    metadata = {"render_modes": []}

    def __init__(self, store: Store | None = None, tickers: Sequence[str] | None = None,
                 start="2024-01-01", end="2024-05-31", heldout: tuple[str, str] | None = HELDOUT_WINDOW,
                 fit_start=None, fit_end=None,
                 stage: str | None = None, reward_config: RewardConfig | None = None,
                 context_config: ContextConfig | None = None, label_config: LabelConfig | None = None,
                 random_modalities: bool = True, max_length: int = 100_000,
                 anonymize: bool | str | None = False):
        if stage is not None and reward_config is not None:
            raise ValueError("pass either stage or reward_config, not both")
        check_training_window(start, end, heldout)
        self.store = store if store is not None else Store()
        self.reward_config = RewardConfig.for_stage(stage) if stage is not None else reward_config or RewardConfig()
        self.context_config = context_config or ContextConfig()
        self.random_modalities = random_modalities
        self.anonymize = level_of(anonymize)
        label_config = label_config or LabelConfig()
        fit_start = start if fit_start is None else fit_start
        fit_end = end if fit_end is None else fit_end
        frames = []
        for ticker in map(canonical_ticker, tickers or self.store.tickers):
            close = self.store.closes(ticker).loc[: pd.Timestamp(end)]
            labels = make_labels(close, fit_start, fit_end, start, end, label_config)["label"]
            labels = labels.dropna()
            frames.append(pd.DataFrame({"ticker": ticker, "date": labels.index, "label": labels.to_numpy("int8")}))
        #: Every ticker-day an episode can start from, with its frozen label (an Action code).
        self.samples = pd.concat(frames, ignore_index=True)
        if self.samples.empty:
            raise ValueError(f"no labelled ticker-day between {start} and {end}")
        self.observation_space = UnicodeText(max_length, min_length=1)
        self.action_space = UnicodeText(max_length)
        self.context: Context | None = None
        self.label: Action | None = None
        self._info: dict[str, Any] = {}
        self._pending = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Draw a labelled ticker-day uniformly; ``options`` may fix ``ticker``, ``date`` and ``modalities``."""
        super().reset(seed=seed)
        options = options or {}
        pool = self.samples
        if "ticker" in options:
            pool = pool[pool["ticker"] == canonical_ticker(options["ticker"])]
        if "date" in options:
            pool = pool[pool["date"] == pd.Timestamp(options["date"]).normalize()]
        if pool.empty:
            raise ValueError(f"no labelled ticker-day matches {options}")
        row = pool.iloc[int(self.np_random.integers(len(pool)))]
        modalities = options.get("modalities")
        if modalities is None:
            modalities = (sample_modalities(self.np_random, self.context_config.modality_prob)
                          if self.random_modalities else MODALITIES)
        self.context = build_context(self.store, row["ticker"], row["date"], tuple(modalities), cfg=self.context_config)
        self.label = Action(int(row["label"]))
        self._info = {"ticker": self.context.ticker, "date": self.context.date, "modalities": self.context.modalities,
                      "missing": self.context.missing, "label": self.label.name}
        if self.anonymize:
            pseudonyms = Pseudonyms.for_episode(self.context.ticker, self.np_random)
            self.context = anonymize(self.context, pseudonyms, self.anonymize)
            self._info["pseudonyms"] = dict(pseudonyms.mapping)
        self._pending = True
        return self.context.prompt, dict(self._info)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score the completion. ``info`` adds every reward term (``RewardBreakdown.to_dict``: ``decision`` is
        R_decision, ``decision_action`` the parsed call) to the reset info (``label`` is the true call)."""
        if not self._pending:
            raise RuntimeError("ThesisEnv episodes last one step: call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"the action is the completion text, got {type(action).__name__}")
        self._pending = False
        breakdown = score(action, self.label, self.context.text, self.reward_config)
        return self.context.prompt, breakdown.total, True, False, {**self._info, **breakdown.to_dict()}
