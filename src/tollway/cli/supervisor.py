"""`tollway serve --workers N`: the supervisor that holds the port and keeps N workers up."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

log = logging.getLogger("tollway")


# The supervisor holds the port (bound with SO_REUSEPORT, never listening, so the kernel hands
# it no connections) and the admin listener's the same way, starts N `tollway serve
# --worker-of <pid>` processes that each listen on both with SO_REUSEPORT, and forwards
# SIGTERM/SIGINT (drain) and SIGHUP (reload) to them. The workers run in their own process
# group: a terminal's Ctrl-C reaches them once, through the supervisor. A worker that dies
# unexpectedly is restarted with backoff; one that keeps dying makes the supervisor stop the
# others and exit 1.

RESTART_BACKOFF_S = (0.5, 30.0)  # first delay, cap (doubling)
HEALTHY_AFTER_S = 60.0  # a worker up this long resets its backoff
MAX_QUICK_CRASHES = 5  # in a row (each up less than HEALTHY_AFTER_S): give up
STOP_GRACE_S = 30.0  # beyond drain_timeout_s, before a stuck worker is killed


def _hold_port(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def supervise(config_path: str, host: str, port: int, n: int, drain_s: float,
                    admin: tuple[str, int] | None = None) -> int:
    """Run n workers on host:port (and, with `admin`, on the admin listener's host and port,
    held here too so that port 0 becomes one port all the workers share)."""
    import shutil
    import tempfile

    from prometheus_client.multiprocess import mark_process_dead

    if not hasattr(socket, "SO_REUSEPORT"):
        print("tollway: --workers needs SO_REUSEPORT, which this platform lacks",
              file=sys.stderr)
        return 2
    try:
        holder = _hold_port(host, port)
    except OSError as exc:
        print(f"tollway: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    port = holder.getsockname()[1]
    admin_holder = None
    admin_args: tuple[str, ...] = ()
    if admin is not None:
        try:
            admin_holder = _hold_port(*admin)
        except OSError as exc:
            holder.close()
            print(f"tollway: cannot listen on {admin[0]}:{admin[1]} for the admin listener "
                  f"(server.admin): {exc.strerror or exc}", file=sys.stderr)
            return 1
        admin_args = ("--admin-port", str(admin_holder.getsockname()[1]))
    metrics_dir = tempfile.mkdtemp(prefix="tollway-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # Workers watch the read end; the write end is only here (not inheritable), so they see
    # EOF when the supervisor is gone, even killed outright, and drain by themselves.
    lifeline, lifeline_w = os.pipe()
    procs: dict[int, asyncio.subprocess.Process] = {}  # slot -> the running worker
    sent: set[int] = set()  # signals forwarded, so a worker they killed is not a failure
    failed = False

    def forward(sig: signal.Signals) -> None:
        if sig != signal.SIGHUP:
            sent.add(sig)
            if not stopping.is_set():
                log.info("%s: draining %d workers (up to %.0fs)", sig.name, n, drain_s)
            stopping.set()
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    async def spawn(slot: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tollway", "serve", "-c", config_path, "--host", host,
            "--port", str(port), "--worker-of", str(os.getpid()), "--worker-index", str(slot),
            "--lifeline", str(lifeline), *admin_args, env=env, process_group=0,
            pass_fds=(lifeline,))
        procs[slot] = proc
        if stopping.is_set():  # a stop arrived while it was being started
            proc.send_signal(signal.SIGTERM)
        return proc

    async def keep(slot: int) -> None:
        nonlocal failed
        delay, crashes = RESTART_BACKOFF_S[0], 0
        while True:
            proc = await spawn(slot)
            started = loop.time()
            code = await proc.wait()
            mark_process_dead(proc.pid, metrics_dir)
            if stopping.is_set() and (code == 0 or -code in sent):
                return
            if stopping.is_set():
                log.error("worker %d (pid %d) exited with %s while draining", slot, proc.pid,
                          code)
                failed = True
                return
            if loop.time() - started >= HEALTHY_AFTER_S:
                delay, crashes = RESTART_BACKOFF_S[0], 0
            crashes += 1
            if crashes >= MAX_QUICK_CRASHES:
                log.error("worker %d (pid %d) exited with %s, %d times in a row: stopping",
                          slot, proc.pid, code, crashes)
                failed = True
                forward(signal.SIGTERM)
                return
            log.error("worker %d (pid %d) exited with %s; restarting in %.1fs", slot,
                      proc.pid, code, delay)
            try:
                await asyncio.wait_for(stopping.wait(), delay)
                return
            except TimeoutError:
                pass
            delay = min(delay * 2, RESTART_BACKOFF_S[1])

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, forward, sig)
    log.info("tollway supervisor (pid %d): %d workers on http://%s:%d (config %s)",
             os.getpid(), n, host, port, config_path)
    keepers = [asyncio.create_task(keep(slot)) for slot in range(n)]
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([stopped, *keepers], return_when=asyncio.FIRST_COMPLETED)
        if not stopping.is_set():  # a keeper failed outright (cannot start a process)
            failed = True
            forward(signal.SIGTERM)
        _, stuck = await asyncio.wait(keepers, timeout=drain_s + STOP_GRACE_S)
        if stuck:
            log.error("%d workers did not stop in time: killing them", len(stuck))
            failed = True
            for proc in procs.values():
                if proc.returncode is None:
                    proc.kill()
            await asyncio.wait(keepers)
        for k in keepers:
            if k.exception() is not None:
                failed = True
                log.error("worker supervision failed", exc_info=k.exception())
    finally:
        holder.close()
        if admin_holder is not None:
            admin_holder.close()
        os.close(lifeline)
        os.close(lifeline_w)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
    return 1 if failed else 0

