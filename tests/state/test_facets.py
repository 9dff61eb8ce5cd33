"""The cache and tool-state facets, on every backend (memory, Redis, and a Redis Cluster
seeded from each primary): what the admin API and the tool gate rely on. On a cluster,
purge and size must SCAN the node that holds the gateway's keys, and the tool state's
inline scripts must reach it too."""

from __future__ import annotations

import time

from tollway.state.base import State
from tollway.state.toolstate import APPROVED, PENDING, Approval, Repeats, ResultNote


async def wait_for(read, want) -> bool:  # type: ignore[no-untyped-def]
    """Poll an async read until it returns `want` (an expiry), for at most a second."""
    import asyncio

    deadline = time.monotonic() + 1.0
    while (got := await read()) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{got!r} != {want!r}")
        await asyncio.sleep(0.005)
    return True


async def test_cache_get_put_purge_size(any_state: State) -> None:
    cache = any_state.cache
    for i in range(30):
        await cache.put(f"c:agent=a:m{i % 3}:{i}", f"body{i}".encode(), 60)
    await cache.put("s:agent=a:m0:x", b"semantic", 60)
    await cache.put("c:agent=a:m0:short", b"gone soon", 0.001)
    assert await cache.get("c:agent=a:m1:1") == b"body1"
    assert await cache.get("c:agent=a:m1:nope") is None
    assert await cache.size("c:") in (30, 31)  # the short one may not be swept yet
    assert await cache.size("s:") == 1
    assert await cache.purge("c:agent=a:m0:*") in (10, 11)
    assert await cache.get("c:agent=a:m0:3") is None
    assert await cache.get("c:agent=a:m1:1") == b"body1"
    assert await cache.purge("c:*") == 20
    assert await cache.size("c:") == 0 and await cache.size("s:") == 1


async def test_tool_repeats_count_runs_of_one_result(any_state: State) -> None:
    tools = any_state.tools
    assert await tools.repeats("s1", "files.read", None) == Repeats()
    assert [(await tools.note_result("s1", ResultNote("files.read", r), 60)).call
            for r in "aab"] == [1, 2, 1]
    assert await tools.repeats("s1", "files.read", None) == Repeats(1)
    assert await tools.repeats("s2", "files.read", None) == Repeats()
    await tools.note_result("s1", ResultNote("files.read", None), 60)  # no result: run ends
    assert await tools.repeats("s1", "files.read", None) == Repeats()


async def test_tool_runs_over_normalised_results(any_state: State) -> None:
    """Per (session, tool), whatever the arguments: the run and the start of its result,
    noted with the call's own run in one go; an acknowledgement (None) ends it."""
    tools = any_state.tools
    assert await tools.repeats("s1", None, "fetch") == Repeats()
    for i, same in enumerate("aaa"):
        got = await tools.note_result(
            "s1", ResultNote(f"call{i}", "r", "fetch", same, "timeout after <dur>"), 60)
        assert got == Repeats(1, i + 1, "timeout after <dur>")
    assert await tools.repeats("s1", "call2", "fetch") == Repeats(1, 3, "timeout after <dur>")
    assert await tools.repeats("s1", "call2", None) == Repeats(1)  # only what is asked
    assert await tools.repeats("s2", None, "fetch") == Repeats()
    assert (await tools.note_result("s1", ResultNote(tool="fetch", same="b"), 60)).tool == 1
    await tools.note_result("s1", ResultNote(tool="fetch", same=None), 60)
    assert await tools.repeats("s1", None, "fetch") == Repeats()
    await tools.note_result("s1", ResultNote(tool="fetch", same="a", excerpt="x"), 0.001)
    assert await wait_for(lambda: tools.repeats("s1", None, "fetch"), Repeats())


async def test_approvals_are_decided_once(any_state: State) -> None:
    tools = any_state.tools
    a = Approval("files.write", "a", "t", "s1", "POST /files", expires=time.time() + 60)
    b = Approval("files.write", "a", "t", "s1", "POST /other", expires=time.time() + 60)
    await tools.approval_put(a)
    await tools.approval_put(b)
    assert [x.id for x in await tools.approvals()] == [a.id, b.id]
    got = await tools.approval_get(a.id)
    assert got is not None and got.status == PENDING
    decided = await tools.approval_decide(a.id, True, "ops", "fine")
    assert decided is not None and decided.status == APPROVED and decided.decided_by == "ops"
    again = await tools.approval_decide(a.id, False, "someone else", None)
    assert again is not None and again.status == APPROVED  # the first decision stands
    assert await tools.approval_decide("apr_nope", True, "ops", None) is None
