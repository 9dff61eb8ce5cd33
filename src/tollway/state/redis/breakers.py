"""Circuit breakers on Redis: one hash per target (``br:<target>``) and the set of targets
(``br:all``). Outcomes are applied by record.lua with the request's step (the ledger);
here, a half-open probe slot is taken with one EVALSHA of probe.lua, so that across
processes at most `half_open_probes` probes are in flight, and views are read.

While the state is down, `probe` raises StateUnavailable at once, as `admit` does.
"""

from __future__ import annotations

import time
from typing import Any

from tollway.state.base import Breakers, StateUnavailable
from tollway.state.breakers import BreakerPolicy, BreakerView, Transition
from tollway.state.redis.link import RedisLink, num

_BREAKER_FIELDS = ("state", "until", "failures", "window_start", "window_requests",
                   "window_failures", "probes")


class RedisBreakers(Breakers):
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._probe_script = link.script("probe.lua")

    async def probe(self, target: str, policy: BreakerPolicy,
                    ) -> tuple[bool, BreakerView, Transition | None]:
        """take_probe, atomically across processes; raises StateUnavailable when down."""
        link = self._link
        if not link.up:  # as admit(): no waiting on the timeout while down
            link.count("breaker")
            raise StateUnavailable("redis state is down")
        raw = await link.call("breaker", lambda: self._probe_script(
            keys=[link.key("br", target), link.key("br", "all")],
            args=[target, num(time.time()), policy.half_open_probes, num(policy.open_s)]))
        view = _breaker(target, dict(zip(_BREAKER_FIELDS, raw[1:8], strict=True)))
        t = Transition(target, raw[8], raw[9]) if raw[8] else None
        return raw[0] == 1, view, t

    async def views(self, targets: list[str] | None = None) -> dict[str, BreakerView]:
        link = self._link
        if targets is None:
            targets = sorted(await link.call(
                "query", lambda: link.redis.smembers(link.key("br", "all"))))
        rows = await link.pipelined("query", [("hmget", link.key("br", t), _BREAKER_FIELDS)
                                              for t in targets])
        return {t: _breaker(t, dict(zip(_BREAKER_FIELDS, row, strict=True)))
                for t, row in zip(targets, rows, strict=True) if row[0] is not None}


def _breaker(target: str, h: dict[str, Any]) -> BreakerView:
    return BreakerView(target, h["state"], float(h["until"]), int(h["failures"]),
                       float(h["window_start"]), int(h["window_requests"]),
                       int(h["window_failures"]), int(h["probes"]))
