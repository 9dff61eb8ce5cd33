"""Kill and pause switches in process memory. The guards read them on every admission
(`is_killed`, `is_paused`), so they live in one place that both facets share."""

from __future__ import annotations

from tollway.state.base import Flags


class MemoryFlags(Flags):
    def __init__(self) -> None:
        self._killed: set[str] = set()
        self._paused: set[str] = set()

    def is_killed(self, session: str) -> bool:
        return session in self._killed

    def is_paused(self, agent: str) -> bool:
        return agent in self._paused

    async def set(self, kind: str, name: str, on: bool) -> None:
        target = self._killed if kind == "session" else self._paused
        if on:
            target.add(name)
        else:
            target.discard(name)

    async def all(self) -> dict[str, list[str]]:
        return {"session": sorted(self._killed), "agent": sorted(self._paused)}
