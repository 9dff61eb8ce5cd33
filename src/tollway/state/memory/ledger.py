"""The ledger in process memory: spend per dimension and hour, and the sessions' steps.

Bounded so it cannot grow without end: hourly buckets older than `retention_hours` go, at
most `max_sessions` sessions are kept (least recently active dropped first), each with its
last `session_steps` steps. Recording a request also settles it: the guards' reservations
and token buckets, and the breakers' outcomes, through references to those facets. A record
is applied once per id (the step's request id, or the settlement's): the same record again
within `DEDUPE_S` is a no-op, as on Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from tollway.state.base import Ledger
from tollway.state.breakers import Transition
from tollway.state.guards import Settlement
from tollway.state.lineage import LineageWrite
from tollway.state.memory.breakers import MemoryBreakers
from tollway.state.memory.guards import MemoryGuards
from tollway.state.memory.lineage import MemoryLineage
from tollway.state.records import SPEND_DIMENSIONS, SpendRow, StepRecord, merge_rows
from tollway.state.sessions import (
    HOUR,
    Session,
    session_spend,
    session_summary,
    session_view,
    top_sessions,
)

DEDUPE_S = 900.0
_DEDUPE_MAX = 200_000


def record_id(step: StepRecord | None, settle: Settlement | None) -> str:
    """What a record is deduplicated on: its step's request id, else its settlement's."""
    if step is not None:
        return step.request_id
    return settle.request_id if settle is not None else ""


class MemoryLedger(Ledger):
    def __init__(self, guards: MemoryGuards, breakers: MemoryBreakers, lineage: MemoryLineage,
                 session_steps: int = 500, max_sessions: int = 20_000,
                 retention_hours: int = 24 * 35) -> None:
        self._guards = guards
        self._breakers = breakers
        self._lineage = lineage
        self._session_steps = session_steps
        self._max_sessions = max_sessions
        self._retention = retention_hours
        # (dimension, hour) -> key -> totals; the session dimension lives in _sessions.
        self._buckets: dict[tuple[str, int], dict[str, SpendRow]] = {}
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._newest_hour = 0
        self._done: OrderedDict[str, float] = OrderedDict()  # record id -> when applied

    def _seen(self, rid: str) -> bool:
        """Whether this record was applied already; remembers it if not."""
        if not rid:
            return False
        if rid in self._done:
            return True
        now = time.monotonic()
        done = self._done
        done[rid] = now
        while done and (len(done) > _DEDUPE_MAX or next(iter(done.values())) < now - DEDUPE_S):
            done.popitem(last=False)
        return False

    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     lineage: LineageWrite | None = None) -> list[Transition]:
        if self._seen(record_id(step, settle)):
            return []
        if lineage is not None:
            self._lineage.write(lineage, time.time())
        transitions: list[Transition] = []
        if settle is not None:
            self._guards.settle(settle)
            if settle.breakers:
                transitions = self._breakers.apply(settle.breakers)
        if step is not None:
            self._record_step(step)
        return transitions

    async def idle_sessions(self, idle_s: float, limit: int = 1000) -> list[float]:
        cutoff = time.time() - idle_s
        out = []
        for s in self._sessions.values():  # least recently active first
            if s.last >= cutoff or len(out) >= limit:
                break
            if not s.observed:
                s.observed = True
                out.append(s.totals.cost_usd)
        return out

    def _record_step(self, step: StepRecord) -> None:
        hour = int(step.time // HOUR)
        if hour > self._newest_hour:
            self._newest_hour = hour
            self._expire(hour)
        for dim in SPEND_DIMENSIONS:
            if dim == "session":
                continue
            bucket = self._buckets.setdefault((dim, hour), {})
            for key in step.keys(dim):
                row = bucket.get(key)
                if row is None:
                    row = bucket[key] = SpendRow(key)
                row.add(step)
        s = self._sessions.get(step.session)
        if s is None:
            s = Session(step.agent, step.team, step.time, step.time,
                        deque(maxlen=self._session_steps))
            self._sessions[step.session] = s
            if len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(step.session)
        s.last = max(s.last, time.time())
        s.step_count += 1
        s.steps.append(step)
        s.totals.add(step)

    def _expire(self, hour: int) -> None:
        oldest = hour - self._retention
        for k in [k for k in self._buckets if k[1] < oldest]:
            del self._buckets[k]

    async def spend(self, by: str, since: float | None = None) -> list[SpendRow]:
        if by == "session":
            rows = [session_spend(sid, s, since) for sid, s in self._sessions.items()
                    if since is None or s.last >= since]
            return sorted(rows, key=lambda r: -r.cost_usd)
        first_hour = int(since // HOUR) if since is not None else 0
        return merge_rows(bucket for (dim, hour), bucket in self._buckets.items()
                          if dim == by and hour >= first_hour)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        s = self._sessions.get(session_id)
        if s is None:
            return None
        return session_view(session_id, s, self._lineage.children(session_id, time.time()))

    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for sid, s in self._sessions.items():
            if agent is not None and s.agent != agent:
                continue
            if since is not None and s.last < since:
                continue
            out.append(session_summary(sid, s))
        return top_sessions(out, sort, limit)
