"""CPU per request under a load that saturates the target: wrk against the relay and tollway.

A Python load generator cannot keep a fast relay busy (it holds its own core first), and a
target that idles between requests spends more CPU on each, which flatters the ratio. wrk
(C, one thread) with a Lua script that gives every request a new last turn keeps the
target's core saturated. The target runs on core 1 alone; wrk, the mock upstream and
redis-server share core 0. Every round runs every target in a new random order (the same
for streamed and not), each for --duration seconds; CPU per request is the target's
utime+stime over the requests wrk completed, the ratio is taken within each round against
the relay of that round, and the report gives medians over the rounds (and each round).
redis-server's CPU per request is reported beside the guards-on-Redis row.

    .venv/bin/python bench/wrk.py [--rounds 3] [--duration 10] [--connections 50]

With --baseline REV every row but the relay also runs from that revision (a git worktree),
as <row>@base, in the same rounds: before and after measured side by side.

Targets: relay (bench/relay.py, the floor for a Python proxy), tollway (bench's core
config), default (the repository's gateway.yaml, its OpenAI provider pointed at the mock),
guards-mem, guards-redis, cache-hit (the same request again and again: an exact-cache hit),
semantic-hit (the same again with the exact cache off: the local embedder runs on every
request, the index answers at similarity 1.0, which costs what any semantic hit costs),
guardrails (the core with PII, secrets and injection guardrails on the prompt, the answer
and the tool results: bench/gateway.guardrails.yaml), gemini (the core with its model served
by the mock's Gemini dialect: the translation both ways, bench/gateway.gemini.yaml). Needs wrk
(Debian package `wrk`; `make bench` installs it) and taskset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conversation import body_template
from run import (
    BENCH,
    LOAD_CORE,
    PYTHON,
    RESULTS,
    TARGET_CORE,
    TOLLWAY,
    BenchError,
    Children,
    base_name,
    checkout,
    cpu_seconds,
    free_port,
    start_mock,
    start_redis,
    start_target,
    wait_healthy,
)

TARGETS = ("relay", "tollway", "default", "guards-mem", "guards-redis", "cache-hit",
           "semantic-hit", "guardrails", "gemini")
REPEAT = ("cache-hit", "semantic-hit")  # rows that send the same request again and again
MODES = ("non-stream", "stream")
LUA = """
local prefix = [=====[{prefix}]=====]
local suffix = [=====[{suffix}]=====]
local n = 0
-- a new seed per wrk run: the targets live through every round, and a body sent again
-- in a later round would count as a repeated request (and be refused as a loop)
math.randomseed(os.time())
local run = math.random(1e9)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-tw-bench"
request = function()
  n = n + 1
  local turn = {repeat} and "repeat" or (run .. "-" .. n .. "-" .. math.random(1e9))
  local body = prefix .. turn .. suffix
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end
"""


def lua_script(stream: bool, repeat: bool, where: Path) -> Path:
    prefix, suffix = body_template(stream)
    path = where / f"body-{'s' if stream else 'n'}{'-r' if repeat else ''}.lua"
    path.write_text(LUA.replace("{prefix}", prefix.decode()).replace(
        "{suffix}", suffix.decode()).replace("{repeat}", "true" if repeat else "false"))
    return path


def default_config(upstream: str, where: Path, tree: Path = BENCH.parent) -> Path:
    """The repository's gateway.yaml as users run it, its OpenAI provider sent to the mock
    (edited as text: a YAML round trip would turn `on:` keys into booleans)."""
    text = (tree / "gateway.yaml").read_text()
    text = text.replace("base_url: https://api.openai.com/v1", f"base_url: {upstream}/v1", 1)
    text = text.replace("api_key: ${OPENAI_API_KEY:-}", "api_key: sk-bench", 1)
    text = re.sub(r"admin: \{enabled: true, host: 127.0.0.1, port: 4101\}",
                  "admin: {enabled: true, host: 127.0.0.1, port: 0}", text)
    text = re.sub(r"log_level: info", "log_level: warning", text, count=1)
    if f"{upstream}/v1" not in text or "port: 0}" not in text:
        raise BenchError("gateway.yaml changed shape: edit default_config")
    path = where / f"gateway.default{'' if tree == BENCH.parent else '.base'}.yaml"
    path.write_text(text)
    return path


def start_default(children: Children, upstream: str, config: Path,
                  baseline: Path | None = None) -> tuple[object, str]:
    """The default row; with `baseline`, that checkout's code (its own gateway.yaml)."""
    port = free_port()
    name = "default" if baseline is None else "default@base"
    argv = [TOLLWAY] if baseline is None else [PYTHON, "-m", "tollway"]
    env = {} if baseline is None else {"PYTHONPATH": str(baseline / "src")}
    proc = children.start(name, TARGET_CORE, [*argv, "serve", "-c", str(config), "--host",
                                              "127.0.0.1", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base + "/healthz", proc, children, name, 30.0)
    return proc, base


def run_wrk(base: str, script: Path, duration: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}",
         f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), base],
        capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    if done is None:
        raise BenchError(f"wrk printed no request count:\n{out}")
    return {"requests": float(done.group(1)), "errors": float(errors.group(1)) if errors else 0,
            "p50_ms": _ms(lat.get("50", "0ms")), "p99_ms": _ms(lat.get("99", "0ms"))}


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.sub(r"[\d.]+", "", text)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--out", default=None, help="file name under bench/results "
                    "(default wrk-<date>.md)")
    ap.add_argument("--baseline", metavar="REV", default=None,
                    help="also run every row but the relay on this revision (<row>@base), "
                         "interleaved with the rest: before and after in one run")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    targets = [t for t in args.targets.split(",") if t]
    tmp = Path(tempfile.mkdtemp(prefix="tollway-wrk-"))
    baseline = checkout(args.baseline, tmp / "base") if args.baseline else None
    if baseline is not None:
        targets += [f"{t}@base" for t in targets if t != "relay"]
    children = Children(tmp)
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        mock, upstream = start_mock(children, 0.0)
        redis: dict[str, tuple[object, str]] = {}  # a redis-server of its own per Redis row
        procs: dict[str, tuple[object, str]] = {}
        for t in targets:
            row = base_name(t)
            if row == "default":
                procs[t] = start_default(
                    children, upstream, default_config(upstream, tmp, baseline or BENCH.parent)
                    if row != t else default_config(upstream, tmp),
                    baseline if row != t else None)
            elif row == "guards-redis":
                redis[t] = start_redis(children)
                procs[t] = start_target(children, t, upstream, redis[t][1], baseline=baseline)
            else:
                procs[t] = start_target(children, t, upstream, baseline=baseline)
        scripts = {(m, rep): lua_script(m == "stream", rep, tmp) for m in MODES
                   for rep in (False, True)}
        rng = random.Random(args.seed)
        for rnd in range(args.rounds):
            order = list(targets)
            rng.shuffle(order)
            for mode in MODES:
                for t in order:
                    proc, base = procs[t]
                    script = scripts[(mode, base_name(t) in REPEAT)]
                    redis_proc = redis[t][0] if t in redis else None
                    run_wrk(base, script, 2.0, args.connections)  # warm: caches, pools, JIT-less
                    pid = proc.pid  # type: ignore[attr-defined]
                    c0 = cpu_seconds(pid)
                    r0 = cpu_seconds(redis_proc.pid) if redis_proc else 0.0  # type: ignore[attr-defined]
                    res = run_wrk(base, script, args.duration, args.connections)
                    res["cpu_us"] = (cpu_seconds(pid) - c0) * 1e6 / max(1.0, res["requests"])
                    if redis_proc is not None:
                        res["redis_us"] = ((cpu_seconds(redis_proc.pid) - r0)  # type: ignore[union-attr]
                                           * 1e6 / max(1.0, res["requests"]))
                    res["round"] = rnd
                    rows.setdefault((t, mode), []).append(res)
                    print(f"round {rnd + 1} {mode:10} {t:12} {res['cpu_us']:8.1f} us/req "
                          f"{res['requests'] / args.duration:8.0f} req/s "
                          f"p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms "
                          f"errors {res['errors']:.0f}", file=sys.stderr)
        _ = mock
    finally:
        children.stop_all()
        if baseline is not None:
            subprocess.run(["git", "-C", str(BENCH.parent), "worktree", "remove", "--force",
                            str(baseline)], capture_output=True)
    report = table(rows, targets, args)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or f"wrk-{dt.date.today().isoformat()}.md")
    out.write_text(report + "\n")
    print(f"written to {out}", file=sys.stderr)
    return 0


