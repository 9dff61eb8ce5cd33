"""The State interface, in facets. Every backend passes the same tests.

A `State` is a backend's lifecycle (`start`, `close`, `ready`) plus one object per job:

- `guards`: before a request, one call (`admit`): kill switch, loop counters, rate limits,
  budget reservations.
- `ledger`: after a request, one call (`record`): settlement, breaker outcomes, spend and
  the session step; and the reports read from it.
- `breakers`: circuit breaker probes and views.
- `flags`: kill (sessions) and pause (agents) switches, as the admin API sets them.
- `cache`: stored answers of the exact and semantic caches.
- `tools`: tool-call repeats and approvals (tollway.state.toolstate).
- `keys`: runtime virtual keys, made through the admin API (tollway.state.keys).

A backend's facets share its storage (one Redis connection, or the process's memory); the
split is by job, so that each caller depends on the one it uses.
"""

from __future__ import annotations

import abc
from typing import Any

from tollway.state.breakers import BreakerPolicy, BreakerView, Transition
from tollway.state.guards import Admission, Settlement, Verdict
from tollway.state.keys import KeyStore
from tollway.state.lineage import LineageWrite
from tollway.state.records import SpendRow, StepRecord
from tollway.state.toolstate import ToolState


class StateUnavailable(Exception):
    """The shared state could not be reached; the guard applies state.on_failure.

    `sent`: the command left the gateway before the failure (a timeout), so it may still be
    applied when the state answers again: a reservation it made must then be released."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class Guards(abc.ABC):
    """What the guard asks before a request."""

    @abc.abstractmethod
    async def admit(self, adm: Admission) -> Verdict:
        """Kill switch, loop counters, rate limits and budget reservations, atomically.

        Rate limits and reservations are all-or-nothing: a refused request consumes none.
        Loop counters count every request that got past the kill switch.
        """

    @abc.abstractmethod
    async def budget_usage(self, key: str) -> tuple[float, float]:
        """(spent, reserved) of one budget key (scope:name:period)."""


class Ledger(abc.ABC):
    """What happened: written once after each request, read by the admin API and metrics."""

    @abc.abstractmethod
    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     lineage: LineageWrite | None = None) -> list[Transition]:
        """Settle the reservation and token buckets, apply breaker outcomes, attribute the
        step's spend to every dimension and append it to its session (step None: only the
        settlement), and leave what the answer said for lineage to find. Returns the breaker
        transitions the outcomes caused."""

    @abc.abstractmethod
    async def spend(self, by: str, since: float | None = None) -> list[SpendRow]:
        """Totals per key of one dimension, most expensive first."""

    @abc.abstractmethod
    async def session(self, session_id: str) -> dict[str, Any] | None:
        """The session's steps in order, with its totals; None when unknown."""

    @abc.abstractmethod
    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        """Session summaries, for finding the expensive and the busy ones."""

    @abc.abstractmethod
    async def idle_sessions(self, idle_s: float, limit: int = 1000) -> list[float]:
        """The costs of sessions quiet for idle_s, each handed out once (for the histogram)."""


class Breakers(abc.ABC):
    """Circuit breakers per target; outcomes arrive through `Ledger.record`."""

    @abc.abstractmethod
    async def probe(self, target: str, policy: BreakerPolicy,
                    ) -> tuple[bool, BreakerView, Transition | None]:
        """For a target that looked open: may this caller try it now (a half-open probe)?"""

    @abc.abstractmethod
    async def views(self, targets: list[str] | None = None) -> dict[str, BreakerView]:
        """Current breakers (all known ones when targets is None)."""


class Flags(abc.ABC):
    """Kill and pause switches; `Guards.admit` refuses what they name."""

    @abc.abstractmethod
    async def set(self, kind: str, name: str, on: bool) -> None:
        """kind "session": kill it; kind "agent": pause it (on=False resumes)."""

    @abc.abstractmethod
    async def all(self) -> dict[str, list[str]]:
        """{"session": [killed...], "agent": [paused...]}"""


class Cache(abc.ABC):
    """Cached answers by key, with a TTL."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """A cached answer, or None (also when the state is unreachable: a miss)."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store an answer for ttl_s; best effort."""

    @abc.abstractmethod
    async def purge(self, pattern: str) -> int:
        """Drop every entry whose key matches the glob pattern; how many went."""

    @abc.abstractmethod
    async def size(self, prefix: str = "c:") -> int:
        """Entries stored whose key starts with prefix (for tollway_cache_entries)."""


class State(abc.ABC):
    """Shared mutable state: one call before a request (`guards.admit`), one after
    (`ledger.record`)."""

    backend: str = "abstract"
    guards: Guards
    ledger: Ledger
    breakers: Breakers
    flags: Flags
    cache: Cache
    tools: ToolState  # tool-call repeats and approvals (tollway.state.toolstate)
    keys: KeyStore  # runtime virtual keys (tollway.state.keys)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect, load scripts."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def health(self) -> dict[str, Any]:
        """What /readyz says of the state: the backend, and anything not as it should be
        (the state down, records waiting to be written or dropped)."""
        return {"state": self.backend}

    async def ready(self) -> bool:
        return True
