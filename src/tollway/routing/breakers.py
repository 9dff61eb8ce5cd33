"""This process's view of the shared circuit breakers.

While a breaker is closed (nearly always) checking it costs no round trip: the board keeps
the views it last read from the State (refreshed every `refresh_s`, and updated at once by
the transitions this process causes). Only an open breaker whose time is up asks the State
for a half-open probe slot, atomically, so that across replicas no more than the configured
number of probes go through.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tollway.observe.metrics import Metrics
from tollway.providers.registry import Deployment
from tollway.state.base import State, StateUnavailable
from tollway.state.breakers import (
    CLOSED,
    OPEN,
    STATE_VALUE,
    BreakerOutcome,
    BreakerView,
    Transition,
)

log = logging.getLogger("tollway.breakers")


class BreakerBoard:
    def __init__(self, state: State, metrics: Metrics, refresh_s: float = 1.0) -> None:
        self.state = state
        self.metrics = metrics
        self.refresh_s = refresh_s
        self.views: dict[str, BreakerView] = {}
        self._task: asyncio.Task[None] | None = None
        self._pending: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def check(self, dep: Deployment) -> tuple[bool, bool, float]:
        """(may try it, holds a probe slot, seconds until it may be tried)."""
        v = self.views.get(dep.target)
        if v is None or v.state == CLOSED or dep.breaker is None:
            return True, False, 0.0
        now = time.time()
        if v.state == OPEN and now < v.until:
            return False, False, v.until - now
        try:
            allowed, view, t = await self.state.breakers.probe(dep.target, dep.breaker)
        except StateUnavailable:
            return True, False, 0.0  # cannot coordinate: let it through, unprobed
        self.views[dep.target] = view
        if t is not None:
            self.on_transitions([t])
        return allowed, allowed and view.state != CLOSED, max(0.0, view.until - now)

    @staticmethod
    def outcome(dep: Deployment, ok: bool, latency_s: float, probe: bool,
                retry_after_s: float | None) -> BreakerOutcome | None:
        if dep.breaker is None:
            return None
        return BreakerOutcome(dep.target, ok, latency_s, dep.breaker, probe, retry_after_s)

    def on_transitions(self, transitions: list[Transition]) -> None:
        for t in transitions:
            self.metrics.breaker_transitions.labels(t.target, t.before, t.after).inc()
            self.metrics.breaker_state.labels(t.target).set(STATE_VALUE[t.after])
            v = self.views.setdefault(t.target, BreakerView(t.target))
            v.state = t.after
            log.warning("circuit breaker %s: %s -> %s", t.target, t.before, t.after,
                        extra={"fields": {"target": t.target, "from": t.before,
                                          "to": t.after}})
        if any(t.after == OPEN for t in transitions) and (
                self._pending is None or self._pending.done()):
            self._pending = asyncio.ensure_future(self.refresh())  # learn `until`

    async def refresh(self) -> None:
        try:
            views = await self.state.breakers.views()
        except StateUnavailable:
            return
        except Exception:  # the state is down or half-reachable: keep the last views
            log.debug("breaker refresh failed", exc_info=True)
            return
        self.views = views
        for target, v in views.items():
            self.metrics.breaker_state.labels(target).set(STATE_VALUE[v.state])

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()
