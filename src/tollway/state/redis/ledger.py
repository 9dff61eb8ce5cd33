"""The ledger on Redis: one EVALSHA of record.lua after each request, and the reports.

record.lua settles the budget reservations, corrects the token buckets, applies the
circuit breaker outcomes, adds the step's spend to its hour per dimension and appends it
to its session, atomically. `record` never raises for Redis being down: the record joins a
queue of at most `pending_max` (the oldest dropped first, counted as "dropped"), written in
order when the link finds Redis again and before it reports the state up; breaker outcomes
in it are applied then, at the time they were recorded, and the transitions they cause are
only logged.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import fields
from typing import Any

import orjson
from redis.exceptions import RedisError

from tollway.state.base import Ledger
from tollway.state.breakers import Transition
from tollway.state.guards import Settlement
from tollway.state.records import SPEND_DIMENSIONS, SpendRow, StepRecord, merge_rows
from tollway.state.redis.link import DOWN_ERRORS, RedisLink, num
from tollway.state.sessions import (
    HOUR,
    Session,
    session_spend,
    session_summary,
    session_view,
    top_sessions,
)

log = logging.getLogger("tollway.state.redis")

_BUCKET_DIMS = ("agent", "team", "model", "provider", "tag")  # spend kept per hour
_FIELDS = {"requests": "requests", "input": "input_tokens", "output": "output_tokens",
           "cached": "cached_tokens", "cache_write": "cache_write_tokens"}
_STEP_FIELDS = frozenset(f.name for f in fields(StepRecord))

Pending = tuple[StepRecord | None, Settlement | None, float]


class RedisLedger(Ledger):
    def __init__(self, link: RedisLink, session_steps: int, max_sessions: int,
                 retention_hours: int, pending_max: int) -> None:
        self._link = link
        self._session_steps = session_steps
        self._max_sessions = max_sessions
        self._retention = retention_hours
        self._pending: deque[Pending] = deque()
        self._pending_max = pending_max
        self._record_script = link.script("record.lua")
        self._idle_script = link.script("idle.lua")
        link.on_recovery(self._flush)

    @property
    def pending(self) -> int:
        """Steps waiting for Redis to come back."""
        return len(self._pending)

    # --- after each request -------------------------------------------------------------
    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     ) -> list[Transition]:
        """Never raises for Redis being down: the record is queued and written on recovery
        (and then no transitions are returned: they happen when it is written)."""
        if step is None and (settle is None or not (settle.budgets or settle.token_rates
                                                     or settle.breakers)):
            return []
        item = (step, settle, time.time())
        if not self._link.up:
            self._enqueue(item)
            return []
        try:
            return await self._write(item)
        except DOWN_ERRORS as exc:
            self._link.mark_down("record", exc)
            self._enqueue(item)
        except RedisError:
            self._link.count("record")
            log.exception("redis refused record %s", _what(item))
        return []

    def _enqueue(self, item: Pending) -> None:
        if self._pending_max <= 0:
            self._link.count("dropped")
            return
        while len(self._pending) >= self._pending_max:
            self._pending.popleft()
            self._link.count("dropped")
        self._pending.append(item)

    async def _write(self, item: Pending) -> list[Transition]:
        """One EVALSHA of record.lua (its KEYS and ARGV layout is documented there)."""
        step, settle, now = item
        k = self._link.key
        budgets = settle.budgets if settle is not None else []
        rates = settle.token_rates if settle is not None else []
        outcomes = settle.breakers if settle is not None else []
        keys = [k("br", "all")]
        args: list[str | int] = [num(now), len(budgets), len(rates), len(outcomes),
                                 0 if step is None else 1]
        for bc, actual in budgets:
            keys.append(k("bu", bc.key))
            args += [num(bc.reserve), num(actual), bc.ttl_s]
        for rc, delta in rates:
            keys.append(k("rl", rc.key))
            args.append(num(delta * rc.interval_us))
        for o in outcomes:
            p = o.policy
            keys.append(k("br", o.target))
            args += [o.target, 1 if o.ok else 0, num(o.latency_s), 1 if o.probe else 0,
                     _opt(o.retry_after_s), p.consecutive_failures, num(p.failure_rate),
                     num(p.window_s), p.min_requests, _opt(p.latency_s), num(p.open_s)]
        if step is not None:
            sid = step.session
            hour = int(step.time // HOUR)
            h = str(hour)
            keys += [k("sessions"), k("unobserved"), k("sp", "hours"),
                     k("se", sid), k("sl", sid),
                     *(k("sp", dim, h) for dim in _BUCKET_DIMS)]
            args += [
                sid, self._retention, self._session_steps, self._max_sessions, hour,
                orjson.dumps(step.to_dict()).decode(), step.agent, step.team, step.model,
                step.provider, num(step.time), step.input_tokens, step.output_tokens,
                step.cached_tokens, step.cache_write_tokens, num(step.cost_usd),
                len(step.tags), *step.tags]
        dropped, flat = await self._record_script(keys=keys, args=args)
        if dropped:  # sessions beyond max_sessions: free their steps now, not at their TTL
            try:
                await self._link.redis.unlink(*[k(kind, s) for s in dropped
                                                for kind in ("se", "sl")])
            except RedisError:
                log.debug("could not unlink dropped sessions", exc_info=True)
        return [Transition(*flat[i:i + 3]) for i in range(0, len(flat), 3)]

    async def _flush(self) -> int | None:
        """Write the queue in order (the link runs this on recovery, before it is up);
        how many were written, or None when Redis went away again."""
        flushed = 0
        while self._pending:
            item = self._pending.popleft()
            try:
                for t in await self._write(item):
                    log.info("breaker %s: %s -> %s (an outcome queued while redis was down)",
                             t.target, t.before, t.after)
            except DOWN_ERRORS:
                self._pending.appendleft(item)
                self._link.count("record")
                return None
            except RedisError:  # refused for good (not for being down): it cannot succeed
                log.exception("queued record %s refused by redis; dropped", _what(item))
                self._link.count("dropped")
            flushed += 1
        return flushed

    # --- reports -----------------------------------------------------------------------
    async def idle_sessions(self, idle_s: float, limit: int = 1000) -> list[float]:
        """Pop atomically (so each session is handed out once across processes), then read
        the costs: a session's keys are not known in advance, so the script can't."""
        link = self._link
        cutoff = time.time() - idle_s
        ids: list[str] = await link.call("idle", lambda: self._idle_script(
            keys=[link.key("unobserved")], args=[num(cutoff), limit]))
        if not ids:
            return []
        costs = await link.pipelined("idle", [("hget", link.key("se", s), "cost") for s in ids])
        return [float(c) for c in costs if c is not None]

    async def _listed(self, since: float | None) -> list[str]:
        """Sessions least recently active first, as the memory ledger keeps them."""
        link = self._link
        lo = num(since) if since is not None else "-inf"
        return await link.call("query", lambda: link.redis.zrangebyscore(
            link.key("sessions"), lo, "+inf"))

    async def _sessions(self, ids: list[str], with_steps: bool) -> list[tuple[str, Session]]:
        k = self._link.key
        cmds: list[tuple[Any, ...]] = []
        for sid in ids:
            cmds.append(("hgetall", k("se", sid)))
            if with_steps:
                cmds.append(("lrange", k("sl", sid), 0, -1))
        res = await self._link.pipelined("query", cmds)
        per = 2 if with_steps else 1
        out = []
        for i, sid in enumerate(ids):
            summary = res[i * per]
            if not summary:  # expired or dropped between the two reads
                continue
            steps = [_step(js) for js in res[i * per + 1]] if with_steps else []
            out.append((sid, self._session_of(summary, steps)))
        return out

    def _session_of(self, h: dict[str, str], steps: list[StepRecord]) -> Session:
        totals = SpendRow("", requests=int(h["requests"]), input_tokens=int(h["input"]),
                          output_tokens=int(h["output"]), cached_tokens=int(h["cached"]),
                          cache_write_tokens=int(h["cache_write"]), cost_usd=float(h["cost"]))
        return Session(h["agent"], h["team"], float(h["first"]), float(h["last"]),
                       deque(steps, maxlen=self._session_steps), totals, int(h["steps"]))

    async def spend(self, by: str, since: float | None = None) -> list[SpendRow]:
        if by == "session":
            rows = [session_spend(sid, s, since) for sid, s in
                    await self._sessions(await self._listed(since), since is not None)]
            return sorted(rows, key=lambda r: -r.cost_usd)
        if by not in SPEND_DIMENSIONS:
            return []
        link = self._link
        first_hour = int(since // HOUR) if since is not None else 0
        hours: list[str] = await link.call("query", lambda: link.redis.zrangebyscore(
            link.key("sp", "hours"), first_hour, "+inf"))
        buckets = await link.pipelined("query", [("hgetall", link.key("sp", by, h))
                                                 for h in hours])
        # oldest hour first, as memory merges them
        return merge_rows(_bucket_rows(bucket) for bucket in buckets)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        k = self._link.key

        async def run() -> list[Any]:
            async with self._link.redis.pipeline(transaction=True) as pipe:
                pipe.zscore(k("sessions"), session_id)
                pipe.hgetall(k("se", session_id))
                pipe.lrange(k("sl", session_id), 0, -1)
                return await pipe.execute()

        score, summary, steps = await self._link.call("query", run)
        if score is None or not summary:
            return None
        return session_view(session_id,
                            self._session_of(summary, [_step(js) for js in steps]))

    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        out = [session_summary(sid, s) for sid, s in
               await self._sessions(await self._listed(since), False)
               if agent is None or s.agent == agent]
        return top_sessions(out, sort, limit)

def _opt(x: float | None) -> str:
    """An optional float for a script: '' for None."""
    return "" if x is None else num(x)


def _what(item: Pending) -> str:
    step = item[0]
    return f"step {step.request_id}" if step is not None else "settlement (no step)"


def _step(js: str) -> StepRecord:
    d = orjson.loads(js)
    d["tags"] = tuple(d.get("tags", ()))
    d["flags"] = tuple(d.get("flags", ()))
    d["tool_calls"] = tuple(d.get("tool_calls", ()))
    return StepRecord(**{k: v for k, v in d.items() if k in _STEP_FIELDS})


def _bucket_rows(bucket: dict[str, str]) -> dict[str, SpendRow]:
    rows: dict[str, SpendRow] = {}
    for name, value in bucket.items():
        key, _, kind = name.rpartition("|")
        row = rows.get(key)
        if row is None:
            row = rows[key] = SpendRow(key)
        if kind == "cost":
            row.cost_usd = float(value)
        elif kind in _FIELDS:
            setattr(row, _FIELDS[kind], int(value))
    return rows
