"""A run's output folder: where a run may write, what it owns there, how it writes and how it is checked.

A run writes only into a new folder, an empty one, or one that a previous tr1 run owns (its ``config.json``
says so); ``--force`` lets it add its files to any other folder, never replacing one it did not write.
Every file is named in the folder's journal (``.tr1-journal``) before it is written, and written atomically
(:func:`tr1_env.util.files.atomic_write`). ``config.json`` holds the run id and whether the run finished and, at
the end, lists every file the folder's runs wrote with its sha256 (the manifest); the journal then goes.
A run deletes only files that the manifest or the journal lists, so a user's own files are never touched,
and :func:`verify_run` tells a finished run from an unfinished or mixed folder.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from benchmarks.escaping import csv_safe
from tr1_env.core.actions import Action
from tr1_env.util.files import atomic_write, jsonable

__all__ = ["SHARD_CELLS", "FolderRefused", "RunRecord", "begin_run", "check_out", "claim", "finish_run",
           "load_decisions", "new_run_id", "owned", "remove", "save_decisions", "verify_run", "write_csv", "write_json",
           "write_text"]

MANIFEST = "config.json"
JOURNAL = ".tr1-journal"
SHARD_CELLS = "cells.json"  # a shard's cells and their failed tickers (benchmarks/merge.py reads it)
VERSION = 2  # the manifest lists every file the folder's runs wrote; version 1 listed the report files only
#: Report files of a run, relative to its folder: one the manifest does not list is from someone else.
REPORT_GLOBS = ("summary.csv", "summary.md", "memorisation.csv", "returns/*.csv", "plots/*.png", "tearsheets/*.html",
                "windows/*/returns/*.csv", "windows.csv", "leaderboard.csv", "leaderboard.md", "leaderboard.html")
#: What begin_run removes of the files earlier runs wrote: every report but the tearsheets (kept by digest);
#: the decisions stay (the resume point).
STALE = ("summary.csv", "summary.md", "memorisation.csv", "windows.csv", "leaderboard.csv", "leaderboard.md",
         "leaderboard.html", "returns/*.csv", "plots/*.png", "windows/*/returns/*.csv", "leaderboard_portfolio.*",
         "windows_portfolio.csv", "portfolio/*.csv", SHARD_CELLS)
#: Files every run writes: ``--force`` refuses a folder where one of them is the user's.
FIXED = (MANIFEST, JOURNAL, "summary.csv", "summary.md", "windows.csv", "leaderboard.csv", "leaderboard.md",
         "leaderboard.html", "tearsheets/digests.json")
#: What a version-1 run wrote without listing it: its decisions (the resume point) and tearsheet digests.
_V1_UNLISTED = ("decisions/*.json", "windows/*/decisions/*.json", "tearsheets/digests.json")


class FolderRefused(ValueError):
    """``--out`` names a folder a run may not write into, or a run met a file it may not replace: one line,
    exit 2, nothing of the user's changed."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(folder: Path) -> dict | None:
    """``config.json`` when a tr1 run wrote it (a run id, a status and the settings), else None."""
    try:
        meta = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and {"run_id", "status", "config"} <= meta.keys() else None


def is_run(folder: Path) -> bool:
    """A folder a tr1 run owns: its manifest, or the journal of a run killed before it wrote one."""
    return _manifest(folder) is not None or (folder / JOURNAL).is_file()


