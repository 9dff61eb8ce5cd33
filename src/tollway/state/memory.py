"""In-process state: the default, for one process. Bounded so it cannot grow without end."""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any

from tollway.state.base import SPEND_DIMENSIONS, SpendRow, State, StepRecord, merge_rows
from tollway.state.breakers import (
    BreakerPolicy,
    BreakerView,
    Transition,
    apply_outcome,
    take_probe,
)
from tollway.state.guards import Admission, Settlement, Verdict
from tollway.state.toolstate import MemoryToolState

HOUR = 3600
EPSILON = 1e-12


@dataclass(slots=True)
class _Session:
    agent: str
    team: str
    first: float
    last: float
    steps: deque[StepRecord]
    totals: SpendRow = field(default_factory=lambda: SpendRow(""))
    step_count: int = 0
    observed: bool = False  # handed out to the session-cost histogram


class MemoryState(State):
    backend = "memory"

    def __init__(self, session_steps: int = 500, max_sessions: int = 20_000,
                 retention_hours: int = 24 * 35, cache_entries: int = 10_000) -> None:
        self._session_steps = session_steps
        self._max_sessions = max_sessions
        self._retention = retention_hours
        # (dimension, hour) -> key -> totals; the session dimension lives in _sessions.
        self._buckets: dict[tuple[str, int], dict[str, SpendRow]] = {}
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._newest_hour = 0
        # guards
        self._killed: set[str] = set()
        self._paused: set[str] = set()
        self._tat: dict[str, float] = {}  # GCRA theoretical arrival time, µs
        self._budgets: dict[str, list[float]] = {}  # key -> [spent, reserved, expires]
        self._fingerprints: dict[tuple[str, str], list[float]] = {}  # -> [count, expires]
        self._steps: OrderedDict[str, list[float]] = OrderedDict()  # session -> [n, first]
        self._chains: OrderedDict[str, list[Any]] = OrderedDict()  # chain -> [agent, rounds]
        self._admits = 0
        self._breakers: dict[str, BreakerView] = {}
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._cache_entries = cache_entries
        self.tools = MemoryToolState()

    # --- guards -------------------------------------------------------------------------
    async def admit(self, adm: Admission) -> Verdict:
        v = Verdict()
        if adm.session in self._killed:
            v.allowed, v.denied_by = False, "killed"
            return v
        if adm.agent in self._paused:
            v.allowed, v.denied_by = False, "paused"
            return v
        now = time.time()
        self._admits += 1
        if self._admits % 4096 == 0:
            self._purge(now)
        if adm.loop is not None:
            self._count_loop(adm, v, now)
        now_us = now * 1e6
        new_tats = []
        for rc in adm.rates:
            tat = max(self._tat.get(rc.key, now_us), now_us)
            new_tat = tat + rc.interval_us * rc.cost
            allow_at = new_tat - rc.tolerance_us
            if allow_at > now_us:
                v.allowed, v.denied_by, v.rate = False, "rate", rc
                v.retry_after_s = (allow_at - now_us) / 1e6
                return v
            new_tats.append((rc.key, new_tat))
            v.rate_state.append((int((rc.tolerance_us - (new_tat - now_us)) / rc.interval_us),
                                 (new_tat - now_us) / 1e6))
        for bc in adm.budgets:
            spent, reserved = self._budget(bc.key, now)
            v.budget_state.append((spent, reserved))
            if spent + reserved + bc.reserve > bc.limit + EPSILON:
                v.allowed, v.denied_by, v.budget = False, "budget", bc
                return v
        for key, tat in new_tats:
            self._tat[key] = tat
        for bc in adm.budgets:
            entry = self._budgets.get(bc.key)
            if entry is None:
                entry = self._budgets[bc.key] = [0.0, 0.0, now + bc.ttl_s if bc.ttl_s else 0.0]
            entry[1] += bc.reserve
        return v

    def _count_loop(self, adm: Admission, v: Verdict, now: float) -> None:
        lp = adm.loop
        assert lp is not None
        if lp.fingerprint:
            fkey = (lp.session, lp.fingerprint)
            entry = self._fingerprints.get(fkey)
            if entry is None or entry[1] < now:
                entry = self._fingerprints[fkey] = [0, now + lp.fp_window_s]
            entry[0] += 1
            v.repeats = int(entry[0])
        if lp.steps:
            st = self._steps.get(lp.session)
            if st is None:
                st = self._steps[lp.session] = [0, now]
                if len(self._steps) > self._max_sessions:
                    self._steps.popitem(last=False)
            else:
                self._steps.move_to_end(lp.session)
            st[0] += 1
            v.steps, v.age_s = int(st[0]), now - st[1]
        if lp.chain:
            ch = self._chains.get(lp.chain)
            if ch is None:
                ch = self._chains[lp.chain] = [lp.agent, 0]
                if len(self._chains) > self._max_sessions:
                    self._chains.popitem(last=False)
            elif ch[0] != lp.agent:
                ch[0] = lp.agent
                ch[1] += 1
            v.rounds = int(ch[1])

    def _budget(self, key: str, now: float) -> tuple[float, float]:
        entry = self._budgets.get(key)
        if entry is None:
            return 0.0, 0.0
        if entry[2] and entry[2] < now:
            del self._budgets[key]
            return 0.0, 0.0
        return entry[0], entry[1]

    def _purge(self, now: float) -> None:
        for k in [k for k, e in self._fingerprints.items() if e[1] < now]:
            del self._fingerprints[k]
        for k in [k for k, e in self._budgets.items() if e[2] and e[2] < now]:
            del self._budgets[k]

    def _settle(self, settle: Settlement) -> None:
        now = time.time()
        for bc, actual in settle.budgets:
            entry = self._budgets.get(bc.key)
            if entry is None:
                entry = self._budgets[bc.key] = [0.0, 0.0, now + bc.ttl_s if bc.ttl_s else 0.0]
            entry[1] = max(0.0, entry[1] - bc.reserve)
            entry[0] += actual
        for rc, delta in settle.token_rates:
            if rc.key in self._tat:
                self._tat[rc.key] += delta * rc.interval_us

    async def cache_get(self, key: str) -> bytes | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[0] < time.time():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return hit[1]

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache[key] = (time.time() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    async def cache_purge(self, pattern: str) -> int:
        gone = [k for k in self._cache if fnmatch.fnmatchcase(k, pattern)]
        for k in gone:
            del self._cache[k]
        return len(gone)

    async def cache_size(self, prefix: str = "c:") -> int:
        return sum(1 for k in self._cache if k.startswith(prefix))

    async def budget_usage(self, key: str) -> tuple[float, float]:
        return self._budget(key, time.time())

    async def set_flag(self, kind: str, name: str, on: bool) -> None:
        target = self._killed if kind == "session" else self._paused
        if on:
            target.add(name)
        else:
            target.discard(name)

    async def flags(self) -> dict[str, list[str]]:
        return {"session": sorted(self._killed), "agent": sorted(self._paused)}

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

    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     ) -> list[Transition]:
        transitions: list[Transition] = []
        if settle is not None:
            self._settle(settle)
            now = time.time()
            for o in settle.breakers:
                v = self._breakers.get(o.target)
                if v is None:
                    v = self._breakers[o.target] = BreakerView(o.target, window_start=now)
                t = apply_outcome(v, o, now)
                if t is not None:
                    transitions.append(t)
        if step is not None:
            self._record_step(step)
        return transitions

    async def breaker_probe(self, target: str, policy: BreakerPolicy,
                            ) -> tuple[bool, BreakerView, Transition | None]:
        v = self._breakers.get(target)
        if v is None:
            v = self._breakers[target] = BreakerView(target, window_start=time.time())
        allowed, t = take_probe(v, policy, time.time())
        return allowed, replace(v), t

    async def breaker_views(self, targets: list[str] | None = None) -> dict[str, BreakerView]:
        names = self._breakers.keys() if targets is None else targets
        return {n: replace(self._breakers[n]) for n in names if n in self._breakers}

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
            s = _Session(step.agent, step.team, step.time, step.time,
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
        return merge_rows(bucket for (dim, hour), bucket in self._buckets.items()
                          if dim == by and hour >= first_hour)

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
