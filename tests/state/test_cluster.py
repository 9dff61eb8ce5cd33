"""What only a Redis Cluster has: redirections, nodes that do not know a script, a client
pointed at it without `cluster: true`, and the whole cluster going away and coming back.
(A primary failing over under traffic is tested end to end, in tests/e2e/test_cluster.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import pytest
from tests.conftest import free_port
from tests.state.conftest import redis_config
from tests.state.test_redis_state import admit, budget, errors, rpm, step, until

from tollway.observe.metrics import Metrics
from tollway.state.base import StateUnavailable
from tollway.state.guards import Settlement
from tollway.state.redis import RedisState
from tollway.state.toolstate import Repeats, ResultNote

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.redis_cluster import LocalCluster
    from tests.state.conftest import MakeState


async def test_spend_written_through_any_seed_lands_on_the_owner(
        redis_cluster: LocalCluster, make_cluster_state: MakeState) -> None:
    states = [await make_cluster_state(seed=i) for i in range(3)]
    for i, st in enumerate(states):
        await st.ledger.record(step(i, cost=1.0 + i))
    owner = redis_cluster.owner("{tollway}:probe")
    others = [n for n in redis_cluster.primaries_by_slot() if n is not owner]
    assert owner.call("DBSIZE") > 0 and [n.call("DBSIZE") for n in others] == [0, 0]
    for st in states:  # one ledger, whichever node a gateway was pointed at
        assert [(r.key, r.cost_usd, r.requests) for r in await st.ledger.spend("agent")] == [
            ("a", 6.0, 3)]


async def test_nodes_that_do_not_know_a_script_are_sent_it(
        redis_cluster: LocalCluster, make_cluster_state: MakeState) -> None:
    st = await make_cluster_state(seed=1)
    bc = budget(0.5)
    assert (await admit(st, budgets=[bc])).allowed
    for node in redis_cluster.primaries_by_slot():  # as on a primary just promoted
        node.call("SCRIPT", "FLUSH")
    assert (await admit(st, budgets=[budget(0.4)])).allowed
    await st.ledger.record(step(1, cost=0.25), Settlement(budgets=[(bc, 0.25)]))
    assert (await st.tools.note_result("s1", ResultNote("t", "r", "tool", "x"), 60)) == \
        Repeats(1, 1, "")
    assert await st.tools.repeats("s1", "t", "tool") == Repeats(1, 1, "")
    assert await st.guards.budget_usage(bc.key) == (0.25, 0.4)
    assert await st.ready()


async def test_a_burst_beyond_the_pool_waits_for_a_turn(make_cluster_state: MakeState) -> None:
    """At most max_connections commands in flight; the rest wait (as with one Redis),
    rather than fail with MaxConnectionsError and take the state down."""
    metrics = Metrics()
    st = await make_cluster_state(metrics, seed=2, max_connections=2)
    bc = budget(0.01, limit=100.0, scope="global", name="global")
    vs = await asyncio.gather(*(admit(st, f"s{i}", budgets=[bc]) for i in range(300)))
    assert all(v.allowed for v in vs) and await st.ready()
    assert errors(metrics, "admit") == 0
    assert await st.guards.budget_usage(bc.key) == (0.0, pytest.approx(3.0))


async def test_an_unreachable_cluster_is_down() -> None:
    metrics = Metrics()
    nowhere = RedisState(redis_config(f"redis://127.0.0.1:{free_port()}/0", cluster=True,
                                      retry_interval_s=0.05, pending_max=5), metrics)
    await nowhere.start()  # no raise
    try:
        assert not await nowhere.ready()
        begun = time.monotonic()
        with pytest.raises(StateUnavailable):
            await admit(nowhere, rates=[rpm("agent:a:rpm", 5)])
        assert time.monotonic() - begun < 0.05  # down: no waiting
        await nowhere.ledger.record(step(1))
        assert nowhere.ledger.pending == 1
        with pytest.raises(StateUnavailable):
            await nowhere.ledger.spend("agent")
        with pytest.raises(StateUnavailable):
            await nowhere.cache.size()
        assert await nowhere.cache.get("c:x") is None

        async def probed() -> bool:
            return errors(metrics, "probe") >= 2

        await until(probed, "the probe to try again")
        assert not await nowhere.ready()
    finally:
        await nowhere.close()


async def test_whole_cluster_stopped_and_restarted(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    metrics = Metrics()
    st = RedisState(redis_config(cluster.primaries_by_slot()[1].url, cluster=True,
                                 timeout_ms=200, retry_interval_s=0.05), metrics)
    await st.start()
    try:
        await _stop_and_restart(cluster, st)
    finally:
        await st.close()


async def _stop_and_restart(cluster: LocalCluster, st: RedisState) -> None:
    await st.ledger.record(step(1, cost=1.0))
    cluster.stop()
    try:
        await st.ledger.record(step(2, cost=2.0))  # fails, queues, does not raise
        assert st.ledger.pending == 1 and not await st.ready()
        with pytest.raises(StateUnavailable):
            await admit(st)
        await st.ledger.record(step(3, cost=3.0))
        assert st.ledger.pending == 2
    finally:
        cluster.restart()

    async def ready() -> bool:
        return await st.ready()

    await until(ready, "the state to come back up")
    assert st.ledger.pending == 0
    # The restarted cluster kept nothing (no persistence): what was queued is all there is.
    assert [(r.key, r.cost_usd, r.requests) for r in await st.ledger.spend("agent")] == [
        ("a", 5.0, 2)]
    assert (await admit(st, budgets=[budget(0.1)])).allowed


async def test_a_single_redis_client_pointed_at_a_cluster_is_down_and_says_why(
        redis_cluster: LocalCluster, make_redis_state: MakeState,
        caplog: pytest.LogCaptureFixture) -> None:
    """Without `cluster: true`, a node that does not own the gateway's slot answers every
    command with MOVED: the state is down (not up and dropping every record), the spend is
    queued, and the log names the fix."""
    other = redis_cluster.primaries_by_slot()[1]
    metrics = Metrics()
    with caplog.at_level(logging.ERROR, logger="tollway.state.redis"):
        st = RedisState(redis_config(other.url, retry_interval_s=0.05), metrics)
        await st.start()
    try:
        assert not await st.ready()
        assert "set state.redis.cluster: true" in caplog.text
        with pytest.raises(StateUnavailable):
            await admit(st)
        await st.ledger.record(step(1))
        assert st.ledger.pending == 1 and errors(metrics, "dropped") == 0
    finally:
        await st.close()
    owner = RedisState(redis_config(redis_cluster.owner("{tollway}:probe").url), Metrics())
    await owner.start()
    try:  # the node that owns the slot answers a plain client (until a failover moves it)
        assert await owner.ready()
        await owner.ledger.record(step(1))
        assert [r.requests for r in await owner.ledger.spend("agent")] == [1]
    finally:
        await owner.close()
