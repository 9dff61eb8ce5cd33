"""tollway serve | check | spend."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from tollway import audit_cli
from tollway.config import ConfigError, load_config

log = logging.getLogger("tollway")
DEFAULT_CONFIG = "gateway.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollway", description="AgentOps gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=_positive, metavar="N",
                       help="processes serving the port with SO_REUSEPORT (default: "
                            "server.workers); more than 1 needs state.backend: redis")
    serve.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)  # supervisor's pid
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve.add_argument("--lifeline", type=int, help=argparse.SUPPRESS)  # EOF: supervisor gone

    check = sub.add_parser("check", help="validate a config file and exit non-zero on errors")
    check.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG))

    explain = sub.add_parser("explain", help="show which routing rule a request would match "
                             "and where it would go")
    explain.add_argument("-c", "--config",
                         default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG))
    explain.add_argument("--agent", default="anonymous")
    explain.add_argument("--team", help="default: the agent's team from the config")
    explain.add_argument("--model", required=True, help="the model the client asks for")
    explain.add_argument("--prompt-tokens", type=int, default=0)
    explain.add_argument("--tools", action="store_true", help="the request offers tools")
    explain.add_argument("--stream", action="store_true")
    explain.add_argument("--tag", action="append", default=[], help="repeatable")
    explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    explain.add_argument("--budget-spent", action="append", default=[], metavar="SCOPE=SHARE",
                         help="e.g. agent=0.85 (share of the budget already spent)")
    explain.add_argument("--at", help="evaluate time windows at this ISO-8601 time")

    schema = sub.add_parser("schema", help="print the JSON Schema of gateway.yaml")
    schema.add_argument("-o", "--output", help="write it to this file instead")

    spend = sub.add_parser("spend", help="print spend from a running gateway")
    spend.add_argument("--by", default="agent",
                       choices=["agent", "team", "model", "provider", "session", "tag"])
    spend.add_argument("--since", help="unix seconds, ISO-8601, or a duration like 24h")
    spend.add_argument("--url", default=os.environ.get("TOLLWAY_URL", "http://127.0.0.1:4100"))
    spend.add_argument("--admin-key", default=os.environ.get("TOLLWAY_ADMIN_KEY"))
    spend.add_argument("--json", action="store_true", help="print the raw JSON")

    audit_cli.add_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "audit":
        return audit_cli.run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check":
        return _check(args.config)
    if args.command == "explain":
        return _explain(args)
    if args.command == "schema":
        return _schema(args.output)
    return _spend(args)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _schema(output: str | None) -> int:
    from tollway.config.schema import schema_text

    text = schema_text()
    if output:
        Path(output).write_text(text)
    else:
        print(text, end="")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from datetime import datetime

    from tollway.routing.explain import explain

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        headers = dict(h.split("=", 1) for h in args.header)
        shares = {k: float(v) for k, v in (b.split("=", 1) for b in args.budget_spent)}
        at = datetime.fromisoformat(args.at.replace("Z", "+00:00")).timestamp() if args.at \
            else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines, ok = explain(cfg, agent=args.agent, team=args.team, model=args.model,
                        prompt_tokens=args.prompt_tokens, tools=args.tools, stream=args.stream,
                        tags=tuple(args.tag), headers=headers, budget_shares=shares, now=at)
    print("\n".join(lines))
    return 0 if ok else 1


def _check(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        return 1
    extra = ""
    if cfg.tools or cfg.mcp_servers:
        extra += f", {len(cfg.tools)} tools, {len(cfg.mcp_servers)} MCP servers"
    if cfg.policies:
        extra += (f", {len(cfg.policy.rules)} policy rules from {len(cfg.policy.files)} "
                  f"file(s)")
    print(f"{path}: ok ({len(cfg.providers)} providers, {len(cfg.models)} models, "
          f"{len(cfg.agents)} agents{extra})")
    return 0


def _serve(args: argparse.Namespace) -> int:
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
            return supervisor.run(_supervise(config_path, host, port, workers,
                                             cfg.server.drain_timeout_s))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        return runner.run(_run(cfg, config_path, host, port, args.worker_of,
                               args.worker_index, args.lifeline))


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


# --- many workers -----------------------------------------------------------------------------
# The supervisor holds the port (bound with SO_REUSEPORT, never listening, so the kernel hands
# it no connections), starts N `tollway serve --worker-of <pid>` processes that each listen on
# it with SO_REUSEPORT, and forwards SIGTERM/SIGINT (drain) and SIGHUP (reload) to them. The
# workers run in their own process group: a terminal's Ctrl-C reaches them once, through the
# supervisor. A worker that dies unexpectedly is restarted with backoff; one that keeps dying
# makes the supervisor stop the others and exit 1.

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


async def _supervise(config_path: str, host: str, port: int, n: int, drain_s: float) -> int:
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
            "--lifeline", str(lifeline), env=env, process_group=0, pass_fds=(lifeline,))
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
        os.close(lifeline)
        os.close(lifeline_w)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
    return 1 if failed else 0


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
               lifeline: int | None = None) -> int:
    from aiohttp import web

    from tollway.app import GATEWAY, build_app
    from tollway.config.model import Config

    assert isinstance(cfg, Config)
    app = build_app(cfg, config_path)
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access")
                           if cfg.server.access_log else None,
                           shutdown_timeout=cfg.server.drain_timeout_s, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True,
                       reuse_port=True if worker_of else None)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if worker_of:
        log.info("tollway worker %d (pid %d) listening on http://%s:%d (config %s)",
                 worker_index, os.getpid(), host, port, config_path)
        if lifeline is not None:
            _watch_supervisor(loop, lifeline, worker_of, stop)
    else:
        log.info("tollway listening on http://%s:%d (config %s)", host, port, config_path)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = app[GATEWAY]
    reloads: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(gateway.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    await stop.wait()
    log.info("draining in-flight requests (up to %.0fs)", cfg.server.drain_timeout_s)
    await runner.cleanup()
    log.info("stopped")
    return 0


def _spend(args: argparse.Namespace) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    params = {"by": args.by}
    if args.since:
        params["since"] = args.since
    try:
        r = httpx.get(f"{args.url.rstrip('/')}/admin/spend", params=params, headers=headers,
                      timeout=10)
    except httpx.HTTPError as exc:
        print(f"tollway: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        print(f"tollway: {r.status_code}: {message}", file=sys.stderr)
        return 1
    data = r.json()
    if args.json:
        print(r.text)
        return 0
    print(_table(data))
    return 0


def _table(data: dict) -> str:
    by = data["by"]
    cols = [(by, "key"), ("requests", "requests"), ("input", "input_tokens"),
            ("output", "output_tokens"), ("cached", "cached_tokens"), ("cost_usd", "cost_usd")]
    rows = [[str(r[k]) if k != "cost_usd" else f"{r[k]:.6f}" for _, k in cols]
            for r in data["rows"]]
    rows.append(["TOTAL", str(sum(r["requests"] for r in data["rows"])),
                 str(sum(r["input_tokens"] for r in data["rows"])),
                 str(sum(r["output_tokens"] for r in data["rows"])),
                 str(sum(r["cached_tokens"] for r in data["rows"])),
                 f"{data['total_cost_usd']:.6f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, (h, _) in enumerate(cols)]
    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    lines = [fmt([h for h, _ in cols]), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows[:-1]]
    lines += [fmt(["-" * w for w in widths]), fmt(rows[-1])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
