"""Rate limits and a spending cap for API models, shared by every caller of a run.

Providers limit requests and tokens per minute per model and bill per token; a run with many workers must stay
under both limits together and stop before its bill passes ``--max-cost-usd``. :class:`ApiGovernor` holds one
pacing clock per model and limit (the generic cell rate algorithm: the clock advances by ``cost / rate`` per request
and a request may start once that leaves it at most one second ahead of now, so a burst is one second's worth, or
one request where a single one is larger) and the money
spent and reserved. Each call :meth:`~ApiGovernor.reserve`\\ s first (it learns how long to wait, or that the cap
would be passed) and :meth:`~ApiGovernor.settle`\\ s after with what the call cost. Within a process one lock
guards it; :meth:`~ApiGovernor.share` moves it into a Ray actor so every worker of a cluster draws on the same
clocks and the same budget (the object then pickles as a handle to that actor).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from tr1_env.execution.llm_cost import model_price

__all__ = ["CHARS_PER_TOKEN", "ApiGovernor", "BudgetExhausted", "Reservation"]

#: Characters per token of a prompt, on the low side (numbers and tickers tokenise short): the estimate a rate limit
#: and the budget reserve before a call, and the run's cost estimate uses.
CHARS_PER_TOKEN = 3.0
BURST_S = 1.0  # a limit admits at most one second's worth of requests (or tokens) at once


class BudgetExhausted(RuntimeError):
    """The next call would take the run past ``--max-cost-usd``: the run stops, resumable (one line, exit 1)."""


@dataclass(frozen=True)
class Reservation:
    """What a call may do: start after ``delay`` seconds, having reserved ``usd`` of the budget."""

    delay: float
    usd: float


class _Clocks:
    """The state behind an :class:`ApiGovernor`: pacing clocks per (model, limit) and the money; not thread-safe
    by itself (the governor's lock, or a Ray actor's one-call-at-a-time, guards it)."""

    def __init__(self, rpm: dict[str, float], tpm: dict[str, float], max_cost_usd: float | None, spent: float):
        self.rpm, self.tpm, self.cap = dict(rpm), dict(tpm), max_cost_usd
        self.spent, self.reserved = float(spent), 0.0
        self.slots: dict[tuple[str, str], float] = {}

    def reserve(self, model: str, prompt_tokens: int, max_tokens: int) -> Reservation:
        usd = 0.0
        if self.cap is not None:
            price = model_price(model)
            usd = price.cost(prompt_tokens, max_tokens) if price is not None else math.inf
            if self.spent + self.reserved + usd > self.cap + 1e-12:
                raise BudgetExhausted(
                    f"--max-cost-usd {self.cap:g}: the next {model} call (up to ${usd:.4f}) would take the run past "
                    f"the budget (${self.spent:.4f} spent, ${self.reserved:.4f} in flight)")
            self.reserved += usd
        now = time.monotonic()
        paced = [(key, amount / (rate / 60.0)) for kind, limits, amount in
                 (("rpm", self.rpm, 1.0), ("tpm", self.tpm, float(prompt_tokens + max_tokens)))
                 if (rate := limits.get(model, limits.get("*"))) is not None for key in [(model, kind)]]
        start = max([now, *(self.slots.get(key, now) + step - max(BURST_S, step) for key, step in paced)])
        for key, step in paced:
            self.slots[key] = max(self.slots.get(key, now), start) + step
        return Reservation(start - now, usd)

    def settle(self, reservation: Reservation, usd: float | None) -> None:
        """The call is over: its reservation is released and what it cost (its reservation when unknown) spent."""
        self.reserved = max(0.0, self.reserved - reservation.usd)
        self.spent += reservation.usd if usd is None or math.isnan(usd) else usd

    def state(self) -> tuple[float, float]:
        return self.spent, self.reserved


class ApiGovernor:
    """Requests and tokens per minute per model (``"*"``: every model) and a spending cap, for any number of
    concurrent callers; ``spent`` is what the run had spent before (its saved decisions)."""

    def __init__(self, rpm: dict[str, float] | None = None, tpm: dict[str, float] | None = None,
                 max_cost_usd: float | None = None, spent: float = 0.0):
        self._clocks = _Clocks(rpm or {}, tpm or {}, max_cost_usd, spent)
        self._lock = threading.Lock()
        self._actor = None

    @property
    def active(self) -> bool:
        """Whether it limits anything (a governor with no limit and no cap is skipped by the callers)."""
        clocks = self._clocks
        return self._actor is not None or bool(clocks.rpm or clocks.tpm or clocks.cap is not None)

    @property
    def shared(self) -> bool:
        """Whether its clocks are a Ray actor's (each call then a round trip)."""
        return self._actor is not None

    def share(self) -> None:
        """Move the clocks into a Ray actor (Ray must be initialised): copies of this object in Ray workers, and
        this one, then draw on the same limits and budget."""
        import ray

        if self._actor is None:
            c = self._clocks
            self._actor = ray.remote(num_cpus=0)(_Clocks).remote(c.rpm, c.tpm, c.cap, c.spent)

    def reserve(self, model: str, prompt_tokens: int, max_tokens: int) -> Reservation:
        """Room for one call of at most ``prompt_tokens + max_tokens`` tokens: when it may start, and the money it
        holds back; :class:`BudgetExhausted` when the cap would be passed."""
        if self._actor is not None:
            import ray

            return ray.get(self._actor.reserve.remote(model, prompt_tokens, max_tokens))
        with self._lock:
            return self._clocks.reserve(model, prompt_tokens, max_tokens)

    def settle(self, reservation: Reservation, usd: float | None) -> None:
        if self._actor is not None:  # not waited for: the actor runs one caller's calls in order
            self._actor.settle.remote(reservation, usd)
            return
        with self._lock:
            self._clocks.settle(reservation, usd)

    def spent(self) -> float:
        """Dollars spent so far (the saved decisions' and this run's calls)."""
        if self._actor is not None:
            import ray

            return ray.get(self._actor.state.remote())[0]
        with self._lock:
            return self._clocks.state()[0]

    def __eq__(self, other: object) -> bool:
        """The same governor, or handles to the same shared clocks (a Ray worker keeps what it built for one run)."""
        if not isinstance(other, ApiGovernor):
            return NotImplemented
        return self is other or (self._actor is not None and self._actor == other._actor)

    def __hash__(self) -> int:
        return hash(self._actor) if self._actor is not None else id(self)

    def __getstate__(self) -> dict:
        if self._actor is None and self.active:
            raise TypeError("an ApiGovernor with limits is shared between processes only after share() (a Ray actor)")
        return {"actor": self._actor}

    def __setstate__(self, state: dict) -> None:
        """A handle to the shared clocks, or a governor that limits nothing (as the one pickled)."""
        self._actor, self._lock = state["actor"], threading.Lock()
        self._clocks = _Clocks({}, {}, None, 0.0) if self._actor is None else None
