"""An on-disk cache of model calls, so an interrupted run resumes without paying twice.

One sqlite row per call, committed as soon as the call finishes. The key is a hash of
everything that determines the answer (model, endpoint, messages, sampling settings, seed)
and nothing else: credentials are never part of a request's description, so they can reach
neither the key nor the stored value.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CallCache"]


class CallCache:
    """sqlite (WAL) table ``key -> JSON value``, safe to share between threads and processes.

    Calls are fast enough to run from an event loop: a lookup is one indexed read and a
    write is one small commit.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        )

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """sha256 of the canonical JSON of ``request`` (sorted keys, no whitespace)."""
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

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
