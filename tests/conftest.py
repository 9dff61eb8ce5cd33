"""Fixtures that run a real gateway and a real mock provider on loopback ports.

Both run on one event loop in a background thread, so tests can drive them with the official
synchronous SDK clients as well as the async ones, exactly as an agent would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.redis_cluster import LocalCluster
from tollway.app import GATEWAY, build_app
from tollway.config import load_config_text
from tollway.gateway import Gateway
from tollway.ingress.server import GatewayRunner
from tollway.testing import MockProvider, MockSettings

BASE_CONFIG = """
server: {{host: 127.0.0.1, port: 0, max_body_mb: 1, drain_timeout_s: 5, admin_key: admin-secret,
          watch_interval_s: 0.1{server_extra}}}
identity: {{unknown_keys: {unknown_keys}, trust_agent_header: true{identity_extra}}}
state: {{backend: {backend},
         redis: {{url: "{redis_url}", timeout_ms: 500{redis_extra}}}{state_extra}}}
providers:
  oai: {{kind: openai, base_url: "{mock}/v1", api_key: sk-upstream-openai}}
  ant: {{kind: anthropic, base_url: "{mock}", api_key: sk-upstream-anthropic}}
  dead: {{kind: openai, base_url: "http://127.0.0.1:{dead_port}/v1", api_key: x,
          connect_timeout_s: 2}}
{providers_extra}models:
  gpt-4o-mini: {{provider: oai, price: {{input: 0.15, output: 0.60, cached_input: 0.075}}}}
  fast: {{provider: oai, model: gpt-4.1-nano, price: {{input: 1, output: 2}}}}
  claude-sonnet: {{provider: ant, model: claude-sonnet-4-5, price: {{input: 3, output: 15}}}}
  unreachable: {{provider: dead}}
{models_extra}agents:
  support-bot: {{team: support, keys: [sk-tw-support]}}
  research-agent:
    team: research
    keys: ["sha256:{research_digest}"]
  helper: {{team: research, keys: []}}
{agents_extra}{extra}
"""


class Loop:
    """An event loop in a daemon thread; run coroutines on it from the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            self.dump()
            raise

    def dump(self) -> None:
        """Where every task on the loop and every thread stands: a call that timed out
        says what it waited for."""
        import faulthandler
        import sys

        for task in asyncio.all_tasks(self.loop):
            task.print_stack(file=sys.stderr)
        faulthandler.dump_traceback(sys.stderr)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A mock provider plus a gateway in front of it, on one background loop."""

    def __init__(self, loop: Loop, extra: str = "", unknown_keys: str = "anonymous",
                 config_text: str | None = None, models_extra: str = "",
                 backend: str = "memory", redis_url: str = "redis://127.0.0.1:1/0",
                 state_extra: str = "", providers_extra: str = "",
                 config_file: str | None = None, agents_extra: str = "",
                 redis_extra: str = "",
                 server_extra: str = "", identity_extra: str = "") -> None:
        import hashlib

        self.loop = loop
        self.mock = MockProvider(MockSettings())
        mock_url = loop.run(self.mock.start())
        text = config_text or BASE_CONFIG.format(
            mock=mock_url, dead_port=free_port(), extra=extra, unknown_keys=unknown_keys,
            models_extra=models_extra, backend=backend, redis_url=redis_url,
            agents_extra=agents_extra,
            providers_extra=providers_extra.replace("MOCK", mock_url),
            state_extra=f", {state_extra}" if state_extra else "",
            redis_extra=f", {redis_extra}" if redis_extra else "",
            server_extra=f", {server_extra}" if server_extra else "",
            identity_extra=f", {identity_extra}" if identity_extra else "",
            research_digest=hashlib.sha256(b"sk-tw-research").hexdigest())
        if config_file is not None:
            with open(config_file, "w") as f:
                f.write(text)
        self.config_text = text
        self.config = load_config_text(text, "test.yaml", {})
        # The admin listener on a free port (whatever server.admin.port the config says):
        # stacks run side by side.
        self.app = build_app(self.config, config_file, admin_port=0)
        self.runner = GatewayRunner(self.app, self.config.server, handle_signals=False,
                                    shutdown_timeout=5)
        loop.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        loop.run(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        # The admin API and /metrics: the admin listener, or the main port without one.
        admin_port = self.gateway.admin_port
        self.admin_url = f"http://127.0.0.1:{admin_port}" if admin_port else self.url
        self.admin = httpx.Client(base_url=self.admin_url,
                                  headers={"Authorization": "Bearer admin-secret"}, timeout=10)

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()
        return self.loop.run(call())

    def upstream_connections_in_use(self) -> int:
        """Connections checked out of the providers' pools: must be 0 when nothing runs."""
        def count() -> int:
            rt = self.gateway.runtime
            assert rt is not None
            return sum(len(p.session.connector._acquired)  # type: ignore[union-attr]
                       for p in rt.providers.values())
        return int(self.on_loop(count))

    def metric(self, name: str, /, **labels: str) -> float:
        """The sum of a metric's samples that carry these labels, read from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.admin_url}/metrics").text
        total = 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def close(self) -> None:
        self.admin.close()
        self.loop.run(self.runner.cleanup())
        self.loop.run(self.mock.stop())


@pytest.fixture(scope="session")
def bg_loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


@pytest.fixture
def stack(bg_loop: Loop) -> Iterator[Stack]:
    s = Stack(bg_loop)
    yield s
    s.close()


@pytest.fixture
def make_stack(bg_loop: Loop) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(**kwargs: Any) -> Stack:
        s = Stack(bg_loop, **kwargs)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


@pytest.fixture(params=["memory", "redis"])
def make_any_stack(request: pytest.FixtureRequest,
                   make_stack: Callable[..., Stack]) -> Callable[..., Stack]:
    """make_stack on each state backend in turn (Redis: a real redis-server), so a test runs
    the same assertions on both."""
    def make(**kw: Any) -> Stack:
        if request.param == "redis":
            kw.update(backend="redis", redis_url=request.getfixturevalue("redis_url"))
        return make_stack(**kw)
    return make


def pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(4)


class RedisServer:
    """A real redis-server on a free loopback port that tests may stop and start again."""

    def __init__(self, workdir: str) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.binary = binary
        self.dir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Any = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, deadline_s: float = 10.0) -> None:
        import subprocess
        import time

        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--save", "", "--appendonly", "no", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self.dir],
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
        import redis

        with redis.Redis(port=self.port, socket_timeout=2) as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_process: RedisServer) -> RedisServer:
    """The shared redis-server, running and empty; a test may stop and start it."""
    if not redis_process.running:
        redis_process.start()
    redis_process.flush()
    return redis_process


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-primary Redis Cluster, started once per test session (about two seconds)."""
    cluster = LocalCluster(str(tmp_path_factory.mktemp("cluster")), primaries=3)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_process: LocalCluster) -> LocalCluster:
    """The shared 3-primary cluster, healthy and empty."""
    redis_cluster_process.flush()
    return redis_cluster_process


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Clusters for this test alone (it may stop or kill nodes): make_cluster(replicas=1)."""
    made: list[LocalCluster] = []

    def make(primaries: int = 3, replicas: int = 0) -> LocalCluster:
        cluster = LocalCluster(str(tmp_path / f"cluster{len(made)}"), primaries, replicas)
        made.append(cluster)
        cluster.start()
        return cluster
    yield make
    for cluster in made:
        cluster.stop()
