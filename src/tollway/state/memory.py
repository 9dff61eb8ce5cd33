"""In-process state: the default, for one process. Bounded so it cannot grow without end."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from tollway.state.base import SPEND_DIMENSIONS, SpendRow, State, StepRecord

HOUR = 3600


@dataclass(slots=True)
class _Session:
    agent: str
    team: str
    first: float
    last: float
    steps: deque[StepRecord]
    totals: SpendRow = field(default_factory=lambda: SpendRow(""))
    step_count: int = 0


class MemoryState(State):
    backend = "memory"

    def __init__(self, session_steps: int = 500, max_sessions: int = 20_000,
                 retention_hours: int = 24 * 35) -> None:
        self._session_steps = session_steps
        self._max_sessions = max_sessions
        self._retention = retention_hours
        # (dimension, hour) -> key -> totals; the session dimension lives in _sessions.
        self._buckets: dict[tuple[str, int], dict[str, SpendRow]] = {}
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._newest_hour = 0

    async def record(self, step: StepRecord) -> None:
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
            s = _Session(step.agent, step.team, step.time, step.time,
                         deque(maxlen=self._session_steps))
            self._sessions[step.session] = s
            if len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(step.session)
        s.last = max(s.last, step.time)
        s.step_count += 1
        s.steps.append(step)
        s.totals.add(step)

    def _expire(self, hour: int) -> None:
        oldest = hour - self._retention
        for k in [k for k in self._buckets if k[1] < oldest]:
            del self._buckets[k]

    async def spend(self, by: str, since: float | None = None) -> list[SpendRow]:
        if by == "session":
            rows = []
            for sid, s in self._sessions.items():
                if since is None:
                    row = SpendRow(sid)
                    row.merge(s.totals)
                else:
                    if s.last < since:
                        continue
                    row = SpendRow(sid)
                    for st in s.steps:
                        if st.time >= since:
                            row.add(st)
                row.extra = {"agent": s.agent, "team": s.team}
                rows.append(row)
            return sorted(rows, key=lambda r: -r.cost_usd)
        first_hour = int(since // HOUR) if since is not None else 0
        out: dict[str, SpendRow] = {}
        for (dim, hour), bucket in self._buckets.items():
            if dim != by or hour < first_hour:
                continue
            for key, row in bucket.items():
                acc = out.get(key)
                if acc is None:
                    acc = out[key] = SpendRow(key)
                acc.merge(row)
        return sorted(out.values(), key=lambda r: -r.cost_usd)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        s = self._sessions.get(session_id)
        if s is None:
            return None
        return _session_view(session_id, s)

    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for sid, s in self._sessions.items():
            if agent is not None and s.agent != agent:
                continue
            if since is not None and s.last < since:
                continue
            out.append(_summary(sid, s))
        key = {"cost": "cost_usd", "steps": "steps", "recent": "last"}.get(sort, "cost_usd")
        out.sort(key=lambda d: -d[key])
        return out[:limit]


def _summary(sid: str, s: _Session) -> dict[str, Any]:
    t = s.totals
    return {"session": sid, "agent": s.agent, "team": s.team, "first": s.first, "last": s.last,
            "steps": s.step_count, "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens, "cached_tokens": t.cached_tokens,
            "cost_usd": round(t.cost_usd, 10)}


def _session_view(sid: str, s: _Session) -> dict[str, Any]:
    view = _summary(sid, s)
    view["steps_kept"] = len(s.steps)
    view["steps"] = [{"step": s.step_count - len(s.steps) + i + 1, **st.to_dict()}
                     for i, st in enumerate(s.steps)]
    view["now"] = time.time()
    return view
