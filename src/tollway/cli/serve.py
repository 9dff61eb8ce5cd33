"""tollway serve: one gateway process, or the supervisor of `--workers N` of them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from tollway.cli.supervisor import supervise
from tollway.config import ConfigError, load_config

log = logging.getLogger("tollway")


def run_serve(args: argparse.Namespace) -> int:
    from tollway.observe.logs import setup_logging

    if args.worker_of:  # a reload forwarded while starting: the config is read afresh anyway
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"tollway: cannot start, the config has errors:\n{exc}", file=sys.stderr)
        return 2
    workers = 1 if args.worker_of else args.workers or cfg.server.workers
    if args.workers and args.workers != cfg.server.workers and not args.worker_of:
        problem = _workers_problem(cfg, args.config, args.workers)
        if problem:
            print(f"tollway: cannot start, the config has errors:\n{problem}", file=sys.stderr)
            return 2
    setup_logging(cfg.server.log_level)
    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    config_path = str(Path(args.config).resolve())
    if workers > 1:
        with asyncio.Runner() as supervisor:
            admin = cfg.server.admin
            return supervisor.run(supervise(
                config_path, host, port, workers, cfg.server.drain_timeout_s,
                (admin.host, admin.port) if admin.enabled else None))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        return runner.run(_run(cfg, config_path, host, port, args.worker_of,
                               args.worker_index, args.lifeline, args.admin_port))


def _workers_problem(cfg: object, path: str, workers: int) -> str | None:
    """The config's own check of server.workers, run with the --workers value."""
    from pydantic import ValidationError

    from tollway.config.model import Config, ReferenceError_

    assert isinstance(cfg, Config)
    server = cfg.server.model_copy(update={"workers": workers})
    try:
        Config.model_validate(cfg.model_copy(update={"server": server}))
    except ValidationError as exc:
        for err in exc.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, ReferenceError_) and ctx_err.loc == ("server", "workers"):
                return f"{path}: server.workers (--workers {workers}): {ctx_err.message}"
    return None


def _watch_supervisor(loop: asyncio.AbstractEventLoop, fd: int, parent: int,
                      stop: asyncio.Event) -> None:
    """A worker whose supervisor is gone (killed outright) drains and stops by itself."""
    def gone() -> None:
        loop.remove_reader(fd)
        log.warning("the supervisor (pid %d) is gone: stopping", parent)
        stop.set()
    loop.add_reader(fd, gone)  # nobody writes: readable means EOF


async def _run(cfg: object, config_path: str, host: str, port: int,
               worker_of: int | None = None, worker_index: int = 0,
               lifeline: int | None = None, admin_port: int | None = None) -> int:
    from aiohttp import web

    from tollway.app import GATEWAY, build_app
    from tollway.config.model import Config
    from tollway.ingress import heap
    from tollway.ingress.server import GatewayRunner

    assert isinstance(cfg, Config)
    # A worker listens on the admin port its supervisor holds, with SO_REUSEPORT like the
    # main port: any worker's /metrics merges every worker's (admin/listener.py).
    app = build_app(cfg, config_path, worker_index, admin_port, admin_reuse_port=bool(worker_of))
    runner = GatewayRunner(app, cfg.server, access_log=logging.getLogger("aiohttp.access")
                           if cfg.server.access_log else None,
                           shutdown_timeout=cfg.server.drain_timeout_s, handle_signals=False)
    try:
        await runner.setup()  # starts the gateway, and the admin listener
    except OSError as exc:
        log.error("cannot start: %s", exc.strerror or exc)
        await runner.cleanup()
        return 1
    # Signals are handled before the port opens: a SIGHUP (a reload) or SIGTERM sent to a
    # worker the moment it is seen listening must not find the default action (exit).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = app[GATEWAY]
    reloads: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(gateway.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    heap.settle()  # after start-up, before the first request (ingress/heap.py)
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True,
                       reuse_port=True if worker_of else None)
    await site.start()
    if worker_of:
        log.info("tollway worker %d (pid %d) listening on http://%s:%d (config %s)",
                 worker_index, os.getpid(), host, port, config_path)
        if lifeline is not None:
            _watch_supervisor(loop, lifeline, worker_of, stop)
    else:
        log.info("tollway listening on http://%s:%d (config %s)", host, port, config_path)
    await stop.wait()
    log.info("draining in-flight requests (up to %.0fs)", cfg.server.drain_timeout_s)
    await runner.cleanup()
    log.info("stopped")
    return 0
