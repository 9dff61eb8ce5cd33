"""Circuit breakers per upstream target (a model deployment, later a tool): the shared part.

The state keeps, per target: closed / open / half_open, consecutive failures, a window of
recent requests and failures, and until when it stays open. Transitions happen where the
outcome is recorded (memory, or atomically in Redis), so every replica sees the same
breaker.

- closed -> open: `consecutive_failures` failures in a row, or at least `min_requests` in
  the current `window_s` with a failure share of `failure_rate` or more, or an upstream
  Retry-After (open for at least that long). A success slower than `latency_s` counts as a
  failure.
- open -> half_open: once `until` has passed, the next caller that asks for a probe slot;
  a half-open round lasts `open_s`, after which unanswered probe slots are freed.
- half_open: at most `half_open_probes` requests in flight; a probe that succeeds closes the
  breaker (counters reset), one that fails opens it again for `open_s`.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # tollway_breaker_state


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 10
    latency_s: float | None = None
    open_s: float = 30.0
    half_open_probes: int = 1


@dataclass(slots=True)
class BreakerView:
    target: str
    state: str = CLOSED
    until: float = 0.0  # unix time the open state ends (0 when closed)
    failures: int = 0  # consecutive
    window_start: float = 0.0
    window_requests: int = 0
    window_failures: int = 0
    probes: int = 0  # half-open probes in flight

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "state": self.state, "until": self.until,
                "consecutive_failures": self.failures, "window_requests": self.window_requests,
                "window_failures": self.window_failures, "probes_in_flight": self.probes}


@dataclass(slots=True)
class BreakerOutcome:
    """One finished attempt against a target, recorded with the request's step."""

    target: str
    ok: bool
    latency_s: float
    policy: BreakerPolicy
    probe: bool = False  # the attempt held a half-open probe slot
    retry_after_s: float | None = None  # the upstream asked us to wait this long


@dataclass(frozen=True, slots=True)
class Transition:
    target: str
    before: str
    after: str


def apply_outcome(v: BreakerView, o: BreakerOutcome, now: float) -> Transition | None:
    """The reference transition logic (MemoryState runs it; the Redis script mirrors it)."""
    p = o.policy
    before = v.state
    ok = o.ok and (p.latency_s is None or o.latency_s <= p.latency_s)
    if o.probe and v.probes > 0:
        v.probes -= 1
    if now - v.window_start >= p.window_s:
        v.window_start, v.window_requests, v.window_failures = now, 0, 0
    v.window_requests += 1
    if ok:
        v.failures = 0
        if v.state == HALF_OPEN and o.probe:
            v.state, v.until, v.probes = CLOSED, 0.0, 0
            v.window_start, v.window_requests, v.window_failures = now, 0, 0
    else:
        v.failures += 1
        v.window_failures += 1
        trip = (v.failures >= p.consecutive_failures
                or (v.window_requests >= p.min_requests
                    and v.window_failures / v.window_requests >= p.failure_rate)
                or o.retry_after_s is not None
                or (v.state == HALF_OPEN and o.probe))
        if trip and v.state != OPEN:
            v.state = OPEN
            v.until = now + max(p.open_s, o.retry_after_s or 0.0)
            v.probes = 0
        elif v.state == OPEN and o.retry_after_s is not None:
            v.until = max(v.until, now + o.retry_after_s)
    return Transition(v.target, before, v.state) if v.state != before else None


def take_probe(v: BreakerView, p: BreakerPolicy, now: float) -> tuple[bool, Transition | None]:
    """May a caller try this target now? Returns (allowed, transition)."""
    if v.state == CLOSED:
        return True, None
    if v.state == OPEN:
        if now < v.until:
            return False, None
        # A half-open round lasts open_s: probes that never report (a crashed replica, a
        # cancelled request) free their slots when it ends.
        v.state, v.probes, v.until = HALF_OPEN, 0, now + p.open_s
        t: Transition | None = Transition(v.target, OPEN, HALF_OPEN)
    else:
        t = None
        if now >= v.until:
            v.probes, v.until = 0, now + p.open_s
    if v.probes < p.half_open_probes:
        v.probes += 1
        return True, t
    return False, t
