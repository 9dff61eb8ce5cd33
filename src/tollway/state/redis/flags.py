"""Kill and pause switches on Redis: ``ks:s:<session>`` and ``ks:a:<agent>`` (read by
admit.lua on every admission), and the sets ``ks:sessions`` and ``ks:agents`` that list
them for `all()`. Both are written in one transaction."""

from __future__ import annotations

from typing import Any

from tollway.state.base import Flags
from tollway.state.redis.link import RedisLink


class RedisFlags(Flags):
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    async def set(self, kind: str, name: str, on: bool) -> None:
        flag, members = (("s", "sessions") if kind == "session" else ("a", "agents"))
        k = self._link.key

        async def run() -> None:
            async with self._link.redis.pipeline(transaction=True) as pipe:
                if on:
                    pipe.set(k("ks", flag, name), 1)
                    pipe.sadd(k("ks", members), name)
                else:
                    pipe.delete(k("ks", flag, name))
                    pipe.srem(k("ks", members), name)
                await pipe.execute()

        await self._link.call("flag", run)

    async def all(self) -> dict[str, list[str]]:
        k = self._link.key

        async def run() -> list[Any]:
            async with self._link.redis.pipeline(transaction=False) as pipe:
                pipe.smembers(k("ks", "sessions"))
                pipe.smembers(k("ks", "agents"))
                return await pipe.execute()

        killed, paused = await self._link.call("flag", run)
        return {"session": sorted(killed), "agent": sorted(paused)}
