"""The states every behavioural test runs on. The redis-server itself (one per test
session, flushed before each test, restarted if a test stopped it) is in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tollway.config.model import StateConfig
from tollway.observe.metrics import Metrics
from tollway.state.base import State
from tollway.state.memory import MemoryState
from tollway.state.redis import RedisState


def redis_config(url: str, **kw: Any) -> StateConfig:
    redis_kw = {k: kw.pop(k) for k in ("timeout_ms", "retry_interval_s", "pending_max",
                                       "key_prefix") if k in kw}
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


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest) -> MakeState:
    """A factory of the parametrized backend, so each behavioural test runs on both."""
    if request.param == "memory":
        return _memory
    factory: MakeState = request.getfixturevalue("make_redis_state")
    return factory


@pytest.fixture
async def any_state(make_state: MakeState) -> State:
    return await make_state()
