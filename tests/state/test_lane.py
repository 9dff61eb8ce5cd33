"""The lean path for script calls, on a real redis-server: it is the path the state takes,
a call that does not end whole never leaves its reply for the next one, the pool stays
bounded, NOSCRIPT still runs the script, and a frozen Redis fails within the timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tests.conftest import RedisServer

from tollway.config.model import StateConfig
from tollway.observe.metrics import Metrics
from tollway.state.redis.lane import Lane, pack
from tollway.state.redis.link import RedisLink

_ECHO = "return ARGV[1]"


async def apart(lane: Lane, n: int) -> list[object]:
    """n calls made in n passes of the event loop: n batches, each wanting a connection."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(lane.call(b"EVAL", _ECHO, 0, b"x")))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    return await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def lane(redis_server: RedisServer) -> AsyncIterator[Lane]:
    pool = BlockingConnectionPool.from_url(redis_server.url, decode_responses=True,
                                           protocol=2)
    # A call may wait 0.3 s for a turn, and a stalled call holds its turn for 0.6 s: a
    # third caller behind two stalled ones gives up before they do.
    made = Lane(pool, max_connections=2, wait_s=0.3, timeout_s=0.6)
    yield made
    await made.aclose()
    await pool.aclose()


@pytest.fixture
async def link(redis_server: RedisServer) -> AsyncIterator[RedisLink]:
    cfg = StateConfig.model_validate({"backend": "redis", "redis": {
        "url": redis_server.url, "timeout_ms": 300}})
    made = RedisLink(cfg, Metrics())
    yield made
    await made.aclose()


async def test_the_state_runs_its_scripts_on_the_lane(link: RedisLink) -> None:
    assert link.lane is not None
    echo = link.inline_script(_ECHO)
    calls = 0
    real = link.lane.call

    async def counted(*args: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args)

    link.lane.call = counted  # type: ignore[method-assign]
    assert await echo(keys=[link.key("x")], args=["héllo", 3, 0.1]) == "héllo"
    assert calls == 2  # NOSCRIPT on this fresh server, then the script's text
    assert await echo(keys=[link.key("x")], args=["again"]) == "again"
    assert calls == 3


async def test_noscript_is_answered_with_the_script(link: RedisLink) -> None:
    echo = link.inline_script(_ECHO)
    await link.redis.script_flush()
    assert await echo(keys=[link.key("x")], args=["first"]) == "first"
    assert await echo(keys=[link.key("x")], args=["again"]) == "again"  # cached now


async def test_a_cancelled_call_leaves_no_reply_for_the_next(
        lane: Lane, redis_server: RedisServer) -> None:
    """Cancelled between the write and the read (the client went away): the reply it would
    have read must not become the next call's answer on the same connection."""
    slow = "local t = redis.call('TIME'); while true do local n = redis.call('TIME'); " \
           "if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 50000 then break end end " \
           "return ARGV[1]"
    task = asyncio.create_task(lane.call(b"EVAL", slow, 0, b"stale"))
    await asyncio.sleep(0.01)  # written, its script busy for 50 ms
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(lane._all) == 1
    for i in range(5):
        assert await lane.call(b"EVAL", _ECHO, 0, f"fresh-{i}".encode()) == f"fresh-{i}"


async def test_a_frozen_redis_fails_within_the_timeout_and_the_lane_recovers(
        lane: Lane, redis_server: RedisServer) -> None:
    assert await lane.call(b"PING") == "PONG"
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await lane.call(b"EVAL", _ECHO, 0, b"lost")
        assert time.monotonic() - started < 1.5
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    # The frozen call's reply arrives late on a connection that was closed: never read.
    for i in range(4):
        assert await lane.call(b"EVAL", _ECHO, 0, f"after-{i}".encode()) == f"after-{i}"


async def test_the_pool_is_bounded_and_a_waiter_gives_up(
        lane: Lane, redis_server: RedisServer) -> None:
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        results = await apart(lane, 3)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    # Two connections opened to a Redis that does not answer: their hand-shake fails within
    # wait_s; the third call waited for a turn meanwhile (and then for a hand-shake of its
    # own, or gave up waiting: the two deadlines are equal). None hangs, none gets an answer.
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert sum("Timeout connecting" in str(r) for r in results) >= 2
    assert len(lane._all) <= 2
    assert await lane.call(b"EVAL", _ECHO, 0, b"ok") == "ok"


async def test_script_errors_keep_the_connection(lane: Lane) -> None:
    from redis.exceptions import ResponseError

    with pytest.raises(ResponseError, match="boom"):
        await lane.call(b"EVAL", "return redis.error_reply('boom')", 0)
    assert await lane.call(b"EVAL", _ECHO, 0, b"next") == "next"
    assert len(lane._all) == 1  # the same connection served both


async def test_stalled_connections_hold_their_turns(lane: Lane, redis_server: RedisServer) -> None:
    await apart(lane, 2)  # two connections open
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        results = await apart(lane, 3)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert sum(isinstance(r, RedisTimeoutError) for r in results) == 2
    assert sum(isinstance(r, RedisConnectionError) and "No connection available" in str(r)
               for r in results) == 1
    assert await lane.call(b"EVAL", _ECHO, 0, b"ok") == "ok"


async def test_arguments_go_as_redis_py_would_send_them(lane: Lane) -> None:
    from redis.exceptions import DataError

    echo_all = "return ARGV"
    got = await lane.call(b"EVAL", echo_all, 0, "é", 3, 0.1, 1e-7, b"raw")
    assert got == ["é", "3", "0.1", "1e-07", "raw"]
    assert pack((b"X", "a\udcffb")) == b"*2\r\n$1\r\nX\r\n$3\r\na\xffb\r\n"
    with pytest.raises(DataError):
        await lane.call(b"EVAL", echo_all, 0, None)
    assert await lane.call(b"EVAL", _ECHO, 0, b"still") == "still"


async def test_calls_of_one_loop_pass_share_a_write_and_get_their_own_replies(
        lane: Lane) -> None:
    conn_writes = 0
    results = await asyncio.gather(*(lane.call(b"EVAL", _ECHO, 0, f"n{i}".encode())
                                     for i in range(200)))
    assert results == [f"n{i}" for i in range(200)]
    assert len(lane._all) == 1  # one batch, one connection
    for conn in lane._all:
        real = conn.send_packed_command

        async def counted(*a: object, _real: object = real, **kw: object) -> object:
            nonlocal conn_writes
            conn_writes += 1
            return await _real(*a, **kw)  # type: ignore[operator]
        conn.send_packed_command = counted  # type: ignore[method-assign]
    from redis.exceptions import ResponseError

    mixed = await asyncio.gather(
        lane.call(b"EVAL", _ECHO, 0, b"a"),
        lane.call(b"EVAL", "return redis.error_reply('no')", 0),
        lane.call(b"EVAL", _ECHO, 0, b"c"), return_exceptions=True)
    assert mixed[0] == "a" and isinstance(mixed[1], ResponseError) and mixed[2] == "c"
    assert conn_writes == 1


async def test_the_first_call_after_a_redis_restart_succeeds(
        lane: Lane, redis_server: RedisServer) -> None:
    assert await lane.call(b"EVAL", _ECHO, 0, b"before") == "before"  # a pooled connection
    redis_server.stop()
    redis_server.start()
    # the pooled connection saw Redis close it: the call takes a new one instead of failing
    for _ in range(50):  # a few passes of the loop for the FIN to be read (no sleep needed)
        await asyncio.sleep(0)
    assert await lane.call(b"EVAL", _ECHO, 0, b"after") == "after"
