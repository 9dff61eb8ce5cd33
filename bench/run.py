"""tollway's overhead benchmark: what the gateway adds over talking to the upstream directly.

Three targets answer the same agent chat (about 2,000 prompt tokens, a new last turn per
request): the mock upstream itself (direct), a bare aiohttp relay (the floor for any Python
proxy) and tollway. The mock and the load generator share core 0, the target gets core 1 to
itself, so the target's CPU time per request is measured without interference. See
bench/README.md for how to read the numbers.

    .venv/bin/python bench/run.py [--quick] [--duration S] [--runs N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import itertools
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from conversation import body_template, prompt_tokens

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
CONFIG = BENCH / "gateway.bench.yaml"
GUARDS_CONFIG = BENCH / "gateway.guards.yaml"
ROUTING_CONFIG = BENCH / "gateway.routing.yaml"
CACHE_CONFIG = BENCH / "gateway.cache.yaml"
SEMANTIC_CONFIG = BENCH / "gateway.semantic.yaml"
GUARDRAILS_CONFIG = BENCH / "gateway.guardrails.yaml"
GEMINI_CONFIG = BENCH / "gateway.gemini.yaml"
PYTHON = sys.executable
TOLLWAY = str(Path(sys.executable).parent / "tollway")
LOAD_CORE, TARGET_CORE = 0, 1
TARGETS = ("direct", "relay", "tollway", "routing-50", "guards-mem", "guards-redis",
           "cache-miss", "cache-hit", "semantic-miss", "semantic-hit")
# Rows over the core tollway row, and the cache rows whose /metrics outcomes are reported.
FEATURES = ("routing-50", "guards-mem", "guards-redis", "cache-miss", "cache-hit",
            "semantic-miss", "semantic-hit")
CACHE_ROWS = ("cache-miss", "cache-hit", "semantic-miss", "semantic-hit")
MODES = ("non-stream", "stream")
MOCK_CHUNKS = 20
LATENCY_MS = 50.0
# In the latency scenario each worker pauses a random 0..N ms between requests, as an agent
# does between steps. A pure closed loop of 50 workers around a fixed 50 ms sleep bunches into
# bursts that the shared load core serves one after another, which inflates the direct
# baseline by ~10 ms and makes "added" latency negative.
LATENCY_PAUSE_MS = 25.0
READY_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
# Workers start spread over this window rather than as one burst of `concurrency` requests.
RAMP_S = 0.1
# "other" CPU (not target, mock or generator) above this, in % of a core, flags a noisy run.
OTHER_WARN_PCT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PATH = "/v1/chat/completions"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-tw-bench"}
DASH = "—"
Proc = subprocess.Popen[bytes]


class BenchError(RuntimeError):
    """A target misbehaved (did not start, failed the smoke check): the numbers would lie."""


# -- child processes ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the benchmark dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """Every process the benchmark starts, so each is stopped on any exit path."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []

    def start(self, name: str, core: int, argv: list[str], env: dict[str, str] | None = None,
              pipe_stdout: bool = False) -> Proc:
        """Start argv pinned to one core, stderr (and stdout unless piped) to a log file."""
        log = (self.logdir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                ["taskset", "-c", str(core), *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else log,
                stderr=log,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout; reap it."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=5.0)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def wait_healthy(url: str, proc: Proc, children: Children, name: str,
                 ready_s: float = READY_TIMEOUT_S) -> None:
    """Poll url until it answers 200, the process dies, or ready_s passes."""
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{children.log_tail(name)}")
        try:
            with _OPENER.open(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{name} not ready after {ready_s:.0f}s:\n{children.log_tail(name)}")


def start_mock(children: Children, latency_ms: float) -> tuple[Proc, str]:
    """Start the mock upstream on the load core and wait for the URL it prints when listening."""
    argv = [PYTHON, "-m", "tollway.testing.mock_provider", "--port", str(free_port()),
            "--chunks", str(MOCK_CHUNKS), "--latency-ms", str(latency_ms)]
    proc = children.start("mock", LOAD_CORE, argv, pipe_stdout=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode().strip()
            if line.startswith("http://127.0.0.1:"):
                return proc, line
        if proc.poll() is not None:
            break
    raise BenchError(f"mock did not start:\n{children.log_tail('mock')}")


def start_redis(children: Children) -> tuple[Proc, str]:
    """A throwaway redis-server on the load core for the guards-redis row."""
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (make bench installs it)")
    proc = children.start("redis", LOAD_CORE, [binary, "--port", str(port), "--bind",
                                               "127.0.0.1", "--save", "", "--appendonly", "no"])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    raise BenchError(f"redis-server did not start:\n{children.log_tail('redis')}")


def base_name(target: str) -> str:
    """"tollway@base" is the "tollway" row run from the baseline checkout (--baseline)."""
    return target.split("@", 1)[0]


def start_target(children: Children, name: str, upstream: str, redis_url: str | None = None,
                 baseline: Path | None = None, wrap: tuple[str, ...] = (),
                 ready_s: float = READY_TIMEOUT_S) -> tuple[Proc, str]:
    """Start relay or tollway on the target core; return it and its base URL once healthy.
    A "...@base" target runs the baseline checkout's code with its own bench configs;
    `wrap` prefixes the command (valgrind, for bench/instructions.py)."""
    port = free_port()
    env: dict[str, str] = {}
    row = base_name(name)
    tree = BENCH
    tollway = [TOLLWAY]
    if row != name:
        assert baseline is not None
        tree = baseline / "bench"
        tollway = [PYTHON, "-m", "tollway"]
        env["PYTHONPATH"] = str(baseline / "src")
    if row == "relay":
        argv = [PYTHON, str(BENCH / "relay.py"), "--port", str(port), "--upstream", upstream]
    elif row.startswith("guards"):
        argv = [*tollway, "serve", "-c", str(tree / GUARDS_CONFIG.name), "--host", "127.0.0.1",
                "--port", str(port)]
        env |= {"BENCH_UPSTREAM": upstream, "BENCH_STATE": "redis" if redis_url else "memory"}
        if redis_url:
            env["BENCH_REDIS_URL"] = redis_url
    else:
        config = {"routing-50": ROUTING_CONFIG, "cache-miss": CACHE_CONFIG,
                  "guardrails": GUARDRAILS_CONFIG, "gemini": GEMINI_CONFIG,
                  "cache-hit": CACHE_CONFIG, "semantic-miss": SEMANTIC_CONFIG,
                  "semantic-hit": SEMANTIC_CONFIG}.get(row, CONFIG)
        argv = [*tollway, "serve", "-c", str(tree / config.name), "--host", "127.0.0.1",
                "--port", str(port)]
        env["BENCH_UPSTREAM"] = upstream
    if wrap:
        argv = [*wrap, *(argv if argv[0] == PYTHON else [PYTHON, "-m", "tollway", *argv[1:]])]
    proc = children.start(name, TARGET_CORE, argv, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base + "/healthz", proc, children, name, ready_s)
    return proc, base


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # fields 3.. ; comm may contain spaces
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle, from /proc/stat (includes steal by the hypervisor)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # user..steal; guest time is already in user


_CACHE_SERIES = re.compile(
    r'^tollway_cache_(requests_total|semantic_rejections_total|lookup_seconds_sum|'
    r'lookup_seconds_count)\{\w+="(\w+)"(?:,result="(\w+)")?\} (\S+)$', re.MULTILINE)


@dataclass
class CacheStats:
    """A cache row's own counters, from the target's /metrics at the end of the cell (smoke
    request and warm-up included): did it hit or miss as the row says, and at what cost."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, result)
    rejections: dict[str, int] = field(default_factory=dict)  # semantic guard rule -> count
    lookup_s: dict[str, float] = field(default_factory=dict)  # kind -> summed lookup time
    lookups: dict[str, int] = field(default_factory=dict)  # kind -> lookups timed

    def share(self, kind: str, result: str) -> float:
        mine = {r: n for (k, r), n in self.requests.items() if k == kind}
        total = sum(mine.values())
        return mine.get(result, 0) / total if total else 0.0

    def describe(self) -> str:
        parts = [", ".join(f"{k} {r} {n:,}" for (k, r), n in sorted(self.requests.items()))]
        if self.rejections:
            parts.append("guard rejections " + ", ".join(
                f"{why} {n:,}" for why, n in sorted(self.rejections.items())))
        for kind, n in sorted(self.lookups.items()):
            if n:
                parts.append(f"mean {kind} lookup {self.lookup_s[kind] / n * 1e6:,.0f} µs")
        return "; ".join(parts)


def cache_stats(base: str) -> CacheStats:
    """Read the cache series of the target's /metrics."""
    with _OPENER.open(base + "/metrics", timeout=5.0) as resp:
        text = resp.read().decode()
    stats = CacheStats()
    for series, value, result, number in _CACHE_SERIES.findall(text):
        if series == "requests_total" and result:
            stats.requests[value, result] = int(float(number))
        elif series == "semantic_rejections_total":
            stats.rejections[value] = int(float(number))
        elif series == "lookup_seconds_sum":
            stats.lookup_s[value] = float(number)
        elif series == "lookup_seconds_count":
            stats.lookups[value] = int(float(number))
    return stats


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


# -- load generator ----------------------------------------------------------------------------


class Bodies:
    """Request bodies with a unique last user turn, each one bytes concatenation away."""

    _counter = itertools.count(1)  # shared by all cells: no body is ever sent twice

    def __init__(self, stream: bool, repeat: bool = False) -> None:
        self.prefix, self.suffix = body_template(stream)
        self.repeat = repeat  # the *-hit rows: the same request again and again

    def next(self) -> bytes:
        if self.repeat:
            return self.prefix + b"repeat" + self.suffix
        return self.prefix + str(next(self._counter)).encode() + self.suffix


@dataclass
class Run:
    """One measured run of one cell."""

    ok: int
    errors: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None
    mock_us: float
    gen_us: float
    other_pct: float  # CPU used by anything but target, mock and generator, in % of one core

    @property
    def core0_pct(self) -> float:
        """How busy the load core was: near 100 % means req/s is bound by mock + generator."""
        return (self.mock_us + self.gen_us) * self.rps / 1e4

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


async def load(session: aiohttp.ClientSession, url: str, bodies: Bodies, stream: bool,
               concurrency: int, duration: float, pause_s: float = 0.0,
               ) -> tuple[list[float], int, float]:
    """Closed loop: `concurrency` workers send until the deadline, each pausing a random
    0..pause_s between its requests (0: back to back).

    Returns (latencies in seconds of the successful requests, errors, wall time until the last
    in-flight request finished). A stream's latency runs to its last byte, and every body is
    read whole, as a client must.
    """
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    deadline = clock() + duration

    async def worker(i: int) -> None:
        nonlocal errors
        await asyncio.sleep(i * RAMP_S / concurrency)
        while clock() < deadline:
            data = bodies.next()
            t0 = clock()
            try:
                async with session.post(url, data=data, headers=HEADERS) as resp:
                    if stream:
                        async for _ in resp.content.iter_any():
                            pass
                    else:
                        await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(clock() - t0)
            else:
                errors += 1
            if pause_s:
                await asyncio.sleep(random.uniform(0.0, pause_s))

    start = clock()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, errors, clock() - start


async def smoke(session: aiohttp.ClientSession, url: str, bodies: Bodies, stream: bool,
                target: str) -> int:
    """One request that must succeed; returns the number of SSE events (0 for non-stream)."""
    try:
        async with session.post(url, data=bodies.next(), headers=HEADERS) as resp:
            body = await resp.read()
            status, headers = resp.status, resp.headers
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"{target}: smoke request failed: {exc!r}") from exc
    if status != 200:
        raise BenchError(f"{target}: smoke request got {status}: {body[:300]!r}")
    if target == "tollway" and not stream and "x-tollway-cost-usd" not in headers:
        raise BenchError("tollway: no x-tollway-cost-usd header on a non-stream answer")
    if not stream:
        return 0
    if not body.rstrip().endswith(b"data: [DONE]"):
        raise BenchError(f"{target}: the stream did not end with [DONE]: {body[-200:]!r}")
    return body.count(b"data: ")


@dataclass
class Cell:
    """One (target, mode) of a scenario: median over runs, peak RSS at the end."""

    target: str
    mode: str
    runs: list[Run] = field(default_factory=list)
    rss_mb: float | None = None
    events: int = 0
    cache: CacheStats | None = None  # the cache rows only

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs]
        if not values or any(v is None for v in values):
            return None
        return statistics.median(values)


def own_cpu_seconds() -> float:
    """The load generator's own CPU time (this process)."""
    t = os.times()
    return t.user + t.system


async def measure(cell: Cell, url: str, pid: int | None, mock_pid: int,
                  opts: argparse.Namespace) -> None:
    """Smoke check, warm-up, then opts.runs runs of opts.duration seconds on one connection pool."""
    stream = cell.mode == "stream"
    bodies = Bodies(stream, repeat=base_name(cell.target) in ("cache-hit", "semantic-hit"))
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cell.events = await smoke(session, url, bodies, stream, cell.target)
        await load(session, url, bodies, stream, opts.concurrency, opts.warmup, opts.pause_s)
        for _ in range(opts.runs):
            before = cpu_seconds(pid) if pid else 0.0
            mock0, gen0, busy0 = cpu_seconds(mock_pid), own_cpu_seconds(), machine_busy_seconds()
            lat, errors, elapsed = await load(session, url, bodies, stream, opts.concurrency,
                                              opts.duration, opts.pause_s)
            target_s = cpu_seconds(pid) - before if pid else 0.0
            mock_s, gen_s = cpu_seconds(mock_pid) - mock0, own_cpu_seconds() - gen0
            other = machine_busy_seconds() - busy0 - target_s - mock_s - gen_s
            n = max(1, len(lat))
            lat.sort()
            run = Run(len(lat), errors, elapsed, percentile(lat, 0.5) * 1e3,
                      percentile(lat, 0.99) * 1e3, target_s / n * 1e6 if pid else None,
                      mock_s / n * 1e6, gen_s / n * 1e6, max(0.0, other) / elapsed * 100)
            cell.runs.append(run)
            if errors:
                print(f"    warning: {errors} failed requests", flush=True)
            if not lat:
                raise BenchError(f"{cell.target} {cell.mode}: no request succeeded")


# -- orchestration -----------------------------------------------------------------------------


@dataclass
class Scenario:
    """One mock setting; every (target, mode) cell of it runs against the same mock process."""

    title: str
    latency_ms: float
    runs: int
    pause_s: float = 0.0
    cells: list[Cell] = field(default_factory=list)

    def cell(self, target: str, mode: str) -> Cell | None:
        return next((c for c in self.cells if c.target == target and c.mode == mode), None)


def run_scenario(sc: Scenario, opts: argparse.Namespace, children: Children) -> None:
    """Start the mock, then each target in turn (a fresh process per cell, so RSS is per cell)."""
    cell_opts = argparse.Namespace(**{**vars(opts), "runs": sc.runs, "pause_s": sc.pause_s})
    print(f"\n== {sc.title}", flush=True)
    mock, upstream = start_mock(children, sc.latency_ms)
    try:
        for mode in opts.modes:
            for target in opts.targets:
                cell = Cell(target, mode)
                print(f"  {target:12} {mode:10} ", end="", flush=True)
                proc = redis = None
                if target == "direct":
                    base, pid = upstream, None
                else:
                    redis_url = None
                    if base_name(target) == "guards-redis":
                        redis, redis_url = start_redis(children)
                    proc, base = start_target(children, target, upstream, redis_url,
                                              opts.baseline_tree)
                    pid = proc.pid
                try:
                    uvloop.run(measure(cell, base + PATH, pid, mock.pid, cell_opts))
                    if pid is not None:
                        cell.rss_mb = peak_rss_mb(pid)
                    if base_name(target) in CACHE_ROWS:
                        cell.cache = cache_stats(base)
                finally:
                    if proc is not None:
                        children.stop(proc)
                    if redis is not None:
                        children.stop(redis)
                sc.cells.append(cell)
                cpu = cell.median("cpu_us")
                print(f"{cell.median('rps'):8.0f} req/s  p50 {cell.median('p50_ms'):7.2f} ms  "
                      f"p99 {cell.median('p99_ms'):7.2f} ms  "
                      f"cpu {DASH if cpu is None else f'{cpu:.0f} µs'}  "
                      f"(core 0: mock {cell.median('mock_us'):.0f} µs + generator "
                      f"{cell.median('gen_us'):.0f} µs, {cell.median('core0_pct'):.0f}% busy; "
                      f"other {cell.median('other_pct'):.0f}%)",
                      flush=True)
                if cell.cache is not None:
                    print(f"  {'':23} cache: {cell.cache.describe()}", flush=True)
    finally:
        children.stop(mock)


# -- report ------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return DASH
    return format(value, ("+" if signed else "") + spec)


def table(sc: Scenario) -> list[str]:
    """The Markdown table of a scenario; "added" is target minus direct in the same mode."""
    lines = [
        "| target | mode | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| CPU µs/req | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sc.cells:
        direct = sc.cell("direct", c.mode)
        p50, p99 = c.median("p50_ms"), c.median("p99_ms")
        add50 = add99 = None
        if direct is not None and c.target != "direct":
            add50 = _diff(p50, direct.median("p50_ms"))
            add99 = _diff(p99, direct.median("p99_ms"))
        lines.append(
            f"| {c.target} | {c.mode} | {_fmt(c.median('rps'), '.0f')} | {_fmt(p50, '.2f')} "
            f"| {_fmt(p99, '.2f')} | {_fmt(add50, '.2f', True)} | {_fmt(add99, '.2f', True)} "
            f"| {_fmt(c.median('cpu_us'), '.0f')} | {_fmt(c.rss_mb, '.1f')} |"
        )
    return lines


def load_table(sc: Scenario) -> list[str]:
    """Who bounded req/s: a core near 100 % busy is the bottleneck of that cell."""
    lines = [
        "| target | mode | mock µs/req | generator µs/req | core 0 busy % | target core busy % "
        "| other CPU % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in sc.cells:
        cpu, rps = c.median("cpu_us"), c.median("rps")
        busy1 = None if cpu is None or rps is None else cpu * rps / 1e4
        lines.append(
            f"| {c.target} | {c.mode} | {_fmt(c.median('mock_us'), '.0f')} "
            f"| {_fmt(c.median('gen_us'), '.0f')} | {_fmt(c.median('core0_pct'), '.0f')} "
            f"| {_fmt(busy1, '.0f')} | {_fmt(c.median('other_pct'), '.0f')} |"
        )
    return lines


def disturbed(sc: Scenario) -> list[str]:
    """A warning when something else used the CPUs: then req/s and latencies are suspect."""
    worst = max((c.median("other_pct") or 0.0 for c in sc.cells), default=0.0)
    if worst < OTHER_WARN_PCT:
        return []
    return [f"**Warning:** other processes (or the hypervisor) used up to {worst:.0f} % of a "
            "core during this scenario; req/s and latencies are suspect, CPU µs/req less so. "
            "Rerun on a quiet machine."]


def ratios(sc: Scenario) -> list[str]:
    """tollway CPU / relay CPU per mode: the cost of tollway's own work (goal: <= 2.0x)."""
    parts = []
    for mode in MODES:
        tw, relay = sc.cell("tollway", mode), sc.cell("relay", mode)
        a = tw.median("cpu_us") if tw else None
        b = relay.median("cpu_us") if relay else None
        if a and b:
            verdict = "ok" if a / b <= 2.0 else "over the 2.0x goal"
            parts.append(f"{mode} **{a / b:.2f}x** ({a:.0f} / {b:.0f} µs, {verdict})")
    lines = [f"CPU per request, tollway / relay: {'; '.join(parts)}"] if parts else []
    for guards in FEATURES:
        extra = []
        for mode in MODES:
            g, core = sc.cell(guards, mode), sc.cell("tollway", mode)
            if g is None or core is None:
                continue
            dcpu = _diff(g.median("cpu_us"), core.median("cpu_us"))
            d50 = _diff(g.median("p50_ms"), core.median("p50_ms"))
            extra.append(f"{mode} {_fmt(dcpu, '.0f', True)} µs CPU, "
                         f"{_fmt(d50, '.2f', True)} ms p50")
        if extra:
            lines.append(f"{guards} over the core tollway row: {'; '.join(extra)}")
    for c in sc.cells:  # --baseline: each row against the same row of the baseline checkout
        if "@" not in c.target:
            continue
        new = sc.cell(base_name(c.target), c.mode)
        if new is None:
            continue
        dcpu = _diff(new.median("cpu_us"), c.median("cpu_us"))
        d50 = _diff(new.median("p50_ms"), c.median("p50_ms"))
        d99 = _diff(new.median("p99_ms"), c.median("p99_ms"))
        lines.append(f"{new.target} {c.mode} against {c.target}: {_fmt(dcpu, '.0f', True)} µs "
                     f"CPU, {_fmt(d50, '.2f', True)} ms p50, {_fmt(d99, '.2f', True)} ms p99")
    return lines


def cache_lines(sc: Scenario) -> list[str]:
    """What the cache rows really did, from the gateway's own counters, flagged when a row is
    not what it says: then its CPU figure measures something else."""
    lines = []
    for c in sc.cells:
        if c.cache is None:
            continue
        kind = "exact" if c.target.startswith("cache") else "semantic"
        row = base_name(c.target)
        # A hit row misses its first requests (those in flight before the first answer is
        # stored); a semantic lookup that times out or finds the queue full is neither.
        want = "hit" if row.endswith("-hit") else "miss"
        share = c.cache.share(kind, want)
        flag = (f" **(only {share:.1%} {want}: read its figures with care)**"
                if share < 0.95 else f" ({share:.1%} {want})")
        if want == "miss" and c.cache.requests.get((kind, "hit")):  # every turn is new
            flag += " **(a miss row hit: a false hit?)**"
        lines.append(f"- {c.target} {c.mode}: {c.cache.describe()}{flag}")
    if not lines:
        return []
    return ["Cache outcomes per cell, smoke request and warm-up included (the gateway's "
            "/metrics: `tollway_cache_requests_total`, `tollway_cache_semantic_rejections_total`, "
            "mean of `tollway_cache_lookup_seconds`):", "", *lines]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def report(scenarios: list[Scenario], opts: argparse.Namespace, tokens: int, body_bytes: int,
           elapsed_s: float) -> str:
    events = next((c.events for sc in scenarios for c in sc.cells
                   if c.target == "direct" and c.events), None)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# tollway overhead benchmark",
        "",
        f"- date: {now}; machine: nproc {os.cpu_count()}, {_cpu_model()}, "
        f"Linux {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"uvloop {uvloop.__version__}",
        f"- request: chat with a {tokens}-token history (o200k; {body_bytes} bytes of JSON), "
        "a new last user turn per request, `gpt-4o-mini`, `max_tokens: 128`"
        + (f"; stream answers are {events} SSE events (mock `--chunks {MOCK_CHUNKS}`)"
           if events else ""),
        f"- concurrency {opts.concurrency}; per cell: {opts.warmup:g} s warm-up, then runs of "
        f"{opts.duration:g} s; medians over runs",
        f"- pinning: mock upstream + load generator on core {LOAD_CORE}, target on core "
        f"{TARGET_CORE}; total runtime {elapsed_s:.0f} s",
    ]
    for sc in scenarios:
        pause = (f"; workers pause 0-{sc.pause_s * 1e3:g} ms at random between requests"
                 if sc.pause_s else "")
        lines += ["", f"## {sc.title}", "",
                  f"{sc.runs} run{'s' if sc.runs != 1 else ''} per cell{pause}.", "", *table(sc)]
        ratio = ratios(sc)
        lines += ["", *ratio] if ratio else []
        outcomes = cache_lines(sc)
        lines += ["", *outcomes] if outcomes else []
        lines += ["", "Load side (mock and load generator share core 0; other = CPU time used by "
                  "anything else on the machine, kernel networking included):", "",
                  *load_table(sc)]
        warning = disturbed(sc)
        lines += ["", *warning] if warning else []
    return "\n".join(lines) + "\n"


# -- command line ------------------------------------------------------------------------------


def _csv(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type for a comma-separated subset of `allowed`, kept in canonical order."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return tuple(x for x in allowed if x in items)

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    p.add_argument("--runs", type=int, default=3, help="runs per cell (default 3)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per cell")
    p.add_argument("--concurrency", type=int, default=50, help="requests in flight (default 50)")
    p.add_argument("--quick", action="store_true", help="1 run of 3 s per cell: a smoke test")
    p.add_argument("--with-latency", dest="latency", action="store_true", default=True,
                   help="also run the 50 ms upstream-latency scenario (the default)")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip the 50 ms upstream-latency scenario")
    p.add_argument("--latency-runs", type=int, default=1,
                   help="runs per cell in the latency scenario (default 1)")
    p.add_argument("--targets", type=_csv(TARGETS), default=TARGETS,
                   help="comma-separated subset of " + ",".join(TARGETS))
    p.add_argument("--modes", type=_csv(MODES), default=MODES,
                   help="comma-separated subset of non-stream,stream")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also run every tollway row from git revision REV (a temporary "
                        "worktree), right after the same row of this checkout")
    p.add_argument("--latency-pause-ms", type=float, default=LATENCY_PAUSE_MS,
                   help="max random pause between a worker's requests in the latency scenario "
                        f"(default {LATENCY_PAUSE_MS:g})")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.runs, opts.duration, opts.warmup, opts.latency_runs = 1, 3.0, 1.0, 1
    if opts.runs < 1 or opts.duration <= 0 or opts.concurrency < 1 or opts.latency_runs < 1:
        p.error("--runs, --latency-runs, --duration and --concurrency must be positive")
    return opts


def checkout(rev: str, where: Path) -> Path:
    """A detached worktree of `rev` (this repository's git history) at `where`."""
    out = subprocess.run(["git", "-C", str(BENCH.parent), "worktree", "add", "--detach",
                          str(where), rev], capture_output=True, text=True)
    if out.returncode:
        raise BenchError(f"cannot check out {rev!r}: {out.stderr.strip()}")
    return where


_terminated: list[int] = []


def _on_sigterm(signum: int, _frame: object) -> None:
    """Take Ctrl-C's orderly path: the running load is cancelled, then children are stopped."""
    _terminated.append(signum)
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # A shell starts background jobs with SIGINT ignored; we want Ctrl-C semantics regardless.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.sched_setaffinity(0, {LOAD_CORE})  # the load generator shares core 0 with the mock
    tokens = prompt_tokens()
    body_bytes = len(Bodies(False).next())
    print(f"prompt: {tokens} o200k tokens, {body_bytes} bytes; concurrency {opts.concurrency}, "
          f"{opts.runs} x {opts.duration:g} s per cell", flush=True)
    scenarios = [Scenario("Upstream without latency", 0.0, opts.runs)]
    if opts.latency:
        scenarios.append(Scenario(f"Upstream with {LATENCY_MS:g} ms latency", LATENCY_MS,
                                  opts.latency_runs, opts.latency_pause_ms / 1e3))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tollway-bench-") as logdir:
        children = Children(Path(logdir))
        opts.baseline_tree = None
        try:
            if opts.baseline:
                opts.baseline_tree = checkout(opts.baseline, Path(logdir) / "baseline")
                opts.targets = tuple(t for target in opts.targets for t in (
                    (target,) if target in ("direct", "relay") else
                    (target, f"{target}@base")))
            for sc in scenarios:
                run_scenario(sc, opts, children)
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted; child processes stopped", file=sys.stderr)
            return 128 + (_terminated[0] if _terminated else signal.SIGINT)
        finally:
            children.stop_all()
            if opts.baseline_tree is not None:
                subprocess.run(["git", "-C", str(BENCH.parent), "worktree", "remove", "--force",
                                str(opts.baseline_tree)], check=False, capture_output=True)
    text = report(scenarios, opts, tokens, body_bytes, time.monotonic() - started)
    print("\n" + text, end="")
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text)
    print(f"\nwritten to {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
