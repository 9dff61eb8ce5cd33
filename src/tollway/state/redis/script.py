"""Lua scripts run by digest, and by text on the node that does not know them yet.

redis-py's `register_script` answers NOSCRIPT with SCRIPT LOAD, which a cluster client
sends to every primary: one unreachable shard that holds none of the gateway's keys would
then fail the script, and the load is one more round trip. Here NOSCRIPT is answered with
EVAL, which runs the script on the node that owns its keys and caches it there, so a
primary promoted in a failover (script caches are not replicated) learns each script on
its first call, in that one call. Used by the state (async) and the audit sink (sync).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


class Script:
    """`await script(keys=[...], args=[...])` on a `redis.asyncio` Redis or RedisCluster."""

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self._client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self.text, len(keys), *keys, *args)


class SyncScript:
    """The same on a synchronous Redis or RedisCluster."""

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._client.eval(self.text, len(keys), *keys, *args)
