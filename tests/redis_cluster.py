"""A real Redis Cluster on loopback for the tests: `redis-server --cluster-enabled yes` per
node on free ports in a temp dir, joined with `redis-cli --cluster create`.

Fast and robust on a loaded machine: nothing sleeps for a fixed time; every step polls for
its condition (a node answers PING; every node says cluster_state:ok and knows every other;
every replica's link to its primary is up and caught up) until a deadline, and a failure
says which step and shows the nodes' log tails. It fails rather than skips: a missing
redis-server or redis-cli is an error.

Settings that make it fast: `--cluster-node-timeout 1000` (a dead primary is failed over in
about two seconds), `--repl-diskless-sync-delay 0` (a replica syncs at once, not after 5 s)
and `--cluster-replica-validity-factor 0` (a replica may be promoted however long it was
cut off, so a kill right after the sync still fails over).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose bus port (+10000) is free too."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if (port + BUS_OFFSET <= 65535 and port not in taken and port + BUS_OFFSET not in taken
                and _bindable(port + BUS_OFFSET)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def poll(check: Callable[[], bool], what: str, deadline_s: float) -> None:
    """Wait for `check()` to hold, polling; fail with `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Node:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True)

    def call(self, *args: Any) -> Any:
        with self.client() as c:
            return c.execute_command(*args)

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as c:
            return dict(c.info(section))

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = (self.dir / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"  {self.port}: {line}" for line in lines[-n:])


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each, on loopback."""

    def __init__(self, workdir: str, primaries: int = 3, replicas: int = 0) -> None:
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.server is None or self.cli is None:
            raise RuntimeError("redis-server and redis-cli are needed; `make test` installs "
                               "them")
        self.dir = Path(workdir)
        self.primaries, self.replicas = primaries, replicas
        taken: set[int] = set()
        self.nodes: list[Node] = []
        for _ in range(primaries * (1 + replicas)):
            port = cluster_port(taken)
            taken |= {port, port + BUS_OFFSET}
            self.nodes.append(Node(port, self.dir / str(port)))

    # --- lifecycle ----------------------------------------------------------------------
    def start(self, deadline_s: float = 60.0) -> None:
        try:
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                poll(lambda n=node: bool(n.call("PING")), f"node {node.port} to answer",
                     deadline_s)
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            assert self.cli is not None
            done = subprocess.run(
                [self.cli, "--cluster", "create", *addrs, "--cluster-replicas",
                 str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=deadline_s, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n"
                                   f"{done.stderr}")
            self.wait_healthy(deadline_s)
        except BaseException as exc:
            logs = "\n".join(n.log_tail() for n in self.nodes)
            self.stop()
            raise RuntimeError(f"the test cluster did not start: {exc}\n{logs}") from exc

    def _spawn(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        assert self.server is not None
        node.proc = subprocess.Popen(
            [self.server, "--port", str(node.port), "--bind", "127.0.0.1",
             "--dir", str(node.dir), "--logfile", "redis.log",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
             "--repl-diskless-sync-delay", "0", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)
                node.proc = None

    def restart(self, deadline_s: float = 30.0) -> None:
        """Start every stopped node again on its port and nodes.conf: the same cluster (no
        data: nothing is persisted), healthy again."""
        for node in self.nodes:
            if not node.alive:
                self._spawn(node)
        self.wait_healthy(deadline_s)

    def kill(self, node: Node) -> None:
        """SIGKILL: no goodbye to its replicas or clients."""
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)

    # --- what the cluster looks like ----------------------------------------------------
    @property
    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def owner(self, key: str) -> Node:
        """The primary that holds `key`'s slot, as the live nodes say."""
        any_node = self.alive[0]
        slot = int(any_node.call("CLUSTER", "KEYSLOT", key))
        for lo, hi, primary, *_ in any_node.call("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return self.node(int(primary[1]))
        raise LookupError(f"no node holds slot {slot}")

    def primaries_by_slot(self) -> list[Node]:
        """The primaries, the one with the lowest slots first."""
        ranges = sorted(self.alive[0].call("CLUSTER", "SLOTS"), key=lambda r: r[0])
        out: list[Node] = []
        for _, _, primary, *_ in ranges:
            node = self.node(int(primary[1]))
            if node not in out:
                out.append(node)
        return out

    def replicas_of(self, primary: Node) -> list[Node]:
        my_id = primary.call("CLUSTER", "MYID")
        return [n for n in self.alive
                if n is not primary and n.info("replication").get("role") == "slave"
                and _master_id(n) == my_id]

    def wait_healthy(self, deadline_s: float = 30.0) -> None:
        """Every live node: cluster_state ok, knows every live node, agrees who owns each
        slot; every replica: linked to its primary and caught up."""
        def healthy() -> bool:
            alive = self.alive
            views = set()
            for n in alive:
                info = n.call("CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    return False
                views.add(tuple((lo, hi, p[1]) for lo, hi, p, *_ in
                                sorted(n.call("CLUSTER", "SLOTS"), key=lambda r: r[0])))
            if len(views) != 1:
                return False
            primaries = {p for *_, p in next(iter(views))}
            replicas = [n for n in alive if n.port not in primaries]
            if len(primaries) + len(replicas) != len(alive):
                return False
            for r in replicas:
                rep = r.info("replication")
                if rep.get("master_link_status") != "up":
                    return False
                master = self.node(int(rep["master_port"]))
                if master.info("replication")["master_repl_offset"] != rep[
                        "slave_repl_offset"]:
                    return False
            return len(replicas) == self.primaries * self.replicas - (
                len(self.nodes) - len(alive))
        poll(healthy, "the cluster to be healthy (state ok, one slot map, replicas in sync)",
             deadline_s)

    def flush(self) -> None:
        for node in self.primaries_by_slot():
            node.call("FLUSHALL")


def _master_id(node: Node) -> str | None:
    for line in node.call("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            return fields[3] if fields[3] != "-" else None
    return None