def _relative(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def owned(folder: Path) -> set[str]:
    """Every file the folder's tr1 runs wrote, relative to it: what the manifest and the journal list."""
    meta = _manifest(folder)
    names = set() if meta is None else {MANIFEST, *(meta.get("files") or {})}
    if meta is not None and meta.get("manifest_version", 1) < VERSION:
        names |= {p.relative_to(folder).as_posix() for pattern in _V1_UNLISTED for p in folder.glob(pattern)}
    try:
        names |= set((folder / JOURNAL).read_text().splitlines())
    except OSError:
        pass
    return {name for name in names if _relative(name)}


def check_out(out: str, force: bool = False) -> Path:
    """The folder ``--out`` names, checked before anything is written: FolderRefused (one line) for an empty
    name, a file, a dangling or looping symlink, a folder this user cannot write, and a non-empty folder that
    no tr1 run owns (unless ``force``, and even then not where a file the run always writes is the user's).
    A symlink is followed and its target checked the same way."""
    if not out.strip():
        raise FolderRefused("--out is empty: name a folder (an empty name would write into the working directory)")
    try:
        return _check_out(out, force)
    except OSError as exc:  # a folder on the way that this user may not enter
        raise FolderRefused(f"--out {out}: cannot be checked ({exc.strerror or type(exc).__name__}: "
                            f"{exc.filename})") from None


def _check_out(out: str, force: bool) -> Path:
    path = Path(out)
    dangling = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        raise FolderRefused(f"--out {out}: {dangling} is a symlink to {os.readlink(dangling)}, which does not exist")
    try:
        real = path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise FolderRefused(f"--out {out}: cannot be resolved ({type(exc).__name__})") from None
    shown = f"--out {out}" + (f" (-> {real})" if real != Path(os.path.abspath(out)) else "")
    if real.exists() and not real.is_dir():
        raise FolderRefused(f"{shown}: is a file, not a folder")
    if not real.exists():
        parent = next(p for p in real.parents if p.exists())
        if not parent.is_dir():
            raise FolderRefused(f"{shown}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise FolderRefused(f"{shown}: cannot create it, {parent} is not writable")
        return path
    if not os.access(real, os.R_OK | os.W_OK | os.X_OK):
        raise FolderRefused(f"{shown}: the folder is not writable")
    if not any(real.iterdir()) or is_run(real):
        return path
    if not force:
        raise FolderRefused(f"{shown} is a non-empty folder that no tr1 run owns (no run config.json): choose a new "
                            "or empty folder, or pass --force to add the run's files beside yours")
    taken = [name for name in FIXED if (real / name).exists() or (real / name).is_symlink()]
    if taken:
        raise FolderRefused(f"{shown}: {taken[0]} is yours (no tr1 run wrote it) and even --force never replaces "
                            "a file: move it or choose another folder")
    return path


@dataclass
class _Open:
    """A run in progress in this process: its folder's real path and the files its runs wrote."""

    real: Path
    owned: set[str]


_OPEN: dict[Path, _Open] = {}  # by folder, absolute as spelled: begin_run adds, finish_run takes away


def _lookup(path: Path) -> tuple[Path, _Open, str] | None:
    where = Path(os.path.abspath(path))
    for root, run in _OPEN.items():
        if where.is_relative_to(root):
            return root, run, where.relative_to(root).as_posix()
    return None


def claim(path: Path) -> Path:
    """``path``, named in its run folder's journal before it is written (outside every open run folder, as is).

    FolderRefused for a file that exists and that no tr1 run wrote (a run never replaces a user's file), and
    for a path that a symlink leads out of the folder.
    """
    found = _lookup(path)
    if found is None:
        return path
    root, run, name = found
    if not Path(os.path.realpath(path)).is_relative_to(run.real):
        raise FolderRefused(f"{path}: a symlink leads out of the run folder {root}; nothing was written there")
    if name not in run.owned:
        if path.exists() or path.is_symlink():
            raise FolderRefused(f"{path} exists and no tr1 run wrote it: a run never replaces a file of yours "
                                "(move it, or choose another --out)")
        with open(root / JOURNAL, "a") as journal:
            journal.write(name + "\n")
        run.owned.add(name)
    return path


def remove(path: Path) -> None:
    """Delete ``path`` if a tr1 run wrote it (the open run folder's manifest or journal lists it); anything
    else stays, whatever its name."""
    found = _lookup(path)
    if found is not None and found[2] in found[1].owned and Path(os.path.realpath(path)).is_relative_to(found[1].real):
        path.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(claim(path), lambda tmp: tmp.write_text(text))


def csv_text(frame: pd.DataFrame, **kwargs) -> str:
    """``frame.to_csv`` with every formula-like text cell neutralised (:func:`benchmarks.escaping.csv_safe`): what
    :func:`write_csv` writes, for a worker that renders a file the run writes."""
    return csv_safe(frame).to_csv(lineterminator="\n", **kwargs)


def write_csv(path: Path, frame: pd.DataFrame, **kwargs) -> None:
    """:func:`csv_text` written atomically."""
    write_text(path, csv_text(frame, **kwargs))


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(jsonable(data), indent=2) + "\n")


@dataclass(frozen=True)
class RunRecord:
    """What ``config.json`` says of a run besides its status and files, in its key order: the run id, the
    settings, the windows, the data's coverage, the return basis, what was skipped or failed, the LLM rows'
    cutoffs, the pseudonyms of anonymized contexts and, once finished, the wall time."""

    run_id: str
    config: dict
    windows: list[str]
    coverage: dict
    returns: str
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    cutoffs: dict = field(default_factory=dict)
    pseudonyms: dict = field(default_factory=dict)
    wall_time_s: float | None = None

    def meta(self) -> dict:
        """The record as ``config.json`` holds it (no wall time until the run has one)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "wall_time_s" or v is not None}


def begin_run(out: Path, meta: dict) -> None:
    """Open ``out`` for a run: remove the summaries, leaderboard, returns and plots that earlier runs wrote
    there (tearsheets are kept by digest, decisions are the resume point; no other file is touched), then
    write ``config.json`` marked running and listing what is kept, so a run killed from here on leaves no
    file of another run unmarked."""
    root = Path(os.path.abspath(out))
    root.mkdir(parents=True, exist_ok=True)
    run = _OPEN[root] = _Open(root.resolve(), owned(root))
    for name in sorted(run.owned):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in STALE):
            remove(root / name)
    kept = {name: _sha256(root / name) for name in sorted(run.owned - {MANIFEST}) if (root / name).is_file()}
    write_json(root / MANIFEST, {**meta, "status": "running", "manifest_version": VERSION, "files": kept})


def finish_run(out: Path, meta: dict, status: str) -> None:
    """``config.json`` with the final status and the sha256 of every file the folder's runs wrote, written
    last; the journal is then folded into it."""
    root = Path(os.path.abspath(out))
    names = run.owned if (run := _OPEN.pop(root, None)) is not None else owned(root)
    files = {name: _sha256(root / name) for name in sorted(names - {MANIFEST}) if (root / name).is_file()}
    write_json(root / MANIFEST, {**meta, "status": status, "manifest_version": VERSION, "files": files})
    (root / JOURNAL).unlink(missing_ok=True)


def _report_files(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for pattern in REPORT_GLOBS for p in sorted(out.glob(pattern))}


def verify_run(out: str | Path) -> list[str]:
    """What is wrong with a run folder: an unfinished run, a listed file missing or changed, a report file
    that the run did not write."""
    out = Path(out)
    try:
        meta = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return [f"{out / MANIFEST} unreadable ({type(exc).__name__})"]
    run_id, listed = meta.get("run_id", "?"), meta.get("files") or {}
    problems = [] if meta.get("status") in ("complete", "failed") else [f"run {run_id} did not finish"]
    problems += [f"{name} is missing" for name in listed if not (out / name).is_file()]
    present = sorted({*(name for name in listed if (out / name).is_file()), *_report_files(out)})
    return problems + [f"{name} is not from run {run_id}" for name in present
                       if name not in listed or listed[name] != _sha256(out / name)]


def load_decisions(path: Path, fingerprint: str) -> pd.DataFrame | None:
    """The saved replay, or None when there is none, it is stale, or it is unreadable (then moved aside, said so)."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") != fingerprint:
            return None
        frame = decisions_frame(saved["decisions"])
        names_ok = set(frame["action"]) <= set(Action.__members__) if "action" in frame else False
        if not {"action", "thesis", "meta"} <= set(frame.columns) or not names_ok:
            raise ValueError("a column or an action name is missing")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        aside = claim(path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
        path.replace(aside)
        print(f"warning: {path} is unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
              f"moved to {aside.name}, replaying it again", file=sys.stderr)
        return None
    return frame


def decisions_frame(rows: list[dict]) -> pd.DataFrame:
    """Decision records (as JSON holds them) as a frame indexed by their ISO dates: column by column when every row
    has the first row's keys (a replay's always do; faster than a frame of records), else as a frame of records."""
    first = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
    if first is not None and all(isinstance(r, dict) and r.keys() == first.keys() for r in rows):
        frame = pd.DataFrame({k: [r[k] for r in rows] for k in first})
    else:
        frame = pd.DataFrame(rows)
    frame.index = _iso_dates(tuple(frame.pop("date")))
    return frame


@lru_cache(maxsize=64)
def _iso_dates(dates: tuple[str, ...]) -> pd.DatetimeIndex:
    """The decision dates as an index, parsed once per schedule (every agent and ticker of a window shares one)."""
    return pd.DatetimeIndex(pd.to_datetime(list(dates), format="ISO8601"), name="date")


def save_decisions(path: Path, fingerprint: str, records: list[dict]) -> pd.DataFrame:
    """Atomic: a run killed mid-write leaves the previous file or none, never half a file. Returns the decisions as
    :func:`load_decisions` reads the file back (from the text written, not read again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable({"fingerprint": fingerprint, "decisions": records}))
    write_text(path, text)
    return decisions_frame(json.loads(text)["decisions"])
