"""Ticker-day prompt datasets for SFT and GRPO, in trl's conversational format.

One row per (ticker, day, modality subset): ``prompt`` (system + user messages), ``label`` (the
action name), ``context`` (the data text quotes are checked against), ``sections`` (its body per
modality, in ``modalities`` order), ``ticker``, ``date``, ``modalities``, ``missing``, ``variant`` (and
``pseudonyms``, JSON, when anonymized: ``ticker`` and ``date`` stay real for bookkeeping; the prompt and
context carry neither). SFT rows add ``completion`` (one assistant message).

Leakage is ruled out by construction: a training window may not overlap the held-out replay
window nor any other evaluation window passed to it (``eval_windows``), label thresholds are
fitted on the training window, and labels read no price after the window's end (so its last ~15
sessions, whose one-week target lies beyond it, have no label).
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, load_from_disk
from pandas.tseries.holiday import AbstractHolidayCalendar, GoodFriday, USFederalHolidayCalendar
from tqdm.auto import tqdm

from tr1_agent.configs import DatasetConfig
from tr1_env.context.anonymize import Pseudonyms, anonymize
from tr1_env.context.config import ContextConfig
from tr1_env.context.prompt import SYSTEM_PROMPT
from tr1_env.context.record import sample_modalities
from tr1_env.context.reference import build_context
from tr1_env.data.store import Store
from tr1_env.scoring.labels import check_training_window, label_name, make_labels

__all__ = ["build_prompts", "check_windows", "day_keys", "eval_windows", "load", "messages", "save", "split_days",
           "with_completions"]


def eval_windows(cfg: DatasetConfig) -> list[tuple[str, str]]:
    """The held-out replay window and every ``--data-eval-windows START:END``."""
    out = [(cfg.eval_start, cfg.eval_end)]
    for window in cfg.eval_windows:
        start, sep, end = window.partition(":")
        if not sep or not start or not end:
            raise ValueError(f"evaluation window {window!r}: expected START:END (YYYY-MM-DD:YYYY-MM-DD)")
        out.append((start, end))
    return out


def check_windows(cfg: DatasetConfig) -> None:
    """Refuse a training window that is empty or overlaps any evaluation window (the Thesis env's guard)."""
    for window in eval_windows(cfg):
        check_training_window(cfg.start, cfg.end, window)


def messages(user: str) -> list[dict[str, str]]:
    """The conversation every model in the project sees: the shared system prompt, then the ticker-day prompt."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _labels(store: Store, ticker: str, cfg: DatasetConfig) -> pd.Series:
    """Action names of the window's labelled days, from closes up to the window's end only."""
    close = store.closes(ticker).loc[: pd.Timestamp(cfg.end)]
    labels = make_labels(close, cfg.start, cfg.end, cfg.start, cfg.end)["label"].dropna()
    return labels.map(label_name)


def _subsets(rng: np.random.Generator, n: int, p: float) -> list[tuple[str, ...]]:
    """Up to ``n`` distinct modality subsets (a day has at most 31)."""
    out: list[tuple[str, ...]] = []
    for _ in range(20 * n):
        subset = sample_modalities(rng, p)
        if subset not in out:
            out.append(subset)
        if len(out) == n:
            break
    return out


def build_prompts(cfg: DatasetConfig, store: Store | None = None) -> Dataset:
    """The prompt dataset of the training window: ``variants`` modality subsets per labelled ticker-day.

    Draws are seeded per (seed, ticker, day), so a row never changes when tickers or days are added.
    """
    check_windows(cfg)
    store = store or Store(cfg.store)
    ctx_cfg = ContextConfig(max_chars=cfg.max_chars, modality_prob=cfg.modality_prob)
    days = []
    for ticker in cfg.tickers:
        labels = _labels(store, ticker, cfg)
        if cfg.max_days is not None and len(labels) > cfg.max_days:
            rng = np.random.default_rng([cfg.seed, zlib.crc32(ticker.encode())])
            labels = labels.iloc[np.sort(rng.choice(len(labels), cfg.max_days, replace=False))]
        days += [(ticker, day, label) for day, label in labels.items()]
    rows = []
    for ticker, day, label in tqdm(days, desc="contexts", disable=len(days) < 50):
        rng = np.random.default_rng([cfg.seed, zlib.crc32(ticker.encode()), day.toordinal()])
        for variant, modalities in enumerate(_subsets(rng, cfg.variants, cfg.modality_prob)):
            ctx = build_context(store, ticker, day, modalities=modalities, cfg=ctx_cfg)
            extra = {}
            if cfg.anonymize:  # each row is an episode: its own lettering, drawn from the row's seed
                pseudonyms = Pseudonyms.for_episode(ticker, rng)
                ctx = anonymize(ctx, pseudonyms, cfg.anonymize)
                extra = {"pseudonyms": json.dumps(pseudonyms.mapping)}
            rows.append({"prompt": messages(ctx.prompt), "label": label, "context": ctx.text,
                         "sections": [ctx.sections[m] for m in ctx.modalities], "ticker": ticker,
                         "date": f"{day:%Y-%m-%d}", "modalities": list(ctx.modalities), "missing": list(ctx.missing),
                         "variant": variant, **extra})
    if not rows:
        raise ValueError(f"no labelled ticker-day in {cfg.start}..{cfg.end} for {list(cfg.tickers)}")
    return Dataset.from_list(rows)


def with_completions(rows: Dataset, completions: Sequence[str]) -> Dataset:
    """SFT rows: trl's conversational prompt-completion format (loss on the completion only)."""
    if len(completions) != len(rows):
        raise ValueError(f"{len(completions)} completions for {len(rows)} prompts")
    return rows.add_column("completion", [[{"role": "assistant", "content": c}] for c in completions])


def day_keys(rows: Dataset) -> set[tuple[str, str]]:
    """The (ticker, date) pairs present."""
    return set(zip(rows["ticker"], rows["date"]))


def split_days(rows: Dataset, n_days: int, seed: int = 0, embargo: int = 15) -> tuple[Dataset, Dataset]:
    """``(train, held_out)``, a purged split: per ticker one contiguous block of held-out days, and
    no training day within ``embargo`` sessions of it on either side (a label looks 15 sessions
    ahead, and a later context shows the block as history). ``n_days`` ticker-days are held out
    in all, spread evenly over the tickers; embargoed days are in neither part.
    """
    keys = sorted(day_keys(rows))
    if not 0 < n_days < len(keys):
        raise ValueError(f"cannot hold out {n_days} of {len(keys)} ticker-days")
    days: dict[str, list[pd.Timestamp]] = {}
    for ticker, day in keys:
        days.setdefault(ticker, []).append(pd.Timestamp(day))
    rng = np.random.default_rng(seed)
    order = [str(t) for t in rng.permutation(sorted(days))]
    quota = {t: n_days // len(order) + (i < n_days % len(order)) for i, t in enumerate(order)}
    held, dropped = set(), set()
    for ticker in order:
        dates, q = days[ticker], min(quota[ticker], len(days[ticker]) - 1)
        if q <= 0:
            continue
        first = int(rng.integers(len(dates) - q + 1))
        lo, hi = dates[first], dates[first + q - 1]
        for day in dates:
            key = (ticker, f"{day:%Y-%m-%d}")
            if lo <= day <= hi:
                held.add(key)
            elif (_sessions_between(day, lo) if day < lo else _sessions_between(hi, day)) <= embargo:
                dropped.add(key)
    train = [k not in held and k not in dropped for k in zip(rows["ticker"], rows["date"])]
    if not any(train):
        raise ValueError(f"holding out {n_days} ticker-days with a {embargo}-session embargo "
                         "leaves nothing to train on")
    mask = np.array([k in held for k in zip(rows["ticker"], rows["date"])])
    return rows.select(np.flatnonzero(train)), rows.select(np.flatnonzero(mask))


class _Closures(AbstractHolidayCalendar):
    """US federal holidays and Good Friday: every NYSE closure (and two days it trades, Columbus and
    Veterans Day, so a session count errs towards a longer embargo)."""

    rules = [*USFederalHolidayCalendar.rules, GoodFriday]


_SESSIONS = pd.offsets.CustomBusinessDay(calendar=_Closures())


def _sessions_between(a: pd.Timestamp, b: pd.Timestamp) -> int:
    """Sessions from ``a`` up to, not including, ``b``."""
    return len(pd.date_range(a, b, freq=_SESSIONS, inclusive="left"))


def save(rows: Dataset, path: str | Path) -> Path:
    """``path.jsonl`` (readable, portable), then the Arrow folder ``path`` (fast reload).

    Both appear by rename, the folder last: when it exists, the save finished.
    """
    path = Path(path)
    jsonl, staging = path.with_suffix(".jsonl"), path.with_name(path.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)  # what a crashed save left
    rows.to_json(str(staging), lines=True, force_ascii=False)
    staging.replace(jsonl)
    rows.save_to_disk(str(staging))
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
    return path


def load(path: str | Path) -> Dataset:
    """A dataset saved by :func:`save`: its Arrow folder or its JSONL file."""
    path = Path(path)
    if path.is_dir():
        return load_from_disk(str(path))
    if path.suffix == ".jsonl":  # read as plain JSON: Arrow's JSON reader would turn dates into timestamps
        with path.open() as f:
            return Dataset.from_list([json.loads(line) for line in f])
    raise FileNotFoundError(f"{path}: neither a saved dataset folder nor a .jsonl file")
