"""The memory State: attribution per dimension, since-filters, bounded sessions."""

from __future__ import annotations

import time

from tollway.state.memory import MemoryState
from tollway.state.records import StepRecord


def step(i: int, *, agent: str = "a", session: str = "s1", cost: float = 1.0,
         t: float | None = None,
         tags: tuple[str, ...] = ()) -> StepRecord:
    return StepRecord(request_id=f"r{i}", time=t or time.time(), agent=agent, team="t",
                      session=session, endpoint="chat", model="m", requested_model="m",
                      provider="p", status=200, tags=tags, input_tokens=10, output_tokens=5,
                      cost_usd=cost)


async def test_spend_by_each_dimension_and_since() -> None:
    st = MemoryState()
    now = time.time()
    await st.ledger.record(step(1, agent="a", cost=1.0, t=now - 3 * 86400, tags=("x",)))
    await st.ledger.record(step(2, agent="a", cost=2.0, t=now, tags=("x", "y")))
    await st.ledger.record(step(3, agent="b", session="s2", cost=5.0, t=now))
    rows = {r.key: r for r in await st.ledger.spend("agent")}
    assert rows["a"].cost_usd == 3.0 and rows["a"].requests == 2 and rows["b"].cost_usd == 5.0
    recent = {r.key: r for r in await st.ledger.spend("agent", since=now - 3600)}
    assert recent["a"].cost_usd == 2.0
    assert [r.key for r in await st.ledger.spend("agent")] == ["b", "a"]  # most expensive first
    tags = {r.key: r.cost_usd for r in await st.ledger.spend("tag")}
    assert tags == {"x": 3.0, "y": 2.0}
    sessions = {r.key: r.cost_usd for r in await st.ledger.spend("session", since=now - 3600)}
    assert sessions == {"s1": 2.0, "s2": 5.0}


async def test_sessions_are_bounded_and_ordered() -> None:
    st = MemoryState(session_steps=3, max_sessions=2)
    for i in range(5):
        await st.ledger.record(step(i, session="s1"))
    view = await st.ledger.session("s1")
    assert view is not None
    assert view["steps"] == [] or [s["step"] for s in view["steps"]] == [3, 4, 5]
    assert view["cost_usd"] == 5.0 and view["steps_kept"] == 3
    await st.ledger.record(step(9, session="s2"))
    await st.ledger.record(step(10, session="s3"))
    assert await st.ledger.session("s1") is None  # least recently active dropped
    assert next(s["session"] for s in await st.ledger.sessions(sort="recent")) == "s3"


async def test_old_buckets_expire() -> None:
    st = MemoryState(retention_hours=2)
    now = time.time()
    await st.ledger.record(step(1, t=now - 5 * 3600))
    await st.ledger.record(step(2, t=now))
    assert sum(r.requests for r in await st.ledger.spend("agent")) == 1
