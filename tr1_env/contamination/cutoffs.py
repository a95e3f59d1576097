"""Model training cutoffs: whether a model may have read about the days it is tested on.

``data/model_cutoffs.csv`` holds, per model-id pattern (``fnmatch``, case-insensitive, first match
wins), the published training cutoff, the release date and the source of both. Where a vendor
publishes no cutoff the release date stands in as an upper bound and the cutoff is *flagged*. A
local checkpoint inherits its base model's cutoff (from ``flag_trader.json``, an adapter config,
its model card's ``base_model`` or ``config.json``); ``--cutoff`` sets any other.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TABLE", "Cutoff", "base_model", "latest", "load_cutoffs", "model_cutoff", "parse_overrides",
           "post_cutoff_window", "pre_cutoff_share", "windows_after"]

TABLE = Path(__file__).parents[1] / "data" / "model_cutoffs.csv"
_PREFIXES = ("hf:", "vllm:", "flag:")


@dataclass(frozen=True)
class Cutoff:
    """What a model may know: data up to ``date`` (None: unknown), how that is known, and from where."""

    model: str
    date: pd.Timestamp | None
    basis: str  # "published cutoff", "release date (upper bound)", "--cutoff", "unknown"
    source: str

    @property
    def flagged(self) -> bool:
        """True when the date is not a published cutoff (a release date, or unknown)."""
        return self.basis != "published cutoff" and self.basis != "--cutoff"

    def share_before(self, days: Iterable) -> float:
        """The contamination flag: the share of ``days`` (decision days) on or before the cutoff; NaN if unknown."""
        return pre_cutoff_share(days, self.date)

    def describe(self) -> str:
        when = "unknown (pass --cutoff)" if self.date is None else f"{self.date:%Y-%m-%d}"
        return f"{when}, {self.basis}"


def pre_cutoff_share(days: Iterable, cutoff: pd.Timestamp | None) -> float:
    days = pd.DatetimeIndex(list(days))
    if cutoff is None or len(days) == 0:
        return float("nan")
    return float(np.mean(days.normalize() <= pd.Timestamp(cutoff)))


@lru_cache(maxsize=4)
def load_cutoffs(path: str | Path = TABLE) -> pd.DataFrame:
    """The cutoff table, checked row by row (dates ISO or empty, a source on every row)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = ["pattern", "training_cutoff", "release_date", "source"]
    if list(table.columns) != expected:
        raise ValueError(f"{path}: columns must be {','.join(expected)}, got {','.join(table.columns)}")
    for row, r in table.iterrows():
        for col in ("training_cutoff", "release_date"):
            if r[col] and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", r[col]):
                raise ValueError(f"{path}: row {row + 2} ({r.pattern}): {col} {r[col]!r} is not YYYY-MM-DD")
        if not r.pattern or not r.source:
            raise ValueError(f"{path}: row {row + 2}: pattern and source are required")
    return table


def _names(spec: str) -> list[str]:
    """A model spec as the table matches it: without its prefix, whole and as its last path component."""
    name = spec
    for prefix in _PREFIXES:
        name = name.removeprefix(prefix)
    name = name.rstrip("/").lower()
    return list(dict.fromkeys([name, name.rsplit("/", 1)[-1]]))


def _lookup(spec: str, table: pd.DataFrame) -> Cutoff | None:
    names = _names(spec)
    for r in table.itertuples(index=False):
        if any(fnmatch.fnmatchcase(n, r.pattern.lower()) for n in names):
            if r.training_cutoff:
                return Cutoff(spec, pd.Timestamp(r.training_cutoff), "published cutoff", r.source)
            if r.release_date:
                return Cutoff(spec, pd.Timestamp(r.release_date), "release date (upper bound)", r.source)
            return Cutoff(spec, None, "unknown", r.source)
    return None


