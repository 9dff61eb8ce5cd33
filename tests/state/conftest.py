"""The states every behavioural test runs on: memory, one Redis, and a Redis Cluster seeded
from each of its primaries in turn (the one that owns the gateway's slot and two that do
not, so every command is redirected at first). The redis-server (one per test session,
flushed before each test, restarted if a test stopped it) and the cluster (one per session,
flushed before each test) are in tests/conftest.py.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

from tollway.config.model import StateConfig
from tollway.observe.metrics import Metrics
from tollway.state.base import State
from tollway.state.memory import MemoryState
from tollway.state.redis import RedisState

if TYPE_CHECKING:
    from tests.redis_cluster import LocalCluster


def redis_config(url: str, **kw: Any) -> StateConfig:
    redis_kw = {k: kw.pop(k) for k in ("timeout_ms", "retry_interval_s", "pending_max",
                                       "key_prefix", "cluster", "cluster_nodes",
                                       "max_connections") if k in kw}
    return StateConfig.model_validate(
        {"backend": "redis", "redis": {"url": url, **redis_kw}, **kw})


MakeState = Callable[..., Any]


@pytest.fixture
async def make_redis_state(redis_url: str) -> AsyncIterator[MakeState]:
    """RedisState(**StateConfig fields); started, closed after the test."""
    made: list[RedisState] = []

    async def make(metrics: Metrics | None = None, **kw: Any) -> RedisState:
        st = RedisState(redis_config(redis_url, **kw), metrics or Metrics())
        await st.start()
        made.append(st)
        return st

    yield make
    for st in made:
        await st.close()


async def _memory(session_steps: int = 500, max_sessions: int = 20_000,
                  retention_hours: int = 24 * 35) -> MemoryState:
    return MemoryState(session_steps, max_sessions, retention_hours)


# Which primary seeds the client: by its slots, lowest first. The default key prefix's
# slot (4502) is in the lowest range, so "owner" is the node that holds the gateway's keys.
CLUSTER_SEEDS = {"cluster@owner": 0, "cluster@other1": 1, "cluster@other2": 2}


@pytest.fixture
async def make_cluster_state(redis_cluster: LocalCluster) -> AsyncIterator[MakeState]:
    """RedisState on the test cluster, seeded from the primary `seed` (by slot order)."""
    made: list[RedisState] = []

    async def make(metrics: Metrics | None = None, seed: int = 0, **kw: Any) -> RedisState:
        url = redis_cluster.primaries_by_slot()[seed].url
        st = RedisState(redis_config(url, cluster=True, **kw), metrics or Metrics())
        await st.start()
        made.append(st)
        return st

    yield make
    for st in made:
        await st.close()


@pytest.fixture(params=["memory", "redis", *CLUSTER_SEEDS])
def make_state(request: pytest.FixtureRequest) -> MakeState:
    """A factory of the parametrized backend, so each behavioural test runs on every one."""
    if request.param == "memory":
        return _memory
    if request.param in CLUSTER_SEEDS:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        seed = CLUSTER_SEEDS[request.param]
        owns = cluster.owner("{tollway}:probe") == cluster.primaries_by_slot()[seed]
        assert owns == (seed == 0), "the seeds must be the owner and two other nodes"
        make: MakeState = request.getfixturevalue("make_cluster_state")
        return functools.partial(make, seed=seed)
    factory: MakeState = request.getfixturevalue("make_redis_state")
    return factory


@pytest.fixture(params=["redis", *CLUSTER_SEEDS])
def make_shared_state(request: pytest.FixtureRequest) -> MakeState:
    """make_state on the shared backends only (one Redis, the cluster from each seed)."""
    if request.param in CLUSTER_SEEDS:
        make: MakeState = request.getfixturevalue("make_cluster_state")
        return functools.partial(make, seed=CLUSTER_SEEDS[request.param])
    factory: MakeState = request.getfixturevalue("make_redis_state")
    return factory


@pytest.fixture
async def any_state(make_state: MakeState) -> State:
    return await make_state()
