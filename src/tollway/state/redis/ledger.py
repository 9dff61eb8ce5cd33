"""The ledger on Redis: one EVALSHA of record.lua after each request, and the reports.

record.lua settles the budget reservations, corrects the token buckets, applies the
circuit breaker outcomes, adds the step's spend to its hour per dimension and appends it
to its session, atomically, and once per record id (the step's request id): a record sent
again is a no-op, so one whose first attempt timed out but did land is not counted twice.

`record` never raises for Redis being down: the record joins a queue of at most
`pending_max` (the oldest dropped first, counted as "dropped"). A record with nothing to
settle (a refusal that never reached an upstream: no cost, no tokens, no reservation, no
breaker outcome) is not queued at all, so refusals during an outage cannot pile up. When
the link finds Redis again the state is up at once and the queue is written in the
background, in order, in pipelines of `_BATCH` scripts; breaker outcomes in it are applied
then, at the time they were recorded, and the transitions they cause are only logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import orjson
from redis.exceptions import RedisError

from tollway.aio import cancel
from tollway.state.base import Ledger
from tollway.state.breakers import Transition
from tollway.state.guards import Settlement
from tollway.state.lineage import LineageWrite
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

Pending = tuple[StepRecord | None, Settlement | None, float, LineageWrite | None]
DEDUPE_S = 900  # a record id is remembered this long: far longer than any replay takes
_BATCH = 200  # queued records written per round trip on recovery


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
        self._replay: asyncio.Task[None] | None = None
        self.skipped = 0  # records with nothing to settle not queued while down
        self.dropped = 0  # queued records dropped to keep the queue within pending_max
        # Told the id of each step once Redis has it (the write-ahead file marks it written).
        self.on_written: Callable[[str], None] | None = None
        link.on_recovery(self.replay)

    @property
    def pending(self) -> int:
        """Steps waiting for Redis to come back (or being written since it came back)."""
        return len(self._pending)

    # --- after each request -------------------------------------------------------------
    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     lineage: LineageWrite | None = None) -> list[Transition]:
        """Never raises for Redis being down: the record is queued and written on recovery
        (and then no transitions are returned: they happen when it is written)."""
        if step is None and (settle is None or not (settle.budgets or settle.token_rates
                                                     or settle.breakers)):
            return []
        item = (step, settle, time.time(), lineage)
        if not self._link.up:
            if _settles_nothing(step, settle):
                self.skipped += 1
                self._link.count("skipped")
                return []
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

    def _written(self, item: Pending) -> None:
        if self.on_written is not None and item[0] is not None:
            self.on_written(item[0].request_id)

    @property
    def full(self) -> bool:
        """New records push out old ones (or, with pending_max 0, are not kept at all)."""
        return len(self._pending) >= self._pending_max

    def _enqueue(self, item: Pending) -> None:
        if self._pending_max <= 0:
            self._link.count("dropped")
            self.dropped += 1
            return
        while len(self._pending) >= self._pending_max:
            self._pending.popleft()
            self._link.count("dropped")
            self.dropped += 1
        self._pending.append(item)

    async def _write(self, item: Pending) -> list[Transition]:
        """One EVALSHA of record.lua (its KEYS and ARGV layout is documented there)."""
        keys, args = self._call(item)
        transitions = await self._applied(await self._record_script(keys=keys, args=args))
        self._written(item)
        return transitions

    def _call(self, item: Pending) -> tuple[list[str], list[str | int]]:
        step, settle, now, lineage = item
        k = self._link.key
        budgets = settle.budgets if settle is not None else []
        rates = settle.token_rates if settle is not None else []
        outcomes = settle.breakers if settle is not None else []
        rid = step.request_id if step is not None else (settle.request_id if settle else "")
        keys = [k("br", "all"), k("dn", rid)]
        args: list[str | int] = [num(now), len(budgets), len(rates), len(outcomes),
                                 0 if step is None else 1, rid, DEDUPE_S]
        if lineage is None:
            args.append(0)
        else:
            args += [1, k(""), lineage.session, lineage.agent, num(lineage.window_s),
                     lineage.response or "", len(lineage.answers), *lineage.answers,
                     len(lineage.handoff), *lineage.handoff]
        for bc, actual in budgets:
            keys += [k("bu", bc.key), k("bx", bc.key)]
            args += [bc.holder, num(actual), bc.ttl_s]
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
                orjson.dumps(step), step.agent, step.team, step.model,
                step.provider, num(step.time), step.input_tokens, step.output_tokens,
                step.cached_tokens, step.cache_write_tokens, num(step.cost_usd),
                len(step.tags), *step.tags]
        return keys, args

    async def _applied(self, res: list[Any]) -> list[Transition]:
        dropped, flat = res[0], res[1]
        k = self._link.key
        if dropped:  # sessions beyond max_sessions: free their steps now, not at their TTL
            try:
                await self._link.redis.unlink(*[k(kind, s) for s in dropped
                                                for kind in ("se", "sl")])
            except RedisError:
                log.debug("could not unlink dropped sessions", exc_info=True)
        return [Transition(*flat[i:i + 3]) for i in range(0, len(flat), 3)]

    def replay(self) -> None:
        """The link is up again: write the queue in the background (one task at a time)."""
        if self._pending and (self._replay is None or self._replay.done()):
            self._replay = asyncio.create_task(self._drain(), name="tollway-redis-replay")

    async def stop(self) -> None:
        await cancel(self._replay)

    @property
    def replaying(self) -> bool:
        return self._replay is not None and not self._replay.done()

    async def _drain(self) -> None:
        """Write the queue in order, _BATCH records per pipeline; stop (leaving the rest
        queued) when Redis goes away again."""
        written = 0
        while self._pending and self._link.up:
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            try:
                async with self._link.redis.pipeline(transaction=False) as pipe:
                    for item in batch:
                        keys, args = self._call(item)
                        await self._record_script(keys=keys, args=args, client=pipe)
                    results = await pipe.execute(raise_on_error=False)
            except DOWN_ERRORS as exc:
                self._pending.extendleft(reversed(batch))
                self._link.mark_down("record", exc)
                return
            for item, res in zip(batch, results, strict=True):
                if isinstance(res, Exception):  # refused for good: it cannot succeed
                    log.error("queued record %s refused by redis (%s); dropped", _what(item),
                              res)
                    self._link.count("dropped")
                    continue
                for t in await self._applied(res):
                    log.info("breaker %s: %s -> %s (an outcome queued while redis was down)",
                             t.target, t.before, t.after)
                self._written(item)
            written += len(batch)
        if written:
            log.info("wrote %d records queued while redis was down", written)

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
        got = await link.pipelined("idle", [("hmget", link.key("se", s), "n", "cost")
                                            for s in ids])
        return [float(n.rsplit(" ", 1)[1] if n else cost) for n, cost in got
                if n is not None or cost is not None]

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
        count, totals = _counters(h)
        return Session(h["agent"], h["team"], float(h["first"]), float(h["last"]),
                       deque(steps, maxlen=self._session_steps), totals, count)

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
                pipe.smembers(k("kd", session_id))
                return await pipe.execute()

        score, summary, steps, children = await self._link.call("query", run)
        if score is None or not summary:
            return None
        return session_view(session_id,
                            self._session_of(summary, [_step(js) for js in steps]),
                            list(children))

    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        out = [session_summary(sid, s) for sid, s in
               await self._sessions(await self._listed(since), False)
               if agent is None or s.agent == agent]
        return top_sessions(out, sort, limit)

def _settles_nothing(step: StepRecord | None, settle: Settlement | None) -> bool:
    """A refusal that never reached an upstream: there is no spend to keep for it."""
    if settle is not None and (settle.budgets or settle.token_rates or settle.breakers):
        return False
    return step is None or (not step.cost_usd and not step.input_tokens
                            and not step.output_tokens and step.usage_source != "tool")


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
    """An hour bucket's rows: "<key>" -> "requests input output cached cache_write cost"
    (record.lua), or, written before counters were packed, "<key>|<counter>" -> one
    number (an hour that spans the upgrade has both: they add up)."""
    rows: dict[str, SpendRow] = {}
    for name, value in bucket.items():
        if " " in value:
            key, kind = name, ""
        else:
            key, _, kind = name.rpartition("|")
        row = rows.get(key)
        if row is None:
            row = rows[key] = SpendRow(key)
        if not kind:
            r, i, o, c, w, cost = value.split()
            row.requests += int(r)
            row.input_tokens += int(i)
            row.output_tokens += int(o)
            row.cached_tokens += int(c)
            row.cache_write_tokens += int(w)
            row.cost_usd += float(cost)
        elif kind == "cost":
            row.cost_usd += float(value)
        elif kind in _FIELDS:
            setattr(row, _FIELDS[kind], getattr(row, _FIELDS[kind]) + int(value))
    return rows


def _counters(h: dict[str, str]) -> tuple[int, SpendRow]:
    """A session summary's steps and totals: packed in "n" (steps requests input output
    cached cache_write cost), or one field each as written before."""
    if "n" in h:
        steps, r, i, o, c, w, cost = h["n"].split()
    else:
        steps, r, i, o, c, w, cost = (h["steps"], h["requests"], h["input"], h["output"],
                                      h["cached"], h["cache_write"], h["cost"])
    return int(steps), SpendRow("", requests=int(r), input_tokens=int(i),
                                output_tokens=int(o), cached_tokens=int(c),
                                cache_write_tokens=int(w), cost_usd=float(cost))
