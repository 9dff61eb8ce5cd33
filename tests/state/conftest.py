"""A real redis-server for the state tests, and the states every behavioural test runs on.

One server per test session (started in a tmp dir on a free loopback port, no persistence);
its database is flushed before every test that uses it. The outage test stops and restarts
it on the same port, so `redis_url` makes sure it is running before each test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tollway.config.model import StateConfig
from tollway.observe.metrics import Metrics
from tollway.state.base import State
from tollway.state.memory import MemoryState
from tollway.state.redis import RedisState

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process the tests can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, deadline_s: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--save", "", "--appendonly", "no", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        end = time.monotonic() + deadline_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > end:
                        raise
                time.sleep(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def flush(self) -> None:
        with redis.Redis(port=self.port) as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


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
