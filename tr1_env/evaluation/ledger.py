"""The forward test's record: an append-only, hash-chained ledger of decisions (JSON lines).

Each line is one entry in a canonical serialisation (sorted keys, no spaces, UTF-8), carrying the sha256 of the
line before it (``prev``; the first line carries 64 zeros), so the line is its own hash input and any edit,
insertion or deletion breaks the chain at a line :func:`verify` names. Lines are only ever appended (the file is
opened in append mode, flushed and fsynced, under an exclusive lock); nothing here rewrites one.

An entry says who decided what, when, on what: ``ts`` (UTC, when it was appended), ``day`` (the session decided),
``asof`` (the instant of the data the decision read), ``deadline`` (when the order it sets executes: the next open
for a decision at the close, the close for one taken before it), ``agent``, ``ticker``, ``model`` and ``cutoff``,
``prompt_sha256``, ``data`` (what the store showed at ``asof``: rows, last ``available_at`` and a digest per table)
with its ``data_sha256``, ``completion``, ``decision``, ``tokens`` and ``cost_usd``; ``status`` is ``decided`` or
``failed`` (a vendor or model failure: never a decision). A publication of the ledger is a file per UTC day with
that day's lines and the chain's head after them (:func:`export_days`): posting the head anywhere public fixes
every line up to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from tr1_env.data.schema import MARKET_WIDE, TABLES
from tr1_env.util.files import atomic_write, jsonable

__all__ = ["GENESIS", "Ledger", "LedgerError", "canonical", "check_roots", "data_manifest", "export_days",
           "line_hash", "stamp", "verify"]

GENESIS = "0" * 64
STATUSES = ("decided", "failed")


class LedgerError(ValueError):
    """A ledger that cannot be read or appended to, naming the file and line."""


def canonical(entry: dict) -> str:
    """The one serialisation of an entry: what is written, and what is hashed."""
    return json.dumps(jsonable(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def line_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def stamp(ts) -> str:
    """A UTC instant as the ledger writes it (ISO 8601 with microseconds and Z)."""
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def data_manifest(store, ticker: str, t) -> dict:
    """What ``store`` showed about ``ticker`` (and the market-wide tables) at instant ``t``: per table, the rows
    available, the last ``available_at`` among them and a sha256 of their content."""
    out = {}
    for name in sorted(TABLES):
        rows = store.visible(name, "*" if name in MARKET_WIDE else ticker, t)
        digest = hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()
        last = rows["available_at"].max() if len(rows) else None
        out[name] = {"rows": len(rows), "last": None if last is None else stamp(last), "sha256": digest}
    return out


class Ledger:
    """One ledger file: read, appended to, never rewritten."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            raise LedgerError(f"{self.path}: the last line is incomplete (a write was cut off); verify names it")
        return text.splitlines()

    def entries(self) -> list[dict]:
        out = []
        for i, line in enumerate(self.lines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise LedgerError(f"{self.path} line {i}: not JSON ({exc})") from None
        return out

    def append(self, entries: list[dict], now) -> list[dict]:
        """Chain and stamp ``entries`` (``ts`` = ``now``) and append them in one write, fsynced before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # two runs never interleave their lines
            f.seek(0)
            text = f.read()
            if text and not text.endswith("\n"):
                raise LedgerError(f"{self.path}: the last line is incomplete; run `tr1 forward verify`")
            prev = line_hash(text.splitlines()[-1]) if text else GENESIS
            out, lines = [], []
            for entry in entries:
                entry = {**entry, "prev": prev, "ts": stamp(now)}
                line = canonical(entry)
                lines.append(line + "\n")
                prev = line_hash(line)
                out.append(json.loads(line))
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
        return out

    def head(self) -> tuple[int, str]:
        """The number of lines and the hash of the last one (GENESIS for an empty ledger)."""
        lines = self.lines()
        return len(lines), line_hash(lines[-1]) if lines else GENESIS


def verify(path: str | Path, head: tuple[int, str] | None = None) -> list[str]:
    """Every problem of the ledger at ``path``, each naming its line: a broken chain (an edited, inserted or deleted
    line), a line not in canonical form, a timestamp earlier than the line before, a decision stamped after the
    deadline it trades on, data from after the decision's instant, a data digest that does not match its manifest.
    ``head``: the (lines, hash) recorded after the last run, which catches an edited or deleted last line."""
    path = Path(path)
    if not path.exists():
        return [f"{path}: no ledger"]
    raw = path.read_bytes().decode("utf-8", errors="replace")
    lines = raw.splitlines()
    problems = [f"line {len(lines)}: incomplete (no newline at its end: a write was cut off)"] if (
        raw and not raw.endswith("\n")) else []
    prev, last_ts = GENESIS, None
    for i, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            problems.append(f"line {i}: not a JSON object ({exc})")
            prev = line_hash(line)
            continue
        if canonical(entry) != line:
            problems.append(f"line {i}: not in canonical form (edited by hand?)")
        if entry.get("prev") != prev:
            problems.append(f"line {i}: its previous hash does not match line {i - 1}: line {i - 1} was edited"
                            if i > 1 else f"line {i}: the first line must chain from {GENESIS[:8]}...")
            if i > 1:
                problems[-1] += ", or a line was deleted or inserted before it"
        prev = line_hash(line)
        problems += [f"line {i}: {p}" for p in _entry_problems(entry, last_ts)]
        last_ts = entry.get("ts", last_ts)
    if head is not None:
        n, digest = head
        if len(lines) < n:
            problems.append(f"line {len(lines) + 1}: deleted (the last run left {n} lines, the file has "
                            f"{len(lines)})")
        elif n and line_hash(lines[n - 1]) != digest:
            problems.append(f"line {n}: edited (its hash is not the head the last run recorded)")
    return problems


def _entry_problems(entry: dict, last_ts: str | None) -> list[str]:
    out = []
    missing = [k for k in ("ts", "day", "asof", "deadline", "agent", "ticker", "status") if k not in entry]
    if missing:
        return [f"missing {', '.join(missing)}"]
    if entry["status"] not in STATUSES:
        out.append(f"status {entry['status']!r} is not one of {', '.join(STATUSES)}")
    ts, asof, deadline = (pd.Timestamp(entry[k]) for k in ("ts", "asof", "deadline"))
    if last_ts is not None and ts < pd.Timestamp(last_ts):
        out.append(f"timestamp {entry['ts']} is earlier than the line before ({last_ts})")
    if entry["status"] == "decided":
        if ts > deadline:
            out.append(f"{entry['agent']} on {entry['ticker']} {entry['day']} stamped {entry['ts']}, after the "
                       f"deadline it trades on ({entry['deadline']})")
        if asof > ts:
            out.append(f"reads data as of {entry['asof']}, after its timestamp {entry['ts']}")
        data = entry.get("data") or {}
        if hashlib.sha256(canonical(data).encode()).hexdigest() != entry.get("data_sha256"):
            out.append("data_sha256 is not the digest of its data manifest")
        late = [name for name, t in data.items() if t.get("last") and pd.Timestamp(t["last"]) > asof]
        if late:
            out.append(f"uses {', '.join(late)} rows available after its instant {entry['asof']}")
    return out


def export_days(path: str | Path, folder: str | Path) -> dict[str, str]:
    """The publication: per UTC day of the stamps, ``<day>.jsonl`` (that day's lines, verbatim) and ``<day>.root``
    (the chain's head after them and the line it is the hash of). Returns the file names written by sha256.

    A day's files are written again only when the ledger gained lines stamped that day (a retry or ``--force``
    before midnight UTC); a root posted earlier stays checkable: it is the hash of the line it names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = Ledger(path).lines()
    days: dict[str, list[int]] = {}
    for i, line in enumerate(lines, 1):
        days.setdefault(json.loads(line)["ts"][:10], []).append(i)
    written = {}
    for day, numbers in days.items():
        body = "".join(lines[i - 1] + "\n" for i in numbers)
        root = (f"tr1 forward ledger {day}: lines {numbers[0]}-{numbers[-1]} of the chain; root sha256 "
                f"{line_hash(lines[numbers[-1] - 1])} (the sha256 of line {numbers[-1]}, which chains every line "
                "before it)\n")
        for name, text in ((f"{day}.jsonl", body), (f"{day}.root", root)):
            target = folder / name
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                atomic_write(target, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"))
            written[name] = hashlib.sha256(text.encode()).hexdigest()
    return written


def check_roots(path: str | Path, folder: str | Path) -> list[str]:
    """Every published ``<day>.root`` in ``folder`` checked against the ledger: the line it names must still
    hash to the root it gives."""
    lines = Ledger(path).lines()
    problems = []
    for root in sorted(Path(folder).glob("*.root")):
        words = root.read_text(encoding="utf-8").split()
        try:
            line, digest = int(words[words.index("line") + 1].rstrip(",")), words[words.index("sha256") + 1]
        except (ValueError, IndexError):
            problems.append(f"{root}: not a root file")
            continue
        if line > len(lines):
            problems.append(f"{root.name}: names line {line}, but the ledger has {len(lines)} lines (deleted)")
        elif line_hash(lines[line - 1]) != digest:
            problems.append(f"{root.name}: line {line} no longer hashes to the published root (a line up to "
                            f"{line} was changed)")
    return problems
