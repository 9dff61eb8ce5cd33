"""Tool-call repeats and approvals in process memory (the semantics are in
tollway.state.toolstate). Repeat counters are bounded by `max_entries`, least recently
noted dropped first; approvals are pruned an hour after their deadline or decision."""

from __future__ import annotations

import time
from collections import OrderedDict

from tollway.state.toolstate import APPROVED, KEEP_DECIDED_S, PENDING, REJECTED, Approval, ToolState


def _decide(a: Approval, approve: bool, by: str, reason: str | None) -> bool:
    if a.status != PENDING or time.time() >= a.expires:
        return False
    a.status = APPROVED if approve else REJECTED
    a.decided_by, a.reason, a.decided_at = by, reason, time.time()
    return True


class MemoryToolState(ToolState):
    def __init__(self, max_entries: int = 100_000) -> None:
        self._repeats: OrderedDict[tuple[str, str], tuple[str, int, float]] = OrderedDict()
        self._approvals: dict[str, Approval] = {}
        self._max = max_entries

    async def repeats(self, session: str, call: str) -> tuple[str | None, int]:
        found = self._repeats.get((session, call))
        if found is None or found[2] <= time.time():
            return None, 0
        return found[0], found[1]

    async def note_result(self, session: str, call: str, result: str, window_s: float) -> int:
        last, n = await self.repeats(session, call)
        n = n + 1 if last == result else 1
        self._repeats[(session, call)] = (result, n, time.time() + window_s)
        self._repeats.move_to_end((session, call))
        while len(self._repeats) > self._max:
            self._repeats.popitem(last=False)
        return n

    async def approval_put(self, a: Approval) -> None:
        self._prune()
        self._approvals[a.id] = a

    async def approval_get(self, approval_id: str) -> Approval | None:
        return self._approvals.get(approval_id)

    async def approvals(self) -> list[Approval]:
        self._prune()
        return sorted(self._approvals.values(), key=lambda a: a.created)

    async def approval_decide(self, approval_id: str, approve: bool, by: str,
                              reason: str | None) -> Approval | None:
        a = self._approvals.get(approval_id)
        if a is not None:
            _decide(a, approve, by, reason)
        return a

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_DECIDED_S
        for k in [k for k, a in self._approvals.items()
                  if max(a.expires, a.decided_at or 0) < cutoff]:
            del self._approvals[k]
