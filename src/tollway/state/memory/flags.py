"""Kill and pause switches in process memory. The guards read them on every admission
(`killed`, `paused`: plain sets, a membership test on the hot path), so they live in one
place that both facets share."""

from __future__ import annotations

from tollway.state.base import Flags


class MemoryFlags(Flags):
    def __init__(self) -> None:
        self.killed: set[str] = set()  # sessions
        self.paused: set[str] = set()  # agents

    async def set(self, kind: str, name: str, on: bool) -> None:
        target = self.killed if kind == "session" else self.paused
        if on:
            target.add(name)
        else:
            target.discard(name)

    async def all(self) -> dict[str, list[str]]:
        return {"session": sorted(self.killed), "agent": sorted(self.paused)}
