"""An on-disk cache of model calls, so an interrupted run resumes without paying twice.

One sqlite row per call, committed as soon as the call finishes. The key is a hash of
everything that determines the answer (model, endpoint, messages, sampling settings, seed)
and nothing else: credentials are never part of a request's description, so they can reach
neither the key nor the stored value.

A damaged cache (not a database, a malformed page, a garbled value) costs only what it held: the
file is moved aside (named in a warning) and a fresh one started, or the bad row dropped, and the
calls it held are made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CallCache"]

logger = logging.getLogger(__name__)


class CallCache:
    """sqlite (WAL) table ``key -> JSON value``, safe to share between threads and processes.

    Calls are fast enough to run from an event loop: a lookup is one indexed read and a
    write is one small commit.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # "file is not a database", a malformed page
            self._db = self._replace(exc)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS calls "
                       "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")
            problems = db.execute("PRAGMA quick_check").fetchall()  # one pass over every page (~1 s per 100 MB)
            if problems != [("ok",)]:
                raise sqlite3.DatabaseError(f"quick_check: {problems[0][0]}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _replace(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move the damaged file (and its WAL) aside, say so, and start an empty cache in its place."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(Path(f"{aside}{suffix}"))
        logger.warning("call cache %s is damaged (%s): moved to %s; its calls will be made again",
                       self.path, exc, aside.name)
        return self._open()

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """sha256 of the canonical JSON of ``request`` (sorted keys, no whitespace)."""
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None (asked again) when there is none or it is damaged."""
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as exc:  # damage the open-time check did not reach
                self._db.close()
                self._db = self._replace(exc)
                return None
            if row is None:
                return None
            try:
                value = json.loads(row[0])
                if isinstance(value, dict):
                    return value
            except ValueError:
                pass
            self._db.execute("DELETE FROM calls WHERE key = ?", (key,))
        logger.warning("call cache %s: the value under key %s... is garbled; dropped, the call will be made again",
                       self.path, key[:12])
        return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store and commit at once (autocommit), so a crash right after keeps this call."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, value, created) VALUES (?, ?, ?)",
                (key, json.dumps(value, ensure_ascii=False), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
