"""Where tr1 keeps what it computes once: converted models, call caches, context indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$TR1_CACHE`` or ``~/.cache/tr1``."""
    return Path(os.environ.get("TR1_CACHE") or Path.home() / ".cache" / "tr1").expanduser()
