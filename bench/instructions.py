"""Instructions per request, counted by valgrind: the gateway's own work, free of CPU noise.

CPU time per request (bench/run.py) moves by ±20% between runs on a shared virtual machine
(frequency, steal, neighbours); a change of a few microseconds drowns in it. Instruction
counts do not: valgrind's callgrind counts every instruction the target executes, so two
versions can be compared to a fraction of a percent. Each cell starts the target under
`valgrind --tool=callgrind` with counting off, warms it up, counts a first batch (discarded:
it pays for instrumenting new code paths), then counts `--requests` requests, one at a time
over a few connections, and divides. Socket timing still changes how many event-loop
iterations a request takes, so repeated cells differ by ~0.3%; compare rows within that.

    .venv/bin/python bench/instructions.py [--baseline REV] [--targets ...] [--requests N]

Needs valgrind (Debian package `valgrind`). Slow: the target runs ~50x slower under
valgrind; about half a minute per cell.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from run import (
    PATH,
    BenchError,
    Bodies,
    Children,
    base_name,
    checkout,
    start_mock,
    start_redis,
    start_target,
)

TARGETS = ("relay", "tollway", "guards-mem", "guards-redis", "cache-hit")
MODES = ("non-stream", "stream")
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-tw-bench"}


async def drive(url: str, bodies: Bodies, n: int, conns: int = 4) -> None:
    async with aiohttp.ClientSession() as session:
        async def worker(count: int) -> None:
            for _ in range(count):
                async with session.post(url, data=bodies.next(), headers=HEADERS) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise BenchError(f"{url} answered {resp.status}")
        await asyncio.gather(*(worker(n // conns) for _ in range(conns)))


def callgrind(pid: int, what: str) -> None:
    subprocess.run(["callgrind_control", what, str(pid)], check=True, capture_output=True)


def counted(out: Path) -> int:
    """The instructions of the last dump (its `summary:` line)."""
    dumps = sorted(out.parent.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:]))
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise BenchError(f"no summary in {dumps[-1]}")


def cell(children: Children, target: str, mode: str, upstream: str, requests: int,
         baseline: Path | None, logdir: Path) -> float:
    redis = redis_url = None
    if base_name(target) == "guards-redis":
        redis, redis_url = start_redis(children)
    out = logdir / f"cg-{target}-{mode}.out"
    wrap = ("valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}")
    proc, base = start_target(children, target, upstream, redis_url, baseline, wrap,
                              ready_s=180.0)
    try:
        stream = mode == "stream"
        bodies = Bodies(stream, repeat=base_name(target) == "cache-hit")
        url = base + PATH
        asyncio.run(drive(url, bodies, 40))
        callgrind(proc.pid, "--instr=on")
        asyncio.run(drive(url, bodies, 40))
        callgrind(proc.pid, "--dump")
        asyncio.run(drive(url, bodies, requests))
        callgrind(proc.pid, "--dump")
        return counted(out) / requests
    finally:
        children.stop(proc)
        if redis is not None:
            children.stop(redis)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--targets", default=",".join(TARGETS[1:]),
                   help="comma-separated subset of " + ",".join(TARGETS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--requests", type=int, default=400, help="requests counted per cell")
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also count every row from git revision REV, right after this one")
    opts = p.parse_args(argv)
    targets = [t for t in opts.targets.split(",") if t]
    if any(t not in TARGETS for t in targets):
        p.error("choose targets from " + ",".join(TARGETS))
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="tollway-ir-") as tmp:
        logdir = Path(tmp)
        children = Children(logdir)
        baseline = None
        try:
            if opts.baseline:
                baseline = checkout(opts.baseline, logdir / "baseline")
            _, upstream = start_mock(children, 0.0)
            for mode in opts.modes.split(","):
                for target in targets:
                    names = [target] if baseline is None or target == "relay" else [
                        target, f"{target}@base"]
                    for name in names:
                        ir = cell(children, name, mode, upstream, opts.requests, baseline,
                                  logdir)
                        rows.append((name, mode, ir))
                        print(f"  {name:18} {mode:10} {ir:12,.0f} instructions/request",
                              flush=True)
        except BenchError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return 1
        finally:
            children.stop_all()
            if baseline is not None:
                subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]),
                                "worktree", "remove", "--force", str(baseline)],
                               check=False, capture_output=True)
    print("\n| target | mode | instructions / request | vs baseline |\n|---|---|---:|---:|")
    found = {(t, m): ir for t, m, ir in rows}
    for t, m, ir in rows:
        ref = found.get((f"{t}@base", m))
        delta = f"{(ir / ref - 1) * 100:+.2f}%" if ref else ""
        print(f"| {t} | {m} | {ir:,.0f} | {delta} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
