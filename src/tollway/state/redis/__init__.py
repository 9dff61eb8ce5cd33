"""Redis state: the guards and the spend of many gateway processes, surviving them.

Semantics are those of `MemoryState`, call for call; this backend only adds sharing and
durability. Each request costs two round trips: `guards.admit()` is one EVALSHA of
`admit.lua` (kill switch, loop counters, GCRA rate limits on the server's clock, budget
reservations, atomically and all-or-nothing), `ledger.record()` one EVALSHA of `record.lua`
(settlement, token bucket correction, circuit breaker outcomes, hourly spend per dimension,
the session). A target whose breaker looked open costs one more: `breakers.probe()`, one
EVALSHA of `probe.lua`, so that across processes at most `half_open_probes` probes are in
flight.

Modules: `link` (the client, the key prefix, up/down and the background probe, shared by
every facet), then one per facet: `guards`, `ledger`, `breakers`, `flags`, `cache`,
`tools`, `keys`; the scripts are in `lua/`. `connect` builds every Redis client of tollway (this
state's, the audit sink's, the semantic cache feed's) from `state.redis`: one Redis, or a
Redis Cluster (`cluster: true`) through `cluster.BoundedCluster`; `script` runs a script by
digest, and by text where a node does not know it.

Key layout. Every key starts with ``{<key_prefix>}:`` - a single hash tag, so in a Redis
Cluster all of the gateway's keys hash to one slot: each script may touch any of them and
stays atomic and legal (every key a script touches is passed in KEYS). The price is that
one gateway's state lives on one shard; it is small (bounded by TTLs, `max_sessions` and
`session_steps`) and a different `key_prefix` puts another gateway on another slot.

    ks:s:<session>  ks:a:<agent>      kill / pause flags (strings; no TTL)
    ks:sessions  ks:agents            sets listing them, for flags.all()
    fp:<fingerprint>:<session>        repeated-request counter, expires after the window
    st:<session>                      hash n, first: steps and first request
    ch:<chain>                        hash agent, rounds: ping-pong hand-offs
    ix:st  ix:ch                      zsets bounding those two to max_sessions, as memory
    rl:<rate key>                     GCRA theoretical arrival time (µs), PX until it + 1 s
    bu:<scope>:<name>:<period>        hash spent, reserved; expires with its period
    sp:<dim>:<hour>                   hash <key> -> "requests input output cached
                                      cache_write cost" (before: "<key>|<counter>" each)
    sp:hours                          zset of hours with spend (spend(since=) reads these)
    se:<session>  sl:<session>        summary hash (agent team first last, and n: "steps
                                      requests input output cached cache_write cost")
                                      and list of step JSON (last session_steps)
    br:<target>                       hash state, until, failures, window_start,
                                      window_requests, window_failures, probes (no TTL:
                                      targets are the configured deployments)
    br:all                            set of the targets with a breaker, for breakers.views()
    sessions  unobserved              zsets session -> last activity; unobserved feeds
                                      ledger.idle_sessions(), which pops each session once
    vk:recs  vk:ver                   runtime keys: hash id -> record JSON (digests, never
                                      a secret), and the counter every write bumps

Floats are computed in Lua as doubles and stored with 17 significant digits (never with
HINCRBYFLOAT, whose long double arithmetic differs from Python's), and travel back as
strings, so the numbers are bit-identical to the memory backend's. Session activity
("last"), the idle cutoff and the breakers (window, open until) use the gateway's clock, as
in memory; GCRA and loop counters use Redis's TIME so that all processes share one clock.

When Redis is unreachable (on a cluster: while the gateway's slot has no reachable primary,
a failover under way included) the state is "down": `guards.admit()` and `breakers.probe()`
raise StateUnavailable at once (the caller decides), `ledger.record()` queues up to
`pending_max` records in memory (breaker outcomes included, applied on recovery at the time
they were recorded; the transitions they cause then are only logged) and returns no
transitions, `ready()` is False, and a background probe asks every `retry_interval_s` (on a
cluster, refreshing its map of the slots, so a promoted replica is found); when Redis
answers, the queue is written in order and the state is up again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tollway.state.base import State
from tollway.state.redis.breakers import RedisBreakers
from tollway.state.redis.cache import RedisCache
from tollway.state.redis.flags import RedisFlags
from tollway.state.redis.guards import RedisGuards
from tollway.state.redis.keys import RedisKeys
from tollway.state.redis.ledger import RedisLedger
from tollway.state.redis.link import RedisLink
from tollway.state.redis.tools import RedisToolState

if TYPE_CHECKING:
    from tollway.config.model import StateConfig
    from tollway.observe.metrics import Metrics

__all__ = ["RedisState"]

log = logging.getLogger("tollway.state.redis")


class RedisState(State):
    backend = "redis"

    def __init__(self, cfg: StateConfig, metrics: Metrics) -> None:
        self._link = link = RedisLink(cfg, metrics)
        self.guards: RedisGuards = RedisGuards(link, cfg.retention_hours, cfg.max_sessions)
        self.ledger: RedisLedger = RedisLedger(link, cfg.session_steps, cfg.max_sessions,
                                               cfg.retention_hours, cfg.redis.pending_max)
        self.breakers: RedisBreakers = RedisBreakers(link)
        self.flags: RedisFlags = RedisFlags(link)
        self.cache: RedisCache = RedisCache(link)
        self.tools: RedisToolState = RedisToolState(link)
        self.keys: RedisKeys = RedisKeys(link)

    async def start(self) -> None:
        """Try once now; if Redis is not there yet, start down and let the probe retry."""
        await self._link.start()

    async def close(self) -> None:
        await self._link.stop_probe()
        await self.ledger.stop()
        if self.ledger.pending:
            log.error("closing with %d steps not written to redis", self.ledger.pending)
        await self._link.aclose()

    async def ready(self) -> bool:
        """Up, and nothing queued during an outage still waiting to be written."""
        return self._link.up and not self.ledger.pending

    def health(self) -> dict[str, Any]:
        ledger = self.ledger
        out: dict[str, Any] = {"state": self.backend}
        if not self._link.up:
            out["state_down"] = True
            out["records"] = "dropped" if ledger.full else "queued"
        if ledger.pending:
            out["pending_records"] = ledger.pending
            out["replaying"] = ledger.replaying
        if ledger.dropped:
            out["dropped_records"] = ledger.dropped
        return out