def base_model(path: str | Path) -> str | None:
    """The model a local checkpoint was trained from, if its files say so."""
    path = Path(path)
    flag = path / "flag_trader.json"
    if flag.exists():
        return json.loads(flag.read_text()).get("model")
    for adapter in (path / "adapter_config.json", path.parent / "adapter" / "adapter_config.json"):
        if adapter.exists() and (base := json.loads(adapter.read_text()).get("base_model_name_or_path")):
            return base
    card = path / "README.md"
    if card.exists() and (m := re.search(r"^base_model:[ \t]*(?:\n[ \t]*-[ \t]*)?['\"]?([^\s'\"]+)", card.read_text(),
                                        re.MULTILINE)):
        return m.group(1)
    config = path / "config.json"
    if config.exists():
        name = json.loads(config.read_text()).get("_name_or_path")
        if name and Path(name).resolve() != path.resolve():
            return name
    return None


def model_cutoff(spec: str, override: str | None = None, table: pd.DataFrame | None = None) -> Cutoff:
    """The cutoff of a model spec (``gpt-4.1``, ``Qwen/Qwen3-4B``, ``hf:runs/sft/merged``, ``smollm2``).

    ``override`` (``--cutoff``) wins; a local checkpoint folder inherits from its base model first.
    """
    if override:
        return Cutoff(spec, pd.Timestamp(override), "--cutoff", "set by the user")
    table = load_cutoffs() if table is None else table
    local = spec
    for prefix in _PREFIXES:
        local = local.removeprefix(prefix)
    seen = set()
    while Path(local).is_dir() and local not in seen and (base := base_model(local)):
        seen.add(local)
        found = _lookup(base, table)
        if found is not None:
            return Cutoff(spec, found.date, found.basis, f"inherited from base model {base}: {found.source}")
        local = base
    return _lookup(spec, table) or Cutoff(spec, None, "unknown", "not in tr1_env/data/model_cutoffs.csv")


def parse_overrides(values: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """``--cutoff`` values: ``MODEL=YYYY-MM-DD`` for one model, a bare date for every model the table lacks."""
    per_model, default = {}, None
    for value in values:
        model, _, date = value.rpartition("=")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
            raise ValueError(f"--cutoff {value!r}: expected YYYY-MM-DD or MODEL=YYYY-MM-DD")
        if model:
            per_model[model] = date
        else:
            default = date
    return per_model, default


def latest(cutoffs: Iterable[Cutoff]) -> Cutoff:
    """The latest cutoff of a run's models (what a post-cutoff window must start after)."""
    cutoffs = list(cutoffs)
    unknown = [c.model for c in cutoffs if c.date is None]
    if unknown:
        raise ValueError(f"no training cutoff known for {', '.join(unknown)}: pass --cutoff MODEL=YYYY-MM-DD")
    if not cutoffs:
        raise ValueError("no LLM in the run: a post-cutoff window needs at least one model with a cutoff")
    return max(cutoffs, key=lambda c: c.date)


def post_cutoff_window(start, end, cutoff: Cutoff, data_end) -> tuple[pd.Timestamp, pd.Timestamp]:
    """A window of the length of ``[start, end]`` that starts the day after ``cutoff``, cut at ``data_end``.

    Refuses when no day of data follows the cutoff.
    """
    start, end, data_end = pd.Timestamp(start), pd.Timestamp(end), pd.Timestamp(data_end)
    first = cutoff.date + pd.Timedelta(days=1)
    if first > data_end:
        raise ValueError(f"no data after the training cutoff of {cutoff.model} ({cutoff.describe()}): "
                         f"the store ends {data_end:%Y-%m-%d}")
    return first, min(first + (end - start), data_end)


def windows_after(windows: Sequence, cutoff: Cutoff) -> list:
    """The protocol windows (with a ``start`` attribute, or ``(start, end, ...)`` tuples) that open after ``cutoff``."""
    return [w for w in windows if pd.Timestamp(w.start if hasattr(w, "start") else w[0]) > cutoff.date]
