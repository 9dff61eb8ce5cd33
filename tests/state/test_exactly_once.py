"""Settlement is idempotent on the record id, and reservations are held per request.

On both backends: the same record twice is counted once; a reservation is released by its
request's settlement exactly once, whatever the settlement thinks it reserved; one never
settled lapses after its hold; an admit that arrives after its request was settled (it
timed out on the way, and Redis ran it late) reserves nothing.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tollway.state.base import State
from tollway.state.guards import Admission, BudgetCheck, Settlement
from tollway.state.records import StepRecord


def step(rid: str, cost: float, session: str = "s1") -> StepRecord:
    return StepRecord(request_id=rid, time=time.time(), agent="a", team="t", session=session,
                      endpoint="chat", model="m", requested_model="m", provider="p",
                      status=200, cost_usd=cost, input_tokens=10, output_tokens=5)


def budget(reserve: float, limit: float = 10.0) -> BudgetCheck:
    return BudgetCheck("agent", "a", "day", limit, reserve)


async def admit(st: State, rid: str, bc: BudgetCheck, hold_s: float = 900.0) -> bool:
    v = await st.guards.admit(Admission("s1", "a", budgets=[bc], request_id=rid,
                                        hold_s=hold_s))
    return v.allowed


async def test_the_same_record_twice_counts_once(any_state: State) -> None:
    bc = budget(1.0)
    assert await admit(any_state, "r1", bc)
    settle = Settlement(request_id="r1", budgets=[(bc, 0.25)])
    await any_state.ledger.record(step("r1", 0.25), settle)
    await any_state.ledger.record(step("r1", 0.25), settle)  # a replay after a timeout
    rows = await any_state.ledger.spend("agent")
    assert [(r.key, r.requests, r.cost_usd) for r in rows] == [("a", 1, 0.25)]
    assert await any_state.guards.budget_usage(bc.key) == (0.25, 0.0)
    view = await any_state.ledger.session("s1")
    assert view is not None and len(view["steps"]) == 1


async def test_a_settlement_releases_its_own_reservation_only(any_state: State) -> None:
    mine, other = budget(1.0), budget(2.0)
    assert await admit(any_state, "mine", mine)
    assert await admit(any_state, "other", other)
    assert await any_state.guards.budget_usage(mine.key) == (0.0, 3.0)
    mine.reserve = 5.0  # whatever the caller thinks: the hold says what was reserved
    await any_state.ledger.record(None, Settlement(request_id="mine", budgets=[(mine, 0.5)]))
    await any_state.ledger.record(None, Settlement(request_id="mine", budgets=[(mine, 0.5)]))
    assert await any_state.guards.budget_usage(mine.key) == (0.5, 2.0)


async def test_a_reservation_never_settled_lapses(any_state: State) -> None:
    assert await admit(any_state, "lost", budget(4.0), hold_s=0.05)
    assert not await admit(any_state, "next", budget(7.0))  # 4 + 7 > 10 while it holds
    await asyncio.sleep(0.1)  # the hold's length, not a synchronisation
    assert await admit(any_state, "after", budget(7.0))  # the lapsed hold was released
    assert await any_state.guards.budget_usage(budget(0).key) == (0.0, 7.0)


async def test_an_admit_after_its_settlement_reserves_nothing(any_state: State) -> None:
    bc = budget(3.0)
    bc.holder = "late"
    await any_state.ledger.record(None, Settlement(request_id="late:release",
                                                   budgets=[(bc, 0.0)]))
    allowed = await admit(any_state, "late", bc)
    assert await any_state.guards.budget_usage(bc.key) == (0.0, 0.0)
    assert not allowed


@pytest.mark.parametrize("n", [50])
async def test_concurrent_settlements_leave_nothing_reserved(any_state: State, n: int) -> None:
    checks = [budget(0.1) for _ in range(n)]
    assert all(await asyncio.gather(*(admit(any_state, f"c{i}", bc)
                                      for i, bc in enumerate(checks))))
    await asyncio.gather(*(any_state.ledger.record(
        step(f"c{i}", 0.01, session=f"s{i}"), Settlement(request_id=f"c{i}",
                                                          budgets=[(bc, 0.01)]))
        for i, bc in enumerate(checks)))
    spent, reserved = await any_state.guards.budget_usage(checks[0].key)
    assert reserved == 0.0 and spent == pytest.approx(n * 0.01)
