"""The Context record and how a builder puts one together from its modalities' sections.

Both builders (:func:`tr1_env.context.reference.build_context_reference` and
:class:`tr1_env.context.index.ContextIndex`) ask every registered modality for its :class:`Section` of a ticker-day
and end in :func:`assemble`: missing sections stated, the character budget applied, the prompt rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.features import feature_names, feature_vector
from tr1_env.context.modalities import base
from tr1_env.context.modalities.base import Section
from tr1_env.context.prompt import render_prompt
from tr1_env.core.agents import Observation

#: The modalities of this package, in context order (:func:`modality_names` also counts any registered later).
MODALITIES: tuple[str, ...] = tuple(m.name for m in base.registered())


def modality_names() -> tuple[str, ...]:
    return tuple(m.name for m in base.registered())


def titles() -> dict[str, str]:
    """Each registered modality's section heading."""
    return {m.name: m.title for m in base.registered()}


class _Frame:
    """A field (a DataFrame, mostly) that may also be given as a zero-argument function, called on its first read.

    The indexed builder hands over ``history``, ``news`` and ``macro_relative`` this way: most consumers read
    only the text, and building two frames would cost more than the rest of a context.
    """

    def __set_name__(self, owner, name: str):
        self.key = f"_{name}"

    def __get__(self, obj, owner=None) -> pd.DataFrame:
        if obj is None:
            raise AttributeError(self.key)  # tells dataclasses the field has no default
        value = obj.__dict__[self.key]
        if callable(value):
            value = obj.__dict__[self.key] = value()
        return value

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.key] = value


@dataclass(frozen=True)
class Context:
    ticker: str
    date: pd.Timestamp
    modalities: tuple[str, ...]
    sections: dict[str, str]
    missing: tuple[str, ...]
    text: str
    prompt: str
    features: np.ndarray
    history: pd.DataFrame = _Frame()  # daily bars with indicators up to ``date``
    news: pd.DataFrame = _Frame()  # the headlines shown, in the order shown
    #: The macro section as strict anonymization shows it (``modalities.macro.macro_relative_text``).
    macro_relative: str | None = _Frame()

    #: The fields modalities fill (:attr:`Section.frames`), each a value or a function called on first read.
    FRAMES = ("history", "news", "macro_relative")
    #: Those agents read whatever sections are shown (the others belong to their section: None when it is not).
    OBSERVED = ("history", "news")

    def observation(self, position: float = 0.0) -> Observation:
        return Observation(self.ticker, self.date, self.prompt, self.text, self.features, feature_names(),
                           self.history, self.news, position)


def sample_modalities(rng: np.random.Generator, p: float = 0.7) -> tuple[str, ...]:
    """A random non-empty subset, in canonical order (Trading-R1 draws ~20 input variants per day)."""
    names = modality_names()
    keep = rng.random(len(names)) < p
    if not keep.any():
        keep[rng.integers(len(names))] = True
    return tuple(m for m, k in zip(names, keep) if k)


def choose_modalities(modalities: tuple[str, ...] | None, seed: int | None, cfg: ContextConfig) -> tuple[str, ...]:
    """The modalities a context shows: those given (checked), a seeded random subset, or all."""
    names = modality_names()
    if modalities is None:
        return sample_modalities(np.random.default_rng(seed), cfg.modality_prob) if seed is not None else names
    unknown = set(modalities) - set(names)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {names}")
    return tuple(modalities)


def fit_budget(sections: dict[str, str], max_chars: int) -> dict[str, str]:
    """Trim the longest sections line by line (from their end: news is newest first), cutting characters off
    one that is down to two lines, until the bodies fit ``max_chars`` or each is no more than its cut marker."""
    sections, marker = dict(sections), " [truncated]"
    while (excess := sum(len(v) for v in sections.values()) - max_chars) > 0:
        name = max(sections, key=lambda k: len(sections[k]))
        body = sections[name]
        if len(body) <= len(marker):
            break  # nothing left to cut anywhere
        lines = body.split("\n")
        if len(lines) > 2:
            sections[name] = "\n".join(lines[:-1])
        else:
            sections[name] = body[: max(0, len(body) - excess - 20)] + marker
    return sections


def assemble(ticker: str, day: pd.Timestamp, modalities: tuple[str, ...], answers: dict[str, Section],
             cfg: ContextConfig) -> Context:
    """The context of every registered modality's section (``answers``, by name) showing ``modalities``."""
    sections, missing, features, frames = {}, [], {}, {}
    for m in base.registered():
        answer = answers[m.name]
        features.update(answer.features)
        frames.update({k: v for k, v in answer.frames.items() if m.name in modalities or k in Context.OBSERVED})
        if m.name not in modalities:
            continue
        body = answer.text
        if body is None:
            missing.append(m.name)
            body = f"No {m.title.lower()} data is available for {ticker} as of {day:%Y-%m-%d}."
        sections[m.name] = body
    sections, heading = fit_budget(sections, cfg.max_chars), titles()
    text = "\n\n".join(f"## {heading[m]}\n{body}" for m, body in sections.items())
    return Context(ticker, day, modalities, sections, tuple(missing), text,
                   render_prompt(ticker, f"{day:%Y-%m-%d}", text), feature_vector(features),
                   **{name: frames.get(name) for name in Context.FRAMES})
