"""Lua scripts run by digest, and by text on the node that does not know them yet.

redis-py's `register_script` answers NOSCRIPT with SCRIPT LOAD, which a cluster client
sends to every primary: one unreachable shard that holds none of the gateway's keys would
then fail the script, and the load is one more round trip. Here NOSCRIPT is answered with
EVAL, which runs the script on the node that owns its keys and caches it there, so a
primary promoted in a failover (script caches are not replicated) learns each script on
its first call, in that one call.

Queued in a pipeline (`client=pipe`, as redis-py's scripts take it), a script cannot
recover from NOSCRIPT command by command. A Redis pipeline loads its scripts before it runs
(SCRIPT EXISTS, SCRIPT LOAD: the script is registered with it, as redis-py does); a
cluster pipeline cannot (SCRIPT LOAD is refused in it and would go to every primary), so
there the script is queued as EVAL with its text: more bytes, but it runs on a node that
has never seen it, and the node caches it under the same digest.

Used by the state (async) and the audit sink (sync).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

from tollway.state.redis.lane import Lane


class Script:
    """`await script(keys=[...], args=[...])` on a `redis.asyncio` Redis or RedisCluster
    (through `lane` when given: a single Redis's lean path); with `client=` a pipeline of
    either, it queues the call (and returns the pipeline)."""

    def __init__(self, client: Any, text: str, lane: Lane | None = None) -> None:
        self._client = client
        self._lane = lane
        self.script = text  # the name a Redis pipeline's load_scripts() reads
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self._sha = self.sha.encode()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (),
                       client: Any = None) -> Any:
        if isinstance(client, ClusterPipeline):
            return client.eval(self.script, len(keys), *keys, *args)
        if isinstance(client, Pipeline):
            client.scripts.add(self)
            return client.evalsha(self.sha, len(keys), *keys, *args)
        if client is None and self._lane is not None:
            lane = self._lane
            try:
                return await lane.call(b"EVALSHA", self._sha, len(keys), *keys, *args)
            except NoScriptError:
                return await lane.call(b"EVAL", self.script, len(keys), *keys, *args)
        target = self._client if client is None else client
        # As bytes: redis-py then packs each argument without its type checks and str
        # encoding (a state call carries ~75 of them: 42.6 -> 28 us to pack).
        packed = [_bytes(v) for v in (*keys, *args)]
        try:
            return await target.evalsha(self.sha, len(keys), *packed)
        except NoScriptError:
            return await target.eval(self.script, len(keys), *packed)


def _bytes(v: Any) -> Any:
    t = type(v)
    if t is str:
        return v.encode("utf-8", "surrogateescape")
    if t is int or t is float:
        return repr(v).encode()
    return v  # bytes, or what redis-py itself must refuse (a bool, None)


class SyncScript:
    """The same on a synchronous Redis or RedisCluster (no pipelines)."""

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self.script = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._client.eval(self.script, len(keys), *keys, *args)
