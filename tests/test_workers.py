"""`tollway serve --workers N`: N real worker processes on one port (SO_REUSEPORT) behind a
supervisor, sharing a real redis-server. Budgets hold across the workers, any worker's
/metrics reports the whole instance (prometheus-client multiprocess mode), SIGTERM drains
every worker, a crashed worker is replaced, and memory state is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer, free_port
from tests.e2e.test_stream_cuts import wait_until
from tests.test_serve import wait_http

AUTH = {"Authorization": "Bearer sk-tw-support"}
LIMIT = 0.02  # USD; price 100 $/M tokens: about a dozen requests fit


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tollway.testing.mock_provider",
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/models")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def listeners(port: int) -> int:
    """Sockets listening on this loopback port (the supervisor's bound one does not listen)."""
    needle = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:]
                   if line.split()[1] == needle and line.split()[3] == "0A")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def metric(text: str, name: str, /, **labels: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class Instance:
    """`tollway serve` with workers, its metrics directory under the test's tmp dir."""

    def __init__(self, tmp: Path, mock: str, redis_url: str, extra: str = "",
                 server: str = "", args: tuple[str, ...] = ("--workers", "2")) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"  # every worker listens there
        self.config = tmp / "gw.yaml"
        self.config.write_text(f"""
server: {{host: 127.0.0.1, port: {self.port}, admin_key: adm, drain_timeout_s: 20,
          admin: {{port: {self.admin_port}}}{server}}}
state:
  backend: redis
  redis: {{url: "{redis_url}", timeout_ms: 500}}
providers:
  up: {{kind: openai, base_url: "{mock}/v1", api_key: sk-up}}
models:
  gpt-4o-mini: {{provider: up, price: {{input: 100, output: 100}}}}
agents:
  support-bot: {{team: support, keys: [sk-tw-support]}}
{extra}
""")
        self.tmp = tmp / "tmp"  # the supervisor makes its metrics directory here (TMPDIR)
        self.tmp.mkdir()
        self.log_path = tmp / "serve.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve", "-c", str(self.config), *args],
            env={**os.environ, "TMPDIR": str(self.tmp)}, stderr=self.log)
        self.seen: set[int] = set()
        wait_until(lambda: listeners(self.port) == 2 and listeners(self.admin_port) == 2
                   and len(self.workers()) == 2, timeout=30)

    def workers(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []
        self.seen.update(pids)
        return pids

    @property
    def metrics_dir(self) -> Path:
        dirs = list(self.tmp.glob("tollway-metrics-*"))
        assert len(dirs) == 1, dirs
        return dirs[0]

    def own(self, pid: int, name: str, /, **labels: str) -> float:
        """What one worker alone recorded: the metric files carrying its pid."""
        files = [str(f) for f in self.metrics_dir.glob(f"*_{pid}.db")]
        return sum(s.value for fam in MultiProcessCollector.merge(files) for s in fam.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def chat(self, **headers: str) -> httpx.Response:
        """One request on a new connection, so SO_REUSEPORT picks a worker each time."""
        return httpx.post(f"{self.url}/v1/chat/completions", headers={**AUTH, **headers},
                          timeout=10, json={"model": "gpt-4o-mini", "max_tokens": 50,
                                            "messages": [{"role": "user",
                                                          "content": "hello there"}]})

    def admin(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(self.admin_url + path, params=params, timeout=10,
                         headers={"Authorization": "Bearer adm"})

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.seen:  # the workers stop with the supervisor; make sure of it
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def instance(tmp_path: Path, mock_url: str, redis_server: RedisServer,
             ) -> Iterator[Callable[..., Instance]]:
    made: list[Instance] = []

    def make(**kw: object) -> Instance:
        inst = Instance(tmp_path, mock_url, redis_server.url, **kw)  # type: ignore[arg-type]
        made.append(inst)
        return inst
    yield make
    for inst in made:
        inst.close()


def test_two_workers_share_budget_and_report_merged_metrics(
        instance: Callable[..., Instance]) -> None:
    g = instance(extra=f"budgets: {{agents: {{support-bot: {{usd: {LIMIT}, period: day}}}}}}")
    pids = g.workers()

    # Fresh connections until the budget is spent and both workers have refused some.
    statuses: list[int] = []
    cost = 0.0
    while len(statuses) < 300 and not (
            statuses[-5:] == [402] * 5
            and all(g.own(p, "tollway_requests_total", status="402") for p in pids)):
        r = g.chat()
        statuses.append(r.status_code)
        if r.status_code == 200 and not cost:
            u = r.json()["usage"]
            cost = (u["prompt_tokens"] + u["completion_tokens"]) * 100 / 1e6
    n, ok = len(statuses), statuses.count(200)
    assert set(statuses) == {200, 402}, statuses
    assert statuses[-5:] == [402] * 5 and n < 300

    def recorded() -> int:  # steps are recorded just after their answers went out
        rows = g.admin("/admin/spend", by="agent").json()["rows"]
        return next((r["requests"] for r in rows if r["key"] == "support-bot"), 0)
    wait_until(lambda: recorded() == n)
    spend = g.admin("/admin/spend", by="agent").json()["total_cost_usd"]
    # One budget for the instance: two workers with budgets of their own would have spent
    # nearly twice the limit between them.
    assert spend == pytest.approx(ok * cost) and LIMIT / 2 < spend <= LIMIT

    # Every worker served part of the traffic; each one's /metrics reports all of it.
    wait_until(lambda: metric(httpx.get(g.url + "/metrics").text,  # counted after answering
                              "tollway_requests_total") == n)
    own = [g.own(p, "tollway_requests_total") for p in pids]
    assert all(0 < k < n for k in own) and sum(own) == n, own
    for i in range(10):  # new connections: both workers answer some of these, on either
        # port (the admin listener's is shared by the workers like the main one)
        text = httpx.get((g.admin_url if i % 2 else g.url) + "/metrics").text
        assert metric(text, "tollway_requests_total") == n
        assert metric(text, "tollway_requests_total", status="200") == ok
        assert metric(text, "tollway_budget_rejections_total", scope="agent") == n - ok
        assert metric(text, "tollway_cost_usd_total") == pytest.approx(spend)
        assert metric(text, "tollway_request_duration_seconds_count") == n
        assert metric(text, "tollway_inflight_requests") == 0
        # Gauges are merged to one series (no per-process `pid` label); the remaining budget
        # is the most recent reading, taken by the last request admitted, whichever worker.
        remaining = [s for fam in text_string_to_metric_families(text) for s in fam.samples
                     if s.name == "tollway_budget_remaining_usd"]
        assert len(remaining) == 1 and 0 <= remaining[0].value < cost, remaining
        assert 'pid="' not in text


def test_sigterm_drains_every_worker(instance: Callable[..., Instance]) -> None:
    g = instance(server=", workers: 2", args=())  # the worker count from the config file
    pids = g.workers()
    metrics_dir = g.metrics_dir
    results: list[list[str]] = []
    threads: list[threading.Thread] = []

    def stream(received: list[str], started: threading.Event) -> None:
        with httpx.stream("POST", f"{g.url}/v1/chat/completions", timeout=30, headers={
                **AUTH, "x-mock-chunk-delay-ms": "400"}, json={
                "model": "gpt-4o-mini", "stream": True,
                "messages": [{"role": "user", "content": "a slow one"}]}) as resp:
            for line in resp.iter_lines():
                received.append(line)
                started.set()

    # Slow streams on new connections until both workers have at least one in flight.
    while len(threads) < 30 and not all(
            g.own(p, "tollway_inflight_requests") > 0 for p in pids):
        received: list[str] = []
        started = threading.Event()
        t = threading.Thread(target=stream, args=(received, started))
        t.start()
        assert started.wait(10)
        results.append(received)
        threads.append(t)
    assert all(g.own(p, "tollway_inflight_requests") > 0 for p in pids)

    g.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert all("data: [DONE]" in r for r in results), [r[-3:] for r in results]
    assert g.proc.wait(30) == 0
    assert not any(alive(p) for p in pids)
    assert not metrics_dir.exists()
    logs = g.logs()
    assert logs.count("draining in-flight requests") == 2  # once per worker
    assert "SIGTERM: draining 2 workers" in logs


def test_crashed_worker_is_replaced_and_sighup_reaches_every_worker(
        instance: Callable[..., Instance]) -> None:
    g = instance()
    before = g.workers()
    for _ in range(20):
        assert g.chat().status_code == 200
    assert (g.metrics_dir / f"gauge_livesum_{before[0]}.db").exists()
    wait_until(lambda: metric(httpx.get(g.url + "/metrics").text,  # counted after answering
                              "tollway_requests_total") == 20)

    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: len(g.workers()) == 2 and before[0] not in g.workers()
               and listeners(g.port) == 2, timeout=30)
    after = g.workers()
    assert before[1] in after
    # The dead worker's live gauges are dropped; its counters still count.
    assert not (g.metrics_dir / f"gauge_livesum_{before[0]}.db").exists()
    assert metric(httpx.get(g.url + "/metrics").text, "tollway_requests_total") == 20
    assert "exited with -9; restarting" in g.logs()

    g.proc.send_signal(signal.SIGHUP)  # one reload in each worker
    wait_until(lambda: metric(httpx.get(g.url + "/metrics").text,
                              "tollway_config_reloads_total", result="ok") == 2)
    assert g.chat().status_code == 200
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(30) == 0  # the crash was repaired: a clean drain exits 0


def test_workers_that_keep_dying_stop_the_supervisor(
        instance: Callable[..., Instance]) -> None:
    g = instance()
    g.config.write_text(g.config.read_text() + "bogus_key: 1\n")  # replacements cannot start
    for pid in g.workers():
        os.kill(pid, signal.SIGKILL)
    assert g.proc.wait(60) == 1
    assert "times in a row: stopping" in g.logs()


def _tollway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tollway", *args], capture_output=True,
                          text=True, timeout=60)


def test_many_workers_need_redis_state(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    base = """providers:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-up}
models:
  m: {provider: up}
"""
    cfg.write_text("server:\n  port: 4100\n  workers: 2\n" + base)
    message = ("2 workers need state.backend: redis; with state.backend: memory every worker "
               "would keep its own budgets, rate limits, sessions and spend")
    checked = _tollway("check", "-c", str(cfg))
    assert checked.returncode == 1
    assert f"error: {cfg}:3: server.workers: {message}" in checked.stderr
    served = _tollway("serve", "-c", str(cfg))
    assert served.returncode == 2 and f"{cfg}:3: server.workers: {message}" in served.stderr

    cfg.write_text(base)  # one worker in the file, two asked for on the command line
    assert _tollway("check", "-c", str(cfg)).returncode == 0
    served = _tollway("serve", "-c", str(cfg), "--workers", "2")
    assert served.returncode == 2
    assert f"{cfg}: server.workers (--workers 2): {message}" in served.stderr
    zero = _tollway("serve", "-c", str(cfg), "--workers", "0")
    assert zero.returncode == 2 and "must be 1 or more" in zero.stderr


def test_killed_workers_lose_no_spend(instance: Callable[..., Instance],
                                      redis_server: RedisServer) -> None:
    """Redis stalls, so the workers hold their records in memory; then every worker is killed
    outright (SIGKILL). Measured before: the spend of every answer served meanwhile was lost
    (2 requests in an earlier run under load). Each step was written ahead to the worker's
    file before its answer went out: the replacement workers record them, once."""
    g = instance()

    def recorded() -> int:
        try:
            rows = g.admin("/admin/spend", by="agent").json()["rows"]
        except httpx.HTTPError:  # the replacement workers are still starting
            return -1
        return next((r["requests"] for r in rows if r["key"] == "support-bot"), 0)
    for _ in range(5):
        assert g.chat().status_code == 200
    wait_until(lambda: recorded() == 5)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        served = [g.chat().status_code for _ in range(8)]  # fail_open: served, not recorded
        assert served == [200] * 8
        old = g.workers()
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(g.workers()) == 2 and not set(g.workers()) & set(old),
                   timeout=30)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    wait_until(lambda: recorded() >= 13, timeout=30)
    assert recorded() == 13  # every answer served, recorded once
    assert "wrote ahead" in g.logs()
