"""What a ticker-day context shows: its settings (one field per choice, help text mirrored by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ContextConfig:
    window: int = field(default=15, metadata={"help": "trading days of OHLCV + indicators shown"})
    news_buckets: tuple[tuple[int, int, int], ...] = field(default=((0, 3, 10), (4, 10, 20), (11, 30, 20)), metadata={
        "help": "news buckets as (min age days, max age days, max articles)"})
    market_headlines: int = field(default=5, metadata={"help": "market-wide headlines of the last 3 days shown"})
    insider_days: int = field(default=90, metadata={"help": "look-back of insider transactions"})
    stale_days: int = field(default=120, metadata={"help": "analyst trends older than this count as missing"})
    max_chars: int = field(default=24_000, metadata={"help": "character budget of the context (~4 chars/token)"})
    modality_prob: float = field(default=0.7, metadata={"help": "chance each modality is kept in a random subset"})
