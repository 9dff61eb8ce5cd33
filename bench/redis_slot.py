"""How many requests one Redis Cluster shard sustains for one gateway's state.

Every key of a gateway starts with the hash tag `{<key_prefix>}`, so all of its state is in
one slot, on one primary, and each request costs that primary one admit.lua and one
record.lua call (EVALSHA). This starts a one-node cluster (`--cluster-enabled yes`, every
slot assigned to it), captures the KEYS and ARGV a guarded request really sends (one rpm
limit, an agent and a team budget, the loop counters, a step with two tags), and runs
`redis-benchmark` with each script: 50 connections, one command per round trip (as the
gateway sends them), sessions drawn from 100,000 (`__rand_int__`). It prints calls per
second of each script and the admit+record pairs per second they add up to: the most
requests per second that one shard can guard for one gateway, whatever the number of
gateway replicas. The benchmark client shares the machine with the server.

    .venv/bin/python bench/redis_slot.py [--requests 200000] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tollway.config.model import StateConfig
from tollway.observe.metrics import Metrics
from tollway.state.guards import Admission, BudgetCheck, LoopCheck, RateCheck, Settlement
from tollway.state.records import StepRecord
from tollway.state.redis import RedisState
from tollway.state.redis.link import RedisLink


class Capture:
    """Stands in for a script: keeps the KEYS and ARGV it is called with."""

    def __init__(self, name: str) -> None:
        self.name, self.keys, self.args = name, [], []  # type: ignore[var-annotated]

    async def __call__(self, keys: Any = (), args: Any = ()) -> Any:
        self.keys, self.args = [str(k) for k in keys], [str(a) for a in args]
        return [[], []]


def captured() -> dict[str, Capture]:
    """The admit.lua and record.lua calls of one guarded request."""
    scripts: dict[str, Capture] = {}

    def script(self: RedisLink, name: str) -> Capture:
        return scripts.setdefault(name, Capture(name))

    RedisLink.script = script  # type: ignore[assignment,method-assign]
    st = RedisState(StateConfig.model_validate({"backend": "redis"}), Metrics())
    st._link._up = True
    rate = RateCheck("agent:support-bot:rpm", "rpm", 600, 1)
    budgets = [BudgetCheck("agent", "support-bot", "day", 50.0, 0.002),
               BudgetCheck("team", "support", "month", 2000.0, 0.002)]
    session = "sess-__rand_int__"
    adm = Admission(session, "support-bot", [rate], budgets,
                    LoopCheck(session, "support-bot", "fp__rand_int__", 60.0, True, None))
    step = StepRecord(request_id="req___rand_int__", time=time.time(), agent="support-bot",
                      team="support", session=session, endpoint="chat", model="gpt-4o-mini",
                      requested_model="gpt-4o-mini", provider="openai", status=200,
                      tags=("prod", "triage"), input_tokens=2000, output_tokens=128,
                      cost_usd=0.000377)

    async def run() -> None:
        try:
            await st.guards.admit(adm)
        except (IndexError, TypeError):  # the captured reply is not a verdict
            pass
        await st.ledger.record(step, Settlement(budgets=[(b, 0.000377) for b in budgets]))
    asyncio.run(run())
    return scripts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_node_cluster(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
         "--cluster-enabled", "yes", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    end = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    while "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
        if time.monotonic() > end:
            raise TimeoutError("the one-node cluster did not reach cluster_state:ok")
        time.sleep(0.02)
    return proc, port


def bench(port: int, cap: Capture, text: str, requests: int, clients: int) -> float:
    sha = redis.Redis(port=port).script_load(text)
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", str(clients), "-n", str(requests),
         "-r", "100000", "-q", "EVALSHA", sha, str(len(cap.keys)), *cap.keys, *cap.args],
        capture_output=True, text=True, check=True).stdout
    m = re.search(r"([\d.]+) requests per second", out.replace(",", ""))
    if m is None:
        raise RuntimeError(f"no rate in redis-benchmark's output: {out!r}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=50)
    a = ap.parse_args(argv)
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark is not installed (Debian: redis-tools)", file=sys.stderr)
        return 2
    scripts = captured()
    lua = Path(__file__).resolve().parents[1] / "src/tollway/state/redis/lua"
    with tempfile.TemporaryDirectory() as d:
        proc, port = one_node_cluster(d)
        try:
            rates = {name: bench(port, scripts[name], (lua / name).read_text(), a.requests,
                                 a.clients) for name in ("admit.lua", "record.lua")}
        finally:
            proc.terminate()
            proc.wait(10)
    for name, rate in rates.items():
        print(f"{name:<11} {rate:>9,.0f} calls/s")
    pairs = 1 / sum(1 / r for r in rates.values())
    print(f"admit+record {pairs:>8,.0f} requests/s on one primary ({a.clients} connections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
