"""Circuit breakers in process memory: the reference logic of tollway.state.breakers on a
dict of views. The ledger applies outcomes here (`apply`) as it records a request."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from tollway.state.base import Breakers
from tollway.state.breakers import (
    BreakerOutcome,
    BreakerPolicy,
    BreakerView,
    Transition,
    apply_outcome,
    take_probe,
)


class MemoryBreakers(Breakers):
    def __init__(self) -> None:
        self._breakers: dict[str, BreakerView] = {}

    def apply(self, outcomes: Iterable[BreakerOutcome]) -> list[Transition]:
        """Count each attempt's outcome on its target's breaker; the transitions caused."""
        transitions: list[Transition] = []
        now = time.time()
        for o in outcomes:
            v = self._breakers.get(o.target)
            if v is None:
                v = self._breakers[o.target] = BreakerView(o.target, window_start=now)
            t = apply_outcome(v, o, now)
            if t is not None:
                transitions.append(t)
        return transitions

    async def probe(self, target: str, policy: BreakerPolicy,
                    ) -> tuple[bool, BreakerView, Transition | None]:
        v = self._breakers.get(target)
        if v is None:
            v = self._breakers[target] = BreakerView(target, window_start=time.time())
        allowed, t = take_probe(v, policy, time.time())
        return allowed, replace(v), t

    async def views(self, targets: list[str] | None = None) -> dict[str, BreakerView]:
        names = self._breakers.keys() if targets is None else targets
        return {n: replace(self._breakers[n]) for n in names if n in self._breakers}
