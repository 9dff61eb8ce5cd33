"""The State contract, run against MemoryState and RedisState alike, plus what only Redis
has: several processes sharing it, and surviving its outage."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pytest

from tollway.observe.metrics import Metrics
from tollway.state.base import State, StateUnavailable
from tollway.state.guards import (
    Admission,
    BudgetCheck,
    LoopCheck,
    RateCheck,
    Settlement,
    Verdict,
)
from tollway.state.memory import MemoryState
from tollway.state.records import SPEND_DIMENSIONS, StepRecord

if TYPE_CHECKING:
    from tests.state.conftest import MakeState, RedisServer

DEADLINE_S = 5.0


def step(i: int, *, agent: str = "a", session: str = "s1", cost: float = 1.0,
         t: float | None = None, tags: tuple[str, ...] = (), team: str = "t",
         model: str = "m", provider: str = "p") -> StepRecord:
    return StepRecord(request_id=f"r{i}", time=t or time.time(), agent=agent, team=team,
                      session=session, endpoint="chat", model=model, requested_model=model,
                      provider=provider, status=200, tags=tags, input_tokens=10,
                      output_tokens=5, cached_tokens=2, cache_write_tokens=1, cost_usd=cost)


def rpm(key: str, limit: int, cost: int = 1) -> RateCheck:
    return RateCheck(key, key.rsplit(":", 1)[-1], limit, cost)


def budget(reserve: float, limit: float = 1.0, scope: str = "agent",
           name: str = "a") -> BudgetCheck:
    return BudgetCheck(scope, name, "day", limit, reserve)


async def admit(st: State, session: str = "s1", agent: str = "a", *,
                rates: list[RateCheck] | None = None, budgets: list[BudgetCheck] | None = None,
                loop: LoopCheck | None = None) -> Verdict:
    return await st.guards.admit(Admission(session, agent, rates or [], budgets or [], loop))


def errors(metrics: Metrics, op: str) -> float:
    return metrics.registry.get_sample_value("tollway_state_errors_total", {"op": op}) or 0.0


async def until(check: Any, what: str) -> None:
    """Poll an async predicate until it holds (no fixed sleeps)."""
    end = time.monotonic() + DEADLINE_S
    while not await check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# --- rate limits ------------------------------------------------------------------------
async def test_gcra_allows_the_burst_then_refuses_with_retry_after(any_state: State) -> None:
    rc = rpm("agent:a:rpm", 3)  # one every 20 s, a minute of burst
    vs = [await admit(any_state, rates=[rc]) for _ in range(4)]
    assert [v.allowed for v in vs] == [True, True, True, False]
    assert [v.rate_state[0][0] for v in vs[:3]] == [2, 1, 0]
    assert vs[0].rate_state[0][1] == pytest.approx(20.0, abs=0.1)
    refused = vs[3]
    assert refused.denied_by == "rate" and refused.rate is rc and refused.rate_state == []
    assert 19.0 < refused.retry_after_s <= 20.0


async def test_rate_limits_are_all_or_nothing(any_state: State) -> None:
    wide, narrow = rpm("agent:a:rpm", 60), rpm("model:m:rpm", 1)
    v = await admit(any_state, rates=[wide, narrow])
    assert v.allowed and [r[0] for r in v.rate_state] == [59, 0]
    v = await admit(any_state, rates=[wide, narrow])
    assert not v.allowed and v.rate is narrow and [r[0] for r in v.rate_state] == [58]
    v = await admit(any_state, rates=[narrow, wide])  # refused on the first that fails
    assert v.rate is narrow and v.rate_state == [] and v.retry_after_s > 59
    v = await admit(any_state, rates=[wide])
    assert v.allowed and v.rate_state[0][0] == 58  # the refusals consumed nothing


async def test_token_settlement_moves_the_bucket(any_state: State) -> None:
    tpm = rpm("agent:a:tpm", 6000, cost=100)  # 10 ms a token
    v = await admit(any_state, rates=[tpm])
    assert v.rate_state[0][1] == pytest.approx(1.0, abs=0.1)
    await any_state.ledger.record(step(1), Settlement(token_rates=[(tpm, 200)]))  # 200 more used
    v = await admit(any_state, rates=[tpm])
    assert v.rate_state[0][1] == pytest.approx(4.0, abs=0.1)


# --- budgets ----------------------------------------------------------------------------
async def test_reservation_blocks_and_settlement_releases(any_state: State) -> None:
    first = budget(0.6)
    v = await admit(any_state, budgets=[first])
    assert v.allowed and v.budget_state == [(0.0, 0.0)]
    assert await any_state.guards.budget_usage(first.key) == (0.0, 0.6)
    v = await admit(any_state, budgets=[budget(0.6)])
    assert not v.allowed and v.denied_by == "budget" and v.budget is not None
    assert v.budget.reserve == 0.6 and v.budget_state == [(0.0, 0.6)]
    await any_state.ledger.record(step(1, cost=0.25), Settlement(budgets=[(first, 0.25)]))
    assert await any_state.guards.budget_usage(first.key) == (0.25, 0.0)
    assert (await admit(any_state, budgets=[budget(0.75)])).allowed  # exactly to the limit
    v = await admit(any_state, budgets=[budget(0.0001)])
    assert not v.allowed and v.budget_state == [(0.25, 0.75)]
    assert await any_state.guards.budget_usage("agent:nobody:all") == (0.0, 0.0)


async def test_budgets_are_all_or_nothing(any_state: State) -> None:
    team = budget(0.5, limit=10.0, scope="team", name="t")
    agent = budget(2.0, limit=1.0)
    v = await admit(any_state, budgets=[team, agent])
    assert not v.allowed and v.budget is agent and v.budget_state == [(0.0, 0.0), (0.0, 0.0)]
    assert await any_state.guards.budget_usage(team.key) == (0.0, 0.0)
    assert await any_state.guards.budget_usage(agent.key) == (0.0, 0.0)


async def test_concurrent_admissions_cannot_overshoot(any_state: State) -> None:
    bc = budget(0.3, limit=10.0, scope="global", name="global")
    vs = await asyncio.gather(*(admit(any_state, f"s{i}", budgets=[bc]) for i in range(200)))
    admitted = sum(v.allowed for v in vs)
    assert admitted * bc.reserve <= bc.limit
    assert admitted == 33  # 33 x 0.3 = 9.9; a 34th would make 10.2
    _, reserved = await any_state.guards.budget_usage(bc.key)
    assert reserved == pytest.approx(9.9) and reserved <= bc.limit


# --- kill switch ------------------------------------------------------------------------
async def test_kill_pause_resume(any_state: State) -> None:
    rc = rpm("agent:a:rpm", 1)
    await any_state.flags.set("session", "s1", True)
    v = await admit(any_state, "s1", rates=[rc], loop=LoopCheck("s1", "a", steps=True))
    assert v == Verdict(allowed=False, denied_by="killed")  # and nothing counted
    assert await any_state.flags.all() == {"session": ["s1"], "agent": []}
    await any_state.flags.set("agent", "a", True)
    assert (await admit(any_state, "s1")).denied_by == "killed"  # the session first
    assert (await admit(any_state, "s2")).denied_by == "paused"
    assert (await admit(any_state, "s2", agent="b")).allowed
    assert await any_state.flags.all() == {"session": ["s1"], "agent": ["a"]}
    await any_state.flags.set("session", "s1", False)
    await any_state.flags.set("agent", "a", False)
    assert await any_state.flags.all() == {"session": [], "agent": []}
    v = await admit(any_state, "s1", rates=[rc], loop=LoopCheck("s1", "a", steps=True))
    assert v.allowed and v.steps == 1  # the refused ones consumed no rate, counted no step


# --- loop counters ----------------------------------------------------------------------
async def test_fingerprint_counter_resets_after_its_window(any_state: State) -> None:
    def fp(f: str) -> LoopCheck:
        return LoopCheck("s1", "a", fingerprint=f, fp_window_s=0.6)  # 3 admits fit in it

    assert [(await admit(any_state, loop=fp("f00d"))).repeats for _ in range(3)] == [1, 2, 3]
    assert (await admit(any_state, loop=fp("beef"))).repeats == 1
    assert (await admit(any_state, "s2", loop=LoopCheck("s2", "a", "f00d", 0.6))).repeats == 1
    start = time.monotonic()

    async def reset() -> bool:
        return (await admit(any_state, loop=fp("f00d"))).repeats == 1

    await until(reset, "the fingerprint window to pass")
    assert time.monotonic() - start > 0.3


async def test_steps_age_and_chain_hand_offs(any_state: State) -> None:
    lc = LoopCheck("s1", "a", steps=True)
    vs = [await admit(any_state, loop=lc) for _ in range(3)]
    assert [v.steps for v in vs] == [1, 2, 3]
    assert vs[0].age_s == 0.0 and 0.0 <= vs[1].age_s <= vs[2].age_s < 1.0
    refused = await admit(any_state, loop=lc, budgets=[budget(5.0)])
    assert not refused.allowed and refused.steps == 4  # counted even when refused
    rounds = [(await admit(any_state, f"s{i}", agent, loop=LoopCheck(
        f"s{i}", agent, chain="c1"))).rounds for i, agent in enumerate("aabab")]
    assert rounds == [0, 0, 1, 2, 3]


# --- spend and sessions -----------------------------------------------------------------
async def test_spend_by_every_dimension_and_since(any_state: State) -> None:
    now = time.time()
    await any_state.ledger.record(step(1, cost=1.0, t=now - 3 * 86400, tags=("x",)))
    await any_state.ledger.record(step(2, cost=2.0, t=now, tags=("x", "y"), model="m2"))
    await any_state.ledger.record(step(3, agent="b", session="s2", team="u", cost=5.0, t=now,
                                provider="q"))
    rows = {r.key: r for r in await any_state.ledger.spend("agent")}
    assert rows["a"].cost_usd == 3.0 and rows["a"].requests == 2 and rows["b"].cost_usd == 5.0
    assert rows["a"].to_dict() == {
        "key": "a", "requests": 2, "input_tokens": 20, "output_tokens": 10,
        "cached_tokens": 4, "cache_write_tokens": 2, "cost_usd": 3.0}
    assert [r.key for r in await any_state.ledger.spend("agent")] == ["b", "a"]
    assert {r.key: r.cost_usd for r in await any_state.ledger.spend("agent", since=now - 3600)} == {
        "a": 2.0, "b": 5.0}

    def totals(rows: list[Any]) -> dict[str, float]:
        return {r.key: r.cost_usd for r in rows}

    assert totals(await any_state.ledger.spend("team")) == {"t": 3.0, "u": 5.0}
    assert totals(await any_state.ledger.spend("model")) == {"m": 6.0, "m2": 2.0}
    assert totals(await any_state.ledger.spend("provider")) == {"p": 3.0, "q": 5.0}
    assert totals(await any_state.ledger.spend("tag")) == {"x": 3.0, "y": 2.0}
    assert totals(await any_state.ledger.spend("tag", since=now - 3600)) == {"x": 2.0, "y": 2.0}
    assert totals(await any_state.ledger.spend("session")) == {"s1": 3.0, "s2": 5.0}
    assert totals(await any_state.ledger.spend("session", since=now - 3600)) == {
        "s1": 2.0, "s2": 5.0}
    s2 = next(r for r in await any_state.ledger.spend("session") if r.key == "s2")
    assert s2.extra == {"agent": "b", "team": "u"} and s2.to_dict()["agent"] == "b"
    assert await any_state.ledger.spend("session", since=time.time() + 60) == []
    assert await any_state.ledger.spend("agent", since=now + 7200) == []


async def test_sessions_are_bounded_listed_and_viewed(make_state: MakeState) -> None:
    st = await make_state(session_steps=3, max_sessions=2)
    for i in range(5):
        await st.ledger.record(step(i, session="s1", cost=float(i)))
    view = await st.ledger.session("s1")
    assert view is not None
    assert set(view) == {"session", "agent", "team", "first", "last", "steps", "input_tokens",
                         "output_tokens", "cached_tokens", "cost_usd", "steps_kept", "now",
                         "parents", "children"}  # the lineage (issue 13)
    assert [s["step"] for s in view["steps"]] == [3, 4, 5]
    assert [s["request_id"] for s in view["steps"]] == ["r2", "r3", "r4"]
    assert view["cost_usd"] == 10.0 and view["steps_kept"] == 3
    assert view["steps"][0]["tags"] == [] and view["steps"][0]["ttft_s"] is None
    await st.ledger.record(step(9, session="s2", agent="b", cost=20.0))
    await st.ledger.record(step(10, session="s3", agent="b"))
    assert await st.ledger.session("s1") is None  # least recently active dropped
    listed = await st.ledger.sessions(sort="recent")
    assert [s["session"] for s in listed] == ["s3", "s2"]
    assert set(listed[0]) == {"session", "agent", "team", "first", "last", "steps",
                              "input_tokens", "output_tokens", "cached_tokens", "cost_usd"}
    assert [s["session"] for s in await st.ledger.sessions()] == ["s2", "s3"]  # by cost
    await st.ledger.record(step(11, session="s3", agent="b"))
    assert [s["session"] for s in await st.ledger.sessions(sort="steps", limit=1)] == ["s3"]
    assert await st.ledger.sessions(agent="a") == []
    assert await st.ledger.sessions(since=time.time() + 60) == []
    await st.ledger.record(step(12, session="s1"))  # comes back afresh
    view = await st.ledger.session("s1")
    assert view is not None and view["steps_kept"] == 1 and view["cost_usd"] == 1.0


async def test_idle_sessions_are_handed_out_once(any_state: State) -> None:
    await any_state.ledger.record(step(1, session="s1", cost=1.0))
    await any_state.ledger.record(step(2, session="s2", cost=2.0))
    assert await any_state.ledger.idle_sessions(3600) == []  # not quiet long enough
    assert await any_state.ledger.idle_sessions(0, limit=1) == [1.0]  # least recently active first
    assert await any_state.ledger.idle_sessions(0) == [2.0]
    assert await any_state.ledger.idle_sessions(0) == []
    await any_state.ledger.record(step(3, session="s1", cost=1.0))  # once observed, always
    await any_state.ledger.record(step(4, session="s3", cost=4.0))
    assert await any_state.ledger.idle_sessions(0) == [4.0]


# --- Redis only -------------------------------------------------------------------------
async def test_redis_matches_memory_call_for_call(make_shared_state: MakeState) -> None:
    """The same calls give the same Verdicts and the same reports, to the last bit."""
    mem, red = MemoryState(3, 4, 48), await make_shared_state(
        session_steps=3, max_sessions=4, retention_hours=48)
    t0 = time.time() - 100
    rates = [rpm("agent:a:rpm", 5), rpm("key:k:tpm", 1000, cost=70)]
    budgets = [budget(0.1, limit=0.6), budget(0.07, limit=5.0, scope="team", name="t")]
    clocked: dict[str, list[float]] = {"memory": [], "redis": []}
    denials: dict[str, list[str | None]] = {"memory": [], "redis": []}

    def comparable(name: str, v: Verdict) -> dict[str, Any]:
        """The Verdict with the clock-dependent numbers set aside (compared approximately)."""
        d = dataclasses.asdict(v)
        clocked[name] += [d.pop("retry_after_s"), d.pop("age_s")]
        clocked[name] += [s for _, s in d["rate_state"]]
        d["rate_state"] = [n for n, _ in d["rate_state"]]
        return d

    def unclocked(d: dict[str, Any] | None) -> dict[str, Any] | None:
        return d and {k: v for k, v in d.items() if k not in ("now", "last")}

    outs: dict[str, list[Any]] = {"memory": [], "redis": []}
    for name, st in (("memory", mem), ("redis", red)):
        for i in range(12):
            sid = f"s{i % 5}"
            agent = "ab"[i % 2]
            v = await admit(st, sid, agent, rates=rates if i < 8 else [], budgets=budgets,
                            loop=LoopCheck(sid, agent, f"f{i % 3}", 60, True, "c"))
            outs[name].append(comparable(name, v))
            denials[name].append(v.denied_by)
            cost = 0.1 * (i % 4) + 0.01 * i
            await st.ledger.record(
                step(i, agent=agent, session=sid, cost=cost, t=t0 + i, tags=("x", f"t{i % 2}")),
                Settlement(budgets=[(bc, cost / 2) for bc in budgets] if v.allowed else [],
                           token_rates=[(rates[1], 3)]))
        for bc in budgets:
            outs[name].append(await st.guards.budget_usage(bc.key))
        for dim in SPEND_DIMENSIONS:
            for since in (None, t0 + 6):
                outs[name].append([r.to_dict() | {"cost": r.cost_usd}
                                   for r in await st.ledger.spend(dim, since)])
        for sort in ("cost", "steps", "recent"):
            outs[name].append([unclocked(d) for d in await st.ledger.sessions(sort=sort)])
        outs[name].append([unclocked(d) for d in await st.ledger.sessions(agent="a", since=t0 + 2)])
        for i in range(6):
            outs[name].append(unclocked(await st.ledger.session(f"s{i}")))
    for got, want in zip(outs["redis"], outs["memory"], strict=True):
        assert got == want
    assert clocked["redis"] == pytest.approx(clocked["memory"], abs=0.5)
    assert {"rate", "budget", None} <= set(denials["memory"])  # every path was taken


async def test_idle_sessions_once_across_processes(make_shared_state: MakeState) -> None:
    one, two = await make_shared_state(), await make_shared_state()
    costs = [float(i) for i in range(1, 61)]
    for i, c in enumerate(costs):
        await (one, two)[i % 2].ledger.record(step(i, session=f"s{i}", cost=c))
    seen: list[float] = []
    while True:
        got = await asyncio.gather(*(st.ledger.idle_sessions(0, limit=7) for st in (one, two) * 3))
        if not any(got):
            break
        seen += [c for batch in got for c in batch]
    assert sorted(seen) == costs


async def test_outage_queues_spend_and_recovers(redis_server: RedisServer,
                                                make_redis_state: MakeState) -> None:
    metrics = Metrics()
    st = await make_redis_state(metrics, timeout_ms=200, retry_interval_s=0.05)
    assert await st.ready()
    redis_server.stop()
    await st.ledger.record(step(1, cost=2.0))  # was up: tries, fails, queues; does not raise
    assert st.ledger.pending == 1 and errors(metrics, "record") == 1
    assert not await st.ready()
    begun = time.monotonic()
    with pytest.raises(StateUnavailable):
        await admit(st, budgets=[budget(0.1)])
    assert time.monotonic() - begun < 0.05  # down: no waiting on the timeout
    assert errors(metrics, "admit") == 1
    for i, c in ((2, 3.0), (3, 4.0)):
        await st.ledger.record(step(i, cost=c))
    assert st.ledger.pending == 3
    with pytest.raises(StateUnavailable):
        await st.ledger.spend("agent")

    async def probed() -> bool:
        return errors(metrics, "probe") >= 2

    await until(probed, "the probe to try")
    redis_server.start()  # empty: the server keeps nothing

    async def ready() -> bool:
        return await st.ready()

    await until(ready, "the state to come back up")
    assert st.ledger.pending == 0
    assert [(r.key, r.cost_usd, r.requests) for r in await st.ledger.spend("agent")] == [
        ("a", 9.0, 3)]
    view = await st.ledger.session("s1")
    assert view is not None and [s["request_id"] for s in view["steps"]] == ["r1", "r2", "r3"]
    assert (await admit(st, budgets=[budget(0.1)])).allowed


async def test_starts_down_and_bounds_the_queue(redis_server: RedisServer,
                                                make_redis_state: MakeState) -> None:
    redis_server.stop()
    metrics = Metrics()
    st = await make_redis_state(metrics, pending_max=2, retry_interval_s=0.05)  # no raise
    assert not await st.ready()
    with pytest.raises(StateUnavailable):
        await admit(st)
    for i, c in ((1, 1.0), (2, 2.0), (3, 3.0)):
        await st.ledger.record(step(i, cost=c))
    assert st.ledger.pending == 2 and errors(metrics, "dropped") == 1
    redis_server.start()

    async def ready() -> bool:
        return await st.ready()

    await until(ready, "the state to come up")
    assert [r.cost_usd for r in await st.ledger.spend("agent")] == [5.0]  # the two newest


async def test_spend_written_before_counters_were_packed_still_adds_up(
        make_shared_state: MakeState) -> None:
    """A gateway upgraded in the middle of an hour and of a session: the hour bucket and the
    session summary hold counters one field each (the layout before); new records pack them,
    and every reader adds both."""
    st = await make_shared_state()
    link = st._link  # type: ignore[attr-defined]
    now = time.time()
    hour = str(int(now // 3600))
    await st.ledger.record(step(1, cost=0.5, t=now))  # a session and an hour exist
    r = link.redis
    old = {"requests": 3, "input": 30, "output": 15, "cached": 6, "cache_write": 3}
    await r.hset(link.key("sp", "agent", hour), mapping={
        **{f"old-agent|{k}": v for k, v in old.items()}, "old-agent|cost": "0.25"})
    await r.zadd(link.key("sessions"), {"s-old": now})
    await r.hset(link.key("se", "s-old"), mapping={
        "agent": "old-agent", "team": "t", "first": repr(now - 60), "last": repr(now - 1),
        "steps": 4, **old, "cost": "0.25"})
    await st.ledger.record(step(2, agent="old-agent", session="s-old", cost=1.0, t=now))
    await st.ledger.record(step(3, agent="old-agent", session="s-old", cost=2.0, t=now))
    rows = {x.key: x for x in await st.ledger.spend("agent")}
    assert rows["old-agent"].to_dict() == {
        "key": "old-agent", "requests": 5, "input_tokens": 50, "output_tokens": 25,
        "cached_tokens": 10, "cache_write_tokens": 5, "cost_usd": 3.25}
    assert rows["a"].cost_usd == 0.5
    view = await st.ledger.session("s-old")
    assert view is not None and [x["step"] for x in view["steps"]] == [5, 6]
    sessions = {x.key: x for x in await st.ledger.spend("session")}
    assert sessions["s-old"].cost_usd == 3.25 and sessions["s-old"].requests == 5
    fields = await r.hgetall(link.key("se", "s-old"))
    assert "cost" not in fields and fields["n"].split()[:2] == ["6", "5"]
