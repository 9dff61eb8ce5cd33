"""In-process state: the default, for one process. Bounded so it cannot grow without end.

One object per facet (guards, ledger, breakers, flags, cache, tools, keys), each owning its data.
Where one facet acts on another's data it holds a reference to that facet: the guards read
the flags, and the ledger settles the guards' reservations and the breakers' outcomes.
"""

from __future__ import annotations

from tollway.state.base import State
from tollway.state.memory.breakers import MemoryBreakers
from tollway.state.memory.cache import MemoryCache
from tollway.state.memory.flags import MemoryFlags
from tollway.state.memory.guards import MemoryGuards
from tollway.state.memory.keys import MemoryKeys
from tollway.state.memory.ledger import MemoryLedger
from tollway.state.memory.lineage import MemoryLineage
from tollway.state.memory.tools import MemoryToolState

__all__ = ["MemoryState"]


class MemoryState(State):
    backend = "memory"

    def __init__(self, session_steps: int = 500, max_sessions: int = 20_000,
                 retention_hours: int = 24 * 35, cache_entries: int = 10_000) -> None:
        self.flags: MemoryFlags = MemoryFlags()
        self.lineage = MemoryLineage()
        self.guards: MemoryGuards = MemoryGuards(self.flags, self.lineage, max_sessions)
        self.breakers: MemoryBreakers = MemoryBreakers()
        self.ledger: MemoryLedger = MemoryLedger(self.guards, self.breakers, self.lineage,
                                                 session_steps, max_sessions, retention_hours)
        self.cache: MemoryCache = MemoryCache(cache_entries)
        self.tools: MemoryToolState = MemoryToolState()
        self.keys: MemoryKeys = MemoryKeys()
