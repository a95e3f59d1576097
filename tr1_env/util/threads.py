"""Torch's thread count for one block of work, given back after: shared by the SB3 baselines and local LLMs.

torch is imported only when the block runs, so ``tr1_env`` still imports without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``n`` torch threads inside (None: unchanged), the caller's setting back after. On a 2-core machine
    shared with other jobs (load ~5), SmolLM2 took 3-8 s per decode step on 2 threads and 0.5 s on one, and
    2.5x longer per prompt token; SB3's small MLPs trained more than tenfold slower (measured): a thread that
    waits for a busy core stalls every operation."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
