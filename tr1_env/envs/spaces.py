"""A text space for LLM observations and actions.

``gymnasium.spaces.Text`` only contains strings drawn from a fixed charset, but prompts and
completions hold any Unicode (news headlines, em dashes, CJK tickers). :class:`UnicodeText`
accepts every ``str`` within its length bounds and still samples from a printable charset.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium import spaces

PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " \n"


class UnicodeText(spaces.Text):
    """Any string of ``min_length`` to ``max_length`` characters; samples are printable ASCII."""

    def __init__(self, max_length: int, *, min_length: int = 0, charset: str = PRINTABLE, seed=None):
        super().__init__(max_length, min_length=min_length, charset=charset, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, UnicodeText) and self.min_length == other.min_length
                and self.max_length == other.max_length and self.character_set == other.character_set)
