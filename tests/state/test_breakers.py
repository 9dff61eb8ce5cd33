"""Circuit breakers in the shared state, run against MemoryState and RedisState alike, plus
what only Redis has: probes rationed across processes, and outcomes surviving an outage."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pytest

from tollway.observe.metrics import Metrics
from tollway.state.base import State, StateUnavailable
from tollway.state.breakers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerOutcome,
    BreakerPolicy,
    BreakerView,
    Transition,
)
from tollway.state.guards import BudgetCheck, Settlement
from tollway.state.memory import MemoryState
from tollway.state.records import StepRecord

if TYPE_CHECKING:
    from tests.conftest import RedisServer
    from tests.state.conftest import MakeState

DEADLINE_S = 5.0
# Nothing trips by accident: each test lowers the one threshold it is about.
CALM = BreakerPolicy(consecutive_failures=100, failure_rate=1.0, window_s=60.0,
                     min_requests=100, open_s=0.2, half_open_probes=1)


def policy(**kw: Any) -> BreakerPolicy:
    return dataclasses.replace(CALM, **kw)


def outcome(ok: bool, pol: BreakerPolicy = CALM, target: str = "oai/gpt", *,
            latency_s: float = 0.1, probe: bool = False,
            retry_after_s: float | None = None) -> BreakerOutcome:
    return BreakerOutcome(target, ok, latency_s, pol, probe, retry_after_s)


async def feed(st: State, *outcomes: BreakerOutcome) -> list[Transition]:
    """Record outcomes without a step (settlement only), as the router does per attempt."""
    return await st.ledger.record(None, Settlement(breakers=list(outcomes)))


async def view(st: State, target: str = "oai/gpt") -> BreakerView:
    return (await st.breakers.views([target]))[target]


async def wait_past(t: float) -> None:
    """Poll the clock until it has passed t (no fixed sleeps)."""
    end = time.monotonic() + DEADLINE_S
    while time.time() <= t:
        assert time.monotonic() < end, f"timed out waiting for {t}"
        await asyncio.sleep(0.01)


def step(i: int) -> StepRecord:
    return StepRecord(request_id=f"r{i}", time=time.time(), agent="a", team="t",
                      session="s1", endpoint="chat", model="m", requested_model="m",
                      provider="p", status=200, cost_usd=1.0)


async def opened(st: State, pol: BreakerPolicy, target: str = "oai/gpt") -> BreakerView:
    """Open the breaker with one failure carrying an upstream Retry-After of 0 (so it opens
    for open_s whatever the thresholds)."""
    assert await feed(st, outcome(False, pol, target, retry_after_s=0.0)) == [
        Transition(target, CLOSED, OPEN)]
    v = await view(st, target)
    assert v.state == OPEN
    return v


# --- closed -> open ---------------------------------------------------------------------
async def test_consecutive_failures_open_it(any_state: State) -> None:
    pol = policy(consecutive_failures=3)
    assert await feed(any_state, outcome(False, pol), outcome(False, pol)) == []
    assert await feed(any_state, outcome(True, pol)) == []  # a success resets the run
    assert (await view(any_state)).failures == 0
    assert await feed(any_state, outcome(False, pol), outcome(False, pol)) == []
    v = await view(any_state)
    assert (v.state, v.failures, v.window_requests, v.window_failures) == (CLOSED, 2, 5, 4)
    before = time.time()
    assert await feed(any_state, outcome(False, pol)) == [Transition("oai/gpt", CLOSED, OPEN)]
    v = await view(any_state)
    assert v.state == OPEN and v.failures == 3 and v.probes == 0
    assert before + pol.open_s <= v.until <= time.time() + pol.open_s
    assert await feed(any_state, outcome(False, pol)) == []  # already open: no transition
    assert (await view(any_state)).until == v.until  # nor a longer wait


async def test_failure_rate_over_the_window_opens_it(any_state: State) -> None:
    pol = policy(failure_rate=0.5, min_requests=4)
    assert await feed(any_state, outcome(True, pol), outcome(False, pol),
                      outcome(True, pol)) == []
    t = await feed(any_state, outcome(False, pol))  # 2 of 4 failed: 0.5 >= 0.5
    assert t == [Transition("oai/gpt", CLOSED, OPEN)]
    v = await view(any_state)
    assert (v.state, v.failures, v.window_requests, v.window_failures) == (OPEN, 1, 4, 2)


async def test_failure_rate_needs_min_requests(any_state: State) -> None:
    pol = policy(failure_rate=0.5, min_requests=4)
    # every one failed, but only 3 in the window
    assert await feed(any_state, *(outcome(False, pol) for _ in range(3))) == []
    assert await feed(any_state, outcome(True, pol)) == []  # 3 of 4, but a success never trips
    v = await view(any_state)
    assert (v.state, v.window_requests, v.window_failures) == (CLOSED, 4, 3)
    assert await feed(any_state, outcome(False, pol)) == [Transition("oai/gpt", CLOSED, OPEN)]


async def test_the_window_starts_afresh(any_state: State) -> None:
    pol = policy(failure_rate=0.5, min_requests=4, window_s=0.2)
    assert await feed(any_state, *(outcome(False, pol) for _ in range(3))) == []
    v = await view(any_state)
    await wait_past(v.window_start + pol.window_s)
    assert await feed(any_state, outcome(False, pol)) == []  # 1 of 1 in a new window
    v = await view(any_state)
    assert (v.state, v.failures, v.window_requests, v.window_failures) == (CLOSED, 4, 1, 1)


async def test_a_slow_success_counts_as_a_failure(any_state: State) -> None:
    pol = policy(consecutive_failures=2, latency_s=1.0)
    assert await feed(any_state, outcome(True, pol, latency_s=2.0)) == []
    v = await view(any_state)
    assert (v.failures, v.window_failures) == (1, 1)
    assert await feed(any_state, outcome(True, pol, latency_s=1.0)) == []  # at the limit: ok
    assert (await view(any_state)).failures == 0
    assert await feed(any_state, outcome(True, pol, latency_s=1.5),
                      outcome(True, pol, latency_s=9.0)) == [
        Transition("oai/gpt", CLOSED, OPEN)]


async def test_retry_after_opens_it_for_at_least_that_long(any_state: State) -> None:
    pol = policy(open_s=0.2)
    before = time.time()
    t = await feed(any_state, outcome(False, pol, retry_after_s=30.0))
    assert t == [Transition("oai/gpt", CLOSED, OPEN)]
    v = await view(any_state)
    assert before + 30.0 <= v.until <= time.time() + 30.0
    # shorter than open_s: open for open_s
    before = time.time()
    await feed(any_state, outcome(False, pol, "other", retry_after_s=0.05))
    w = await view(any_state, "other")
    assert w.state == OPEN and before + pol.open_s <= w.until <= time.time() + pol.open_s
    # while open, a longer Retry-After extends it, a shorter one does not shorten it
    assert await feed(any_state, outcome(False, pol, "other", retry_after_s=60.0)) == []
    assert (await view(any_state, "other")).until >= before + 60.0
    assert await feed(any_state, outcome(False, pol, retry_after_s=1.0)) == []
    assert (await view(any_state)).until == v.until


# --- open -> half_open -> closed / open ---------------------------------------------------
async def test_probes_wait_for_until_then_are_rationed(any_state: State) -> None:
    pol = policy(half_open_probes=2)
    v = await opened(any_state, pol)
    allowed, early, t = await any_state.breakers.probe("oai/gpt", pol)
    assert not allowed and t is None and early.state == OPEN and early.until == v.until
    await wait_past(v.until)
    allowed, after, t = await any_state.breakers.probe("oai/gpt", pol)
    assert allowed and t == Transition("oai/gpt", OPEN, HALF_OPEN)
    # the half-open round lasts open_s; unanswered probe slots are freed when it ends
    assert (after.state, after.probes) == (HALF_OPEN, 1) and after.until > v.until
    allowed, after, t = await any_state.breakers.probe("oai/gpt", pol)
    assert allowed and t is None and after.probes == 2
    for _ in range(3):
        allowed, after, t = await any_state.breakers.probe("oai/gpt", pol)
        assert not allowed and t is None and after.probes == 2
    assert (await view(any_state)).probes == 2
    # a request that was no probe (in flight since before it opened) neither frees a slot
    # nor decides: only a probe's outcome closes or re-opens it
    assert await feed(any_state, outcome(False, pol)) == []
    assert (await view(any_state)).state == HALF_OPEN
    assert await feed(any_state, outcome(True, pol)) == []
    v = await view(any_state)
    assert (v.state, v.probes) == (HALF_OPEN, 2)


async def test_a_closed_breaker_always_allows(any_state: State) -> None:
    allowed, v, t = await any_state.breakers.probe("fresh", CALM)
    assert allowed and t is None and v.state == CLOSED and v.probes == 0
    assert list(await any_state.breakers.views()) == ["fresh"]


async def test_a_successful_probe_closes_it(any_state: State) -> None:
    pol = policy()
    await feed(any_state, outcome(True, pol), outcome(False, pol))  # some history
    v = await opened(any_state, pol)
    await wait_past(v.until)
    assert (await any_state.breakers.probe("oai/gpt", pol))[0]
    t = await feed(any_state, outcome(True, pol, probe=True))
    assert t == [Transition("oai/gpt", HALF_OPEN, CLOSED)]
    v = await view(any_state)
    assert (v.state, v.until, v.failures, v.window_requests, v.window_failures, v.probes) == (
        CLOSED, 0.0, 0, 0, 0, 0)
    allowed, _, t = await any_state.breakers.probe("oai/gpt", pol)
    assert allowed and t is None


async def test_a_failed_probe_opens_it_again(any_state: State) -> None:
    pol = policy(open_s=0.2)
    v = await opened(any_state, pol)
    await wait_past(v.until)
    assert (await any_state.breakers.probe("oai/gpt", pol))[0]
    before = time.time()
    t = await feed(any_state, outcome(False, pol, probe=True))
    assert t == [Transition("oai/gpt", HALF_OPEN, OPEN)]
    v = await view(any_state)
    assert v.state == OPEN and v.probes == 0
    assert before + pol.open_s <= v.until <= time.time() + pol.open_s
    assert not (await any_state.breakers.probe("oai/gpt", pol))[0]
    await wait_past(v.until)
    allowed, _, t = await any_state.breakers.probe("oai/gpt", pol)  # and round again
    assert allowed and t == Transition("oai/gpt", OPEN, HALF_OPEN)


# --- listing and recording --------------------------------------------------------------
async def test_breaker_views_lists_them(any_state: State) -> None:
    assert await any_state.breakers.views() == {}
    pol = policy(consecutive_failures=1)
    t = await feed(any_state, outcome(True, pol, "a/x"), outcome(False, pol, "b/y"),
                   outcome(False, pol, "a/x"))
    assert t == [Transition("b/y", CLOSED, OPEN), Transition("a/x", CLOSED, OPEN)]
    views = await any_state.breakers.views()
    assert sorted(views) == ["a/x", "b/y"]
    assert (views["a/x"].window_requests, views["a/x"].window_failures) == (2, 1)
    assert all(v.target == name and v.state == OPEN for name, v in views.items())
    assert list(await any_state.breakers.views(["b/y", "nope"])) == ["b/y"]
    assert await any_state.breakers.views([]) == {}
    d = views["b/y"].to_dict()
    assert d == {"target": "b/y", "state": OPEN, "until": views["b/y"].until,
                 "consecutive_failures": 1, "window_requests": 1, "window_failures": 1,
                 "probes_in_flight": 0}


async def test_record_with_a_step_returns_transitions(any_state: State) -> None:
    pol = policy(consecutive_failures=1)
    t = await any_state.ledger.record(step(1), Settlement(breakers=[outcome(False, pol)]))
    assert t == [Transition("oai/gpt", CLOSED, OPEN)]
    assert [r.key for r in await any_state.ledger.spend("agent")] == ["a"]
    assert await any_state.ledger.record(step(2)) == []


async def test_record_without_a_step_only_settles(any_state: State) -> None:
    bc = BudgetCheck("agent", "a", "day", 10.0, 0.0)
    assert await any_state.ledger.record(None, Settlement(budgets=[(bc, 0.5)])) == []
    assert await any_state.ledger.record(None) == []
    assert await any_state.guards.budget_usage(bc.key) == (0.5, 0.0)
    assert await any_state.ledger.spend("agent") == [] and await any_state.ledger.sessions() == []
    assert await any_state.breakers.views() == {}


async def test_transitions_match_memory(make_redis_state: MakeState) -> None:
    """One script of outcomes and probes on both backends: the same transitions and the same
    breakers (the clocked fields within the time the script takes)."""
    mem, red = MemoryState(), await make_redis_state()
    consec = policy(consecutive_failures=2, half_open_probes=2)
    rate = policy(failure_rate=0.6, min_requests=5)
    slow = policy(latency_s=0.5, consecutive_failures=3)
    script: list[list[BreakerOutcome]] = [
        [outcome(False, consec, "c"), outcome(True, rate, "r"), outcome(True, slow, "s")],
        [outcome(True, consec, "c", probe=True)],  # a probe on a closed one: nothing to free
        [outcome(False, consec, "c"), outcome(False, consec, "c")],
        [outcome(False, rate, "r") for _ in range(3)],
        [outcome(True, slow, "s", latency_s=0.6), outcome(True, slow, "s", latency_s=0.4)],
        [outcome(False, rate, "r"), outcome(True, slow, "s", latency_s=0.7)],
        [outcome(False, CALM, "ra", retry_after_s=0.1)],
        [outcome(False, CALM, "ra", retry_after_s=0.3), outcome(True, slow, "s", latency_s=1)],
        [outcome(True, slow, "s", latency_s=2.0)],
    ]
    results: dict[str, list[Any]] = {"memory": [], "redis": []}
    clocked: dict[str, list[float]] = {"memory": [], "redis": []}

    def comparable(name: str, views: dict[str, BreakerView]) -> list[dict[str, Any]]:
        out = []
        for target in sorted(views):  # memory lists them as first seen, Redis sorted
            d = dataclasses.asdict(views[target])
            clocked[name] += [d.pop("until"), d.pop("window_start")]
            out.append(d)
        return out

    async def run(name: str, st: State) -> None:
        for outcomes in script:
            results[name].append(await feed(st, *outcomes))
        results[name].append(comparable(name, await st.breakers.views()))
        await wait_past(max(v.until for v in (await st.breakers.views()).values()))
        for target, pol in (("c", consec), ("c", consec), ("c", consec), ("r", rate),
                            ("s", slow), ("ra", CALM), ("new", CALM)):
            allowed, v, t = await st.breakers.probe(target, pol)
            results[name].append((allowed, t, comparable(name, {target: v})))
        results[name].append(await feed(st, outcome(True, consec, "c", probe=True),
                                        outcome(False, rate, "r", probe=True),
                                        outcome(False, slow, "s", probe=True),
                                        outcome(True, consec, "c", probe=True)))
        results[name].append(comparable(name, await st.breakers.views()))

    await asyncio.gather(run("memory", mem), run("redis", red))
    for got, want in zip(results["redis"], results["memory"], strict=True):
        assert got == want
    assert clocked["redis"] == pytest.approx(clocked["memory"], abs=0.5)
    # every transition was taken
    kinds = {(t.before, t.after) for r in results["memory"] if isinstance(r, list)
             for t in r if isinstance(t, Transition)}
    assert kinds == {(CLOSED, OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}
    assert any(r[1] == Transition("c", OPEN, HALF_OPEN) for r in results["memory"]
               if isinstance(r, tuple))


# --- only Redis: several processes, and outages -------------------------------------------
async def test_probes_are_rationed_across_processes(make_redis_state: MakeState) -> None:
    one, two = await make_redis_state(), await make_redis_state()
    pol = policy(half_open_probes=3)
    v = await opened(one, pol)
    await wait_past(v.until)
    got = await asyncio.gather(*(st.breakers.probe("oai/gpt", pol) for st in (one, two) * 10))
    assert sum(allowed for allowed, _, _ in got) == pol.half_open_probes
    assert [t for _, _, t in got if t is not None] == [Transition("oai/gpt", OPEN, HALF_OPEN)]
    assert (await view(two)).probes == pol.half_open_probes
    # one probe's success, reported by the other process, closes it for both
    assert await feed(two, outcome(True, pol, probe=True)) == [
        Transition("oai/gpt", HALF_OPEN, CLOSED)]
    assert (await view(one)).state == CLOSED


async def test_breakers_while_redis_is_down(redis_server: RedisServer,
                                            make_redis_state: MakeState) -> None:
    metrics = Metrics()
    st = await make_redis_state(metrics, timeout_ms=200, retry_interval_s=0.05)
    pol = policy(consecutive_failures=1)
    redis_server.stop()
    assert await feed(st, outcome(False, pol)) == []  # queued, nothing to report yet
    assert st.ledger.pending == 1
    with pytest.raises(StateUnavailable):
        await st.breakers.probe("oai/gpt", pol)
    with pytest.raises(StateUnavailable):
        await st.breakers.views()
    assert (metrics.registry.get_sample_value("tollway_state_errors_total",
                                              {"op": "breaker"}) or 0.0) == 1
    redis_server.start()
    end = time.monotonic() + DEADLINE_S
    while not await st.ready():
        assert time.monotonic() < end, "timed out waiting for the state to come back up"
        await asyncio.sleep(0.01)
    assert st.ledger.pending == 0
    assert (await view(st)).state == OPEN  # the queued outcome was applied on recovery


async def test_lost_probes_free_their_slots_after_a_round(any_state: State) -> None:
    pol = policy(half_open_probes=1)
    v = await opened(any_state, pol)
    await wait_past(v.until)
    allowed, first, _ = await any_state.breakers.probe("oai/gpt", pol)
    assert allowed  # this probe never reports (its replica died, say)
    allowed, _, _ = await any_state.breakers.probe("oai/gpt", pol)
    assert not allowed
    await wait_past(first.until)
    allowed, again, t = await any_state.breakers.probe("oai/gpt", pol)
    assert allowed and t is None and again.state == HALF_OPEN and again.probes == 1
