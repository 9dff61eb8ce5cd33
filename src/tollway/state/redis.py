"""Redis state: the guards and the spend of many gateway processes, surviving them.

Semantics are those of `MemoryState`, call for call; this backend only adds sharing and
durability. Each request costs two round trips: `admit()` is one EVALSHA of `admit.lua`
(kill switch, loop counters, GCRA rate limits on the server's clock, budget reservations,
atomically and all-or-nothing), `record()` one EVALSHA of `record.lua` (settlement, token
bucket correction, circuit breaker outcomes, hourly spend per dimension, the session).
A target whose breaker looked open costs one more: `breaker_probe()`, one EVALSHA of
`probe.lua`, so that across processes at most `half_open_probes` probes are in flight.

Key layout. Every key starts with ``{<key_prefix>}:`` - a single hash tag, so in a Redis
Cluster all of the gateway's keys hash to one slot: each script may touch any of them and
stays atomic and legal (every key a script touches is passed in KEYS). The price is that
one gateway's state lives on one shard; it is small (bounded by TTLs, `max_sessions` and
`session_steps`) and a different `key_prefix` puts another gateway on another slot.

    ks:s:<session>  ks:a:<agent>      kill / pause flags (strings; no TTL)
    ks:sessions  ks:agents            sets listing them, for flags()
    fp:<fingerprint>:<session>        repeated-request counter, expires after the window
    st:<session>                      hash n, first: steps and first request
    ch:<chain>                        hash agent, rounds: ping-pong hand-offs
    ix:st  ix:ch                      zsets bounding those two to max_sessions, as memory
    rl:<rate key>                     GCRA theoretical arrival time (µs), PX until it + 1 s
    bu:<scope>:<name>:<period>        hash spent, reserved; expires with its period
    sp:<dim>:<hour>                   hash "<key>|requests|input|output|cached|cache_write|cost"
    sp:hours                          zset of hours with spend (spend(since=) reads these)
    se:<session>  sl:<session>        summary hash and list of step JSON (last session_steps)
    br:<target>                       hash state, until, failures, window_start,
                                      window_requests, window_failures, probes (no TTL:
                                      targets are the configured deployments)
    br:all                            set of the targets with a breaker, for breaker_views()
    sessions  unobserved              zsets session -> last activity; unobserved feeds
                                      idle_sessions(), which pops each session once

Floats are computed in Lua as doubles and stored with 17 significant digits (never with
HINCRBYFLOAT, whose long double arithmetic differs from Python's), and travel back as
strings, so the numbers are bit-identical to the memory backend's. Session activity
("last"), the idle cutoff and the breakers (window, open until) use the gateway's clock, as
in memory; GCRA and loop counters use Redis's TIME so that all processes share one clock.

When Redis is unreachable the state is "down": `admit()` and `breaker_probe()` raise
StateUnavailable at once (the caller decides), `record()` queues up to `pending_max`
records in memory (breaker outcomes included, applied on recovery at the time they were
recorded; the transitions they cause then are only logged) and returns no transitions,
`ready()` is False, and a background probe PINGs every `retry_interval_s`; when Redis
answers, the queue is written in order and the state is up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway.state.base import (
    SPEND_DIMENSIONS,
    SpendRow,
    State,
    StateUnavailable,
    StepRecord,
    merge_rows,
)
from tollway.state.breakers import BreakerPolicy, BreakerView, Transition
from tollway.state.guards import Admission, Settlement, Verdict
from tollway.state.memory import HOUR, _Session, _session_view, _summary
from tollway.state.toolstate import RedisToolState

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from tollway.config.model import StateConfig
    from tollway.observe.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
# The errors that mean "Redis is not there" (as opposed to a bug or a refused command);
# OSError covers the builtin TimeoutError too.
DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
_BUCKET_DIMS = ("agent", "team", "model", "provider", "tag")  # spend kept per hour
_FIELDS = {"requests": "requests", "input": "input_tokens", "output": "output_tokens",
           "cached": "cached_tokens", "cache_write": "cache_write_tokens"}
_STEP_FIELDS = frozenset(f.name for f in fields(StepRecord))
_CHUNK = 500  # commands per pipeline in admin queries

Pending = tuple[StepRecord | None, Settlement | None, float]
_BREAKER_FIELDS = ("state", "until", "failures", "window_start", "window_requests",
                   "window_failures", "probes")


def _lua(name: str) -> str:
    return (resources.files("tollway.state") / "lua" / name).read_text(encoding="utf-8")


def _f(x: float) -> str:
    """A float as an exact decimal string (repr round-trips; redis-py would do the same)."""
    return repr(float(x))


class RedisState(State):
    backend = "redis"

    def __init__(self, cfg: StateConfig, metrics: Metrics) -> None:
        rc = cfg.redis
        self._metrics = metrics
        self._p = "{" + rc.key_prefix + "}:"
        self._session_steps = cfg.session_steps
        self._max_sessions = cfg.max_sessions
        self._retention = cfg.retention_hours
        self._retry_s = rc.retry_interval_s
        self._pending: deque[Pending] = deque()
        self._pending_max = rc.pending_max
        timeout = rc.timeout_ms / 1000
        # Bounded pool. A command must answer within `timeout`; opening a connection and
        # waiting for a free one get at least a second, so that a burst of new requests on
        # a busy machine (dozens of connections opened at once) is not mistaken for Redis
        # being down. No retries: a failed call fails fast and the probe takes over.
        slack = max(1.0, 4 * timeout)
        pool = BlockingConnectionPool.from_url(
            rc.url, max_connections=rc.max_connections, timeout=slack,
            socket_timeout=timeout, socket_connect_timeout=slack, protocol=2,
            decode_responses=True, retry=Retry(NoBackoff(), 0))
        self._redis: Redis = Redis.from_pool(pool)
        self._admit_script: AsyncScript = self._redis.register_script(_lua("admit.lua"))
        self._record_script: AsyncScript = self._redis.register_script(_lua("record.lua"))
        self._idle_script: AsyncScript = self._redis.register_script(_lua("idle.lua"))
        self._probe_script: AsyncScript = self._redis.register_script(_lua("probe.lua"))
        self.tools = RedisToolState(self._redis, self._k, self._call)
        self._up = False  # until a PING answers
        self._down = asyncio.Event()
        self._down.set()
        self._probe_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Try once now; if Redis is not there yet, start down and let the probe retry."""
        if not await self._recover():
            log.warning("redis state unreachable at start; requests run degraded until "
                        "it answers")
        self._probe_task = asyncio.create_task(self._probe(), name="tollway-redis-probe")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        if self._pending:
            log.error("closing with %d steps not written to redis", len(self._pending))
        await self._redis.aclose()

    async def ready(self) -> bool:
        return self._up

    @property
    def pending(self) -> int:
        """Steps waiting for Redis to come back."""
        return len(self._pending)

    def _count(self, op: str) -> None:
        self._metrics.state_errors.labels(op).inc()

    def _mark_down(self, op: str, exc: BaseException) -> None:
        self._count(op)
        if self._up:
            log.warning("redis state down (%s: %r); probing every %ss", op, exc, self._retry_s)
        self._up = False
        self._down.set()

    async def _probe(self) -> None:
        """While down: PING every retry_interval_s, and on an answer flush and come up."""
        while True:
            await self._down.wait()
            await asyncio.sleep(self._retry_s)
            if self._down.is_set():
                await self._recover()

    async def _recover(self) -> bool:
        try:
            await self._redis.ping()
        except (RedisError, *DOWN_ERRORS):
            self._count("probe")
            return False
        flushed = 0
        while self._pending:
            item = self._pending.popleft()
            try:
                for t in await self._write(item):
                    log.info("breaker %s: %s -> %s (an outcome queued while redis was down)",
                             t.target, t.before, t.after)
            except DOWN_ERRORS:
                self._pending.appendleft(item)
                self._count("record")
                return False
            except RedisError:  # refused for good (not for being down): it cannot succeed
                log.exception("queued record %s refused by redis; dropped", _what(item))
                self._count("dropped")
            flushed += 1
        # No await since the queue was seen empty: nothing can slip in between.
        self._up = True
        self._down.clear()
        log.info("redis state up%s", f"; wrote {flushed} queued records" if flushed else "")
        return True

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an off-hot-path command: failures are counted and raised as StateUnavailable."""
        try:
            return await fn()
        except DOWN_ERRORS as exc:
            self._mark_down(op, exc)
            raise StateUnavailable(f"redis: {exc}") from exc
        except RedisError as exc:
            self._count(op)
            raise StateUnavailable(f"redis: {exc}") from exc

    def _k(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    # --- guards -------------------------------------------------------------------------
    async def admit(self, adm: Admission) -> Verdict:
        if not self._up:  # don't make every request wait the timeout while down
            self._count("admit")
            raise StateUnavailable("redis state is down")
        lp = adm.loop
        fp = lp.fingerprint if lp is not None else None
        chain = lp.chain if lp is not None else None
        keys = [self._k("ks", "s", adm.session), self._k("ks", "a", adm.agent),
                self._k("fp", fp or "", adm.session), self._k("st", adm.session),
                self._k("ch", chain or adm.session), self._k("ix", "st"),
                self._k("ix", "ch")]
        args: list[str | int] = [
            self._retention * HOUR,
            max(0, round(lp.fp_window_s * 1000)) if fp and lp is not None else -1,
            1 if lp is not None and lp.steps else 0, 1 if chain else 0, adm.agent,
            adm.session, chain or "", self._max_sessions, len(adm.rates), len(adm.budgets)]
        for rc in adm.rates:
            keys.append(self._k("rl", rc.key))
            args += [_f(rc.interval_us), _f(rc.tolerance_us), rc.cost]
        for bc in adm.budgets:
            keys.append(self._k("bu", bc.key))
            args += [_f(bc.limit), _f(bc.reserve), bc.ttl_s]
        try:
            raw = await self._admit_script(keys=keys, args=args)
        except DOWN_ERRORS as exc:
            self._mark_down("admit", exc)
            raise StateUnavailable(f"redis: {exc}") from exc
        except RedisError as exc:
            self._count("admit")
            raise StateUnavailable(f"redis: {exc}") from exc
        return _verdict(adm, raw)

    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     ) -> list[Transition]:
        """Never raises for Redis being down: the record is queued and written on recovery
        (and then no transitions are returned: they happen when it is written)."""
        if step is None and (settle is None or not (settle.budgets or settle.token_rates
                                                     or settle.breakers)):
            return []
        item = (step, settle, time.time())
        if not self._up:
            self._enqueue(item)
            return []
        try:
            return await self._write(item)
        except DOWN_ERRORS as exc:
            self._mark_down("record", exc)
            self._enqueue(item)
        except RedisError:
            self._count("record")
            log.exception("redis refused record %s", _what(item))
        return []

    def _enqueue(self, item: Pending) -> None:
        if self._pending_max <= 0:
            self._count("dropped")
            return
        while len(self._pending) >= self._pending_max:
            self._pending.popleft()
            self._count("dropped")
        self._pending.append(item)

    async def _write(self, item: Pending) -> list[Transition]:
        """One EVALSHA of record.lua (its KEYS and ARGV layout is documented there)."""
        step, settle, now = item
        budgets = settle.budgets if settle is not None else []
        rates = settle.token_rates if settle is not None else []
        outcomes = settle.breakers if settle is not None else []
        keys = [self._k("br", "all")]
        args: list[str | int] = [_f(now), len(budgets), len(rates), len(outcomes),
                                 0 if step is None else 1]
        for bc, actual in budgets:
            keys.append(self._k("bu", bc.key))
            args += [_f(bc.reserve), _f(actual), bc.ttl_s]
        for rc, delta in rates:
            keys.append(self._k("rl", rc.key))
            args.append(_f(delta * rc.interval_us))
        for o in outcomes:
            p = o.policy
            keys.append(self._k("br", o.target))
            args += [o.target, 1 if o.ok else 0, _f(o.latency_s), 1 if o.probe else 0,
                     _opt(o.retry_after_s), p.consecutive_failures, _f(p.failure_rate),
                     _f(p.window_s), p.min_requests, _opt(p.latency_s), _f(p.open_s)]
        if step is not None:
            sid = step.session
            hour = int(step.time // HOUR)
            h = str(hour)
            keys += [self._k("sessions"), self._k("unobserved"), self._k("sp", "hours"),
                     self._k("se", sid), self._k("sl", sid),
                     *(self._k("sp", dim, h) for dim in _BUCKET_DIMS)]
            args += [
                sid, self._retention, self._session_steps, self._max_sessions, hour,
                orjson.dumps(step.to_dict()).decode(), step.agent, step.team, step.model,
                step.provider, _f(step.time), step.input_tokens, step.output_tokens,
                step.cached_tokens, step.cache_write_tokens, _f(step.cost_usd),
                len(step.tags), *step.tags]
        dropped, flat = await self._record_script(keys=keys, args=args)
        if dropped:  # sessions beyond max_sessions: free their steps now, not at their TTL
            try:
                await self._redis.unlink(*[self._k(kind, s) for s in dropped
                                           for kind in ("se", "sl")])
            except RedisError:
                log.debug("could not unlink dropped sessions", exc_info=True)
        return [Transition(*flat[i:i + 3]) for i in range(0, len(flat), 3)]

    # --- circuit breakers ---------------------------------------------------------------
    async def breaker_probe(self, target: str, policy: BreakerPolicy,
                            ) -> tuple[bool, BreakerView, Transition | None]:
        """take_probe, atomically across processes; raises StateUnavailable when down."""
        if not self._up:  # as admit(): no waiting on the timeout while down
            self._count("breaker")
            raise StateUnavailable("redis state is down")
        raw = await self._call("breaker", lambda: self._probe_script(
            keys=[self._k("br", target), self._k("br", "all")],
            args=[target, _f(time.time()), policy.half_open_probes, _f(policy.open_s)]))
        view = _breaker(target, dict(zip(_BREAKER_FIELDS, raw[1:8], strict=True)))
        t = Transition(target, raw[8], raw[9]) if raw[8] else None
        return raw[0] == 1, view, t

    async def breaker_views(self, targets: list[str] | None = None) -> dict[str, BreakerView]:
        if targets is None:
            targets = sorted(await self._call(
                "query", lambda: self._redis.smembers(self._k("br", "all"))))
        rows = await self._pipelined("query", [("hmget", self._k("br", t), _BREAKER_FIELDS)
                                               for t in targets])
        return {t: _breaker(t, dict(zip(_BREAKER_FIELDS, row, strict=True)))
                for t, row in zip(targets, rows, strict=True) if row[0] is not None}

    async def budget_usage(self, key: str) -> tuple[float, float]:
        spent, reserved = await self._call(
            "query", lambda: self._redis.hmget(self._k("bu", key), ["spent", "reserved"]))
        return float(spent or 0.0), float(reserved or 0.0)

    async def set_flag(self, kind: str, name: str, on: bool) -> None:
        flag, members = (("s", "sessions") if kind == "session" else ("a", "agents"))

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                if on:
                    pipe.set(self._k("ks", flag, name), 1)
                    pipe.sadd(self._k("ks", members), name)
                else:
                    pipe.delete(self._k("ks", flag, name))
                    pipe.srem(self._k("ks", members), name)
                await pipe.execute()

        await self._call("flag", run)

    # --- cache ----------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        if not self._up:
            return None  # a miss, not an error: the request goes upstream
        try:
            value = await self._call("cache", lambda: self._redis.get(self._k(key)))
        except StateUnavailable:
            return None
        return value.encode() if value is not None else None

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        if not self._up:
            return
        try:
            await self._call("cache", lambda: self._redis.set(
                self._k(key), value.decode(), px=max(1, int(ttl_s * 1000))))
        except StateUnavailable:
            pass

    async def cache_purge(self, pattern: str) -> int:
        async def run() -> int:
            gone = 0
            async for k in self._redis.scan_iter(match=self._k(pattern), count=500):
                gone += await self._redis.unlink(k)
            return gone

        return int(await self._call("cache", run))

    async def cache_size(self, prefix: str = "c:") -> int:
        async def run() -> int:
            n = 0
            async for _ in self._redis.scan_iter(match=self._k(prefix) + "*", count=1000):
                n += 1
            return n

        return int(await self._call("cache", run))

    async def flags(self) -> dict[str, list[str]]:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.smembers(self._k("ks", "sessions"))
                pipe.smembers(self._k("ks", "agents"))
                return await pipe.execute()

        killed, paused = await self._call("flag", run)
        return {"session": sorted(killed), "agent": sorted(paused)}

    async def idle_sessions(self, idle_s: float, limit: int = 1000) -> list[float]:
        """Pop atomically (so each session is handed out once across processes), then read
        the costs: a session's keys are not known in advance, so the script can't."""
        cutoff = time.time() - idle_s
        ids: list[str] = await self._call("idle", lambda: self._idle_script(
            keys=[self._k("unobserved")], args=[_f(cutoff), limit]))
        if not ids:
            return []
        costs = await self._pipelined("idle", [("hget", self._k("se", s), "cost") for s in ids])
        return [float(c) for c in costs if c is not None]

    # --- queries ------------------------------------------------------------------------
    async def _pipelined(self, op: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        async def run() -> list[Any]:
            out: list[Any] = []
            for i in range(0, len(cmds), _CHUNK):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name, *cargs in cmds[i:i + _CHUNK]:
                        getattr(pipe, name)(*cargs)
                    out += await pipe.execute()
            return out

        return await self._call(op, run)

    async def _listed(self, since: float | None) -> list[str]:
        """Sessions least recently active first, as MemoryState keeps them."""
        lo = _f(since) if since is not None else "-inf"
        return await self._call("query", lambda: self._redis.zrangebyscore(
            self._k("sessions"), lo, "+inf"))

    async def _sessions(self, ids: list[str], with_steps: bool) -> list[tuple[str, _Session]]:
        cmds: list[tuple[Any, ...]] = []
        for sid in ids:
            cmds.append(("hgetall", self._k("se", sid)))
            if with_steps:
                cmds.append(("lrange", self._k("sl", sid), 0, -1))
        res = await self._pipelined("query", cmds)
        per = 2 if with_steps else 1
        out = []
        for i, sid in enumerate(ids):
            summary = res[i * per]
            if not summary:  # expired or dropped between the two reads
                continue
            steps = [_step(js) for js in res[i * per + 1]] if with_steps else []
            out.append((sid, self._session_of(summary, steps)))
        return out

    def _session_of(self, h: dict[str, str], steps: list[StepRecord]) -> _Session:
        totals = SpendRow("", requests=int(h["requests"]), input_tokens=int(h["input"]),
                          output_tokens=int(h["output"]), cached_tokens=int(h["cached"]),
                          cache_write_tokens=int(h["cache_write"]), cost_usd=float(h["cost"]))
        return _Session(h["agent"], h["team"], float(h["first"]), float(h["last"]),
                        deque(steps, maxlen=self._session_steps), totals, int(h["steps"]))

    async def spend(self, by: str, since: float | None = None) -> list[SpendRow]:
        if by == "session":
            rows = []
            for sid, s in await self._sessions(await self._listed(since), since is not None):
                row = SpendRow(sid)
                if since is None:
                    row.merge(s.totals)
                else:
                    for st in s.steps:
                        if st.time >= since:
                            row.add(st)
                row.extra = {"agent": s.agent, "team": s.team}
                rows.append(row)
            return sorted(rows, key=lambda r: -r.cost_usd)
        if by not in SPEND_DIMENSIONS:
            return []
        first_hour = int(since // HOUR) if since is not None else 0
        hours: list[str] = await self._call("query", lambda: self._redis.zrangebyscore(
            self._k("sp", "hours"), first_hour, "+inf"))
        buckets = await self._pipelined("query", [("hgetall", self._k("sp", by, h))
                                                  for h in hours])
        # oldest hour first, as memory merges them
        return merge_rows(_bucket_rows(bucket) for bucket in buckets)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zscore(self._k("sessions"), session_id)
                pipe.hgetall(self._k("se", session_id))
                pipe.lrange(self._k("sl", session_id), 0, -1)
                return await pipe.execute()

        score, summary, steps = await self._call("query", run)
        if score is None or not summary:
            return None
        return _session_view(session_id,
                             self._session_of(summary, [_step(js) for js in steps]))

    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        out = [_summary(sid, s) for sid, s in
               await self._sessions(await self._listed(since), False)
               if agent is None or s.agent == agent]
        key = {"cost": "cost_usd", "steps": "steps", "recent": "last"}.get(sort, "cost_usd")
        out.sort(key=lambda d: -d[key])
        return out[:limit]


def _verdict(adm: Admission, raw: list[Any]) -> Verdict:
    """The admit.lua reply as a Verdict (layout documented in the script)."""
    v = Verdict()
    if raw[0] != "1":
        v.allowed, v.denied_by = False, raw[1]
        if v.denied_by in ("killed", "paused"):
            return v
    index = int(raw[2])
    if v.denied_by == "rate":
        v.rate, v.retry_after_s = adm.rates[index - 1], float(raw[3])
    elif v.denied_by == "budget":
        v.budget = adm.budgets[index - 1]
    v.repeats, v.steps, v.age_s, v.rounds = int(raw[4]), int(raw[5]), float(raw[6]), int(raw[7])
    n = int(raw[8])
    i = 9
    v.rate_state = [(int(float(raw[i + 2 * j])), float(raw[i + 2 * j + 1])) for j in range(n)]
    i += 2 * n
    m = int(raw[i])
    v.budget_state = [(float(raw[i + 1 + 2 * j]), float(raw[i + 2 + 2 * j])) for j in range(m)]
    return v


def _opt(x: float | None) -> str:
    """An optional float for a script: '' for None."""
    return "" if x is None else _f(x)


def _what(item: Pending) -> str:
    step = item[0]
    return f"step {step.request_id}" if step is not None else "settlement (no step)"


def _breaker(target: str, h: dict[str, Any]) -> BreakerView:
    return BreakerView(target, h["state"], float(h["until"]), int(h["failures"]),
                       float(h["window_start"]), int(h["window_requests"]),
                       int(h["window_failures"]), int(h["probes"]))


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