def table(rows: dict[tuple[str, str], list[dict[str, float]]], targets: list[str],
          args: argparse.Namespace) -> str:
    lines = [f"wrk -t1 -c{args.connections}, {args.duration:g} s per cell, {args.rounds} rounds "
             f"(targets in a new random order each round), target on core {TARGET_CORE} "
             f"alone; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"{os.cpu_count()} cores. Medians over the rounds; x relay taken within each "
             "round." + (f" <row>@base: {args.baseline}, interleaved with the rest."
                         if args.baseline else ""), "",
             "| target | mode | CPU µs/req | x relay | req/s | p50 ms | p99 ms | "
             "redis-server µs/req | errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        relay = {r["round"]: r["cpu_us"] for r in rows.get(("relay", mode), [])}
        for t in targets:
            cells = rows.get((t, mode), [])
            if not cells:
                continue
            ratios = [c["cpu_us"] / relay[c["round"]] for c in cells if c["round"] in relay]
            med = {k: statistics.median(c[k] for c in cells)
                   for k in ("cpu_us", "requests", "p50_ms", "p99_ms", "errors")}
            redis = (f"{statistics.median(c['redis_us'] for c in cells):.0f}"
                     if "redis_us" in cells[0] else "")
            lines.append(
                f"| {t} | {mode} | {med['cpu_us']:.0f} | "
                f"{statistics.median(ratios):.2f} | {med['requests'] / args.duration:.0f} | "
                f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | {redis} | {med['errors']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
